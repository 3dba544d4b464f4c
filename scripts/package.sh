#!/usr/bin/env bash
# Packages every library crate of the workspace as `cargo publish` would, and builds each
# package from its own tarball (the workspace's crates stand in for crates.io versions).
set -euo pipefail
cd "$(dirname "$0")/.."
# The packages are built in a target directory of their own. Cargo takes registry crates
# as immutable: it unpacks the workspace's crates from its temporary local registry into
# $CARGO_HOME/registry/src/-<hash>/ once, and reuses their build artifacts while the version
# is unchanged. Remove both, or a change would be verified against stale builds.
target="target/package-verify"
cargo_home="${CARGO_HOME:-$HOME/.cargo}"
rm -rf "$cargo_home"/registry/src/-*/fhe-nn-* "$cargo_home"/registry/cache/-*/fhe-nn-*
rm -rf "$target"/debug/deps/*fhe_nn* "$target"/debug/.fingerprint/fhe-nn-* "$target"/debug/build/fhe-nn-*
CARGO_TARGET_DIR="$target" cargo package --workspace --exclude fhe-nn-suite --allow-dirty --quiet
echo "package.sh: fhe-nn-arch, fhe-nn-macros, fhe-nn, fhe-nn-client, fhe-nn-server package and build"
