#!/usr/bin/env bash
# `make build`: libtorch (scripts/bootstrap.sh), then the release binary target/release/imagen.
# On a fresh machine the bootstrap downloads about 3 GB of wheels, so the crates that do not need
# libtorch (parquet, image codecs, tokenizers, ...) compile meanwhile (BENCHMARKS.md, "Build"): the same `cargo build` as below with --keep-going, which
# builds everything it can and stops short of torch-sys (no libtorch yet). Same command, same
# features, so the final build reuses all of it.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
cargo=${CARGO:-cargo}
build=("$cargo" build --release --bin imagen)
early=""
if ! scripts/bootstrap.sh --check; then
  mkdir -p target
  echo "build: compiling the crates that do not need libtorch while it installs" \
    "(log: target/early-build.log)" >&2
  "${build[@]}" --keep-going >target/early-build.log 2>&1 &
  early=$!
fi
if ! scripts/bootstrap.sh; then
  [[ -n "$early" ]] && kill "$early" 2>/dev/null
  exit 1
fi
# Its failure (torch-sys, before libtorch was there) is expected; the build below says the rest.
[[ -n "$early" ]] && { wait "$early" || true; }
"${build[@]}"
echo "built target/release/imagen"
