#!/usr/bin/env bash
# Packages every library crate of the workspace as `cargo publish` would, and builds each
# package from its own tarball (the workspace's crates stand in for crates.io versions).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo package --workspace --exclude fhe-nn-suite --allow-dirty --quiet
echo "package.sh: fhe-nn-arch, fhe-nn-macros, fhe-nn, fhe-nn-client, fhe-nn-server package and build"
