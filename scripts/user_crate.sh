#!/usr/bin/env bash
# Builds a crate outside the workspace that depends only on `fhe-nn` (by path, as a user's
# crate would by version) and runs the README's "Running a network" snippet as written.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
dir="$(mktemp -d)"
trap 'rm -rf "$dir"' EXIT
mkdir -p "$dir/src"
cat > "$dir/Cargo.toml" <<TOML
[package]
name = "fhe-nn-user"
version = "0.1.0"
edition = "2021"
publish = false

[dependencies]
fhe-nn = { path = "$repo/fhe-nn" }

[workspace]
TOML
# Every `rust` block of README.md (not `rust,ignore`) is a program: declare → load → compile
# → predict, and declare → train → save → load → compile → predict.
mkdir -p "$dir/src/bin"
awk -v dir="$dir/src/bin" '
    /^```rust$/ { n += 1; inside = 1; next }
    inside && /^```$/ { inside = 0; next }
    inside { print > (dir "/readme_" n ".rs") }
' "$repo/README.md"
blocks=$(ls "$dir/src/bin" | wc -l)
test "$blocks" -ge 2 || { echo "user_crate.sh: expected 2 rust blocks in README.md, found $blocks" >&2; exit 1; }
echo 'fn main() {}' > "$dir/src/main.rs"
# The versions the repository is tested with.
cp "$repo/Cargo.lock" "$dir/Cargo.lock"
cd "$dir"
# The repository's target directory: tfhe is not built a second time.
for bin in "$dir"/src/bin/*.rs; do
    name=$(basename "$bin" .rs)
    CARGO_TARGET_DIR="$repo/target" cargo run --release --quiet --bin "$name" > "$dir/$name.out"
    grep -q "p_error\|Clear accuracy" "$dir/$name.out" || {
        echo "user_crate.sh: $name printed something unexpected:" >&2; cat "$dir/$name.out" >&2; exit 1; }
done
echo "user_crate.sh: the README's $blocks programs build and run in a crate that depends only on fhe-nn"
