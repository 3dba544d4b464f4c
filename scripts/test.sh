#!/usr/bin/env bash
# The project's test command. The service tests start a real Redis server: install Debian's
# redis-server if it is missing (or point FHE_NN_REDIS_SERVER at one), then check the
# formatting, run every test, run clippy and build the documentation with warnings as
# errors, check that the library crates package, and run the README's snippet from a crate
# outside the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${FHE_NN_REDIS_SERVER:-}" ] && ! command -v redis-server >/dev/null 2>&1; then
    echo "scripts/test.sh: installing redis-server for the service tests" >&2
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq redis-server >/dev/null
fi
# Formatting first: it fails in a second, before any build.
cargo fmt --all -- --check
cargo test --release --workspace
# Lints, with warnings as errors (in release: the tests' build of the dependencies is reused).
cargo clippy --release --workspace --all-targets --quiet -- -D warnings
# The public documentation builds without a broken or private link.
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --quiet
scripts/package.sh
scripts/user_crate.sh
