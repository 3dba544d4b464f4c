#!/usr/bin/env bash
# The project's test command. The service tests start a real Redis server: install Debian's
# redis-server if it is missing (or point FHE_NN_REDIS_SERVER at one), then run every test,
# build the documentation with warnings as errors, check that the library crates package,
# and run the README's snippet from a crate outside the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${FHE_NN_REDIS_SERVER:-}" ] && ! command -v redis-server >/dev/null 2>&1; then
    echo "scripts/test.sh: installing redis-server for the service tests" >&2
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq redis-server >/dev/null
fi
cargo test --release --workspace
# The public documentation builds without a broken or private link.
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --quiet
scripts/package.sh
scripts/user_crate.sh
