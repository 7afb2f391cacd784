#!/usr/bin/env bash
# Builds titan-step fully static (glibc's static libc, no dynamic loader needed), the binary
# that init containers copy into step pods whose images may hold nothing else; prints its path.
# The Dockerfile builds it the same way.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
target=x86_64-unknown-linux-gnu
RUSTFLAGS="-C target-feature=+crt-static" cargo build --release -p titan-step --target "$target" \
  --manifest-path "$root/Cargo.toml" >&2
echo "${CARGO_TARGET_DIR:-$root/target}/$target/release/titan-step"
