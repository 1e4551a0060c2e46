#!/usr/bin/env bash
# Builds, on a development machine (no GPU needed), exactly what the GPU
# check runs, into gpu-bundle/ (ignored by git, under 60 MB): the release
# `rgpt` with the CUDA kernel, the CUDA mask-pool test, the collectives test
# (NCCL on the GPU machine), and scripts/gpu_check.sh. Carry that folder to
# the GPU machine and run `gpu-bundle/gpu_check.sh OUT_DIR` there
# (docs/gpu.md).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
scripts/setup.sh
bundle=gpu-bundle
rm -rf "$bundle"
mkdir -p "$bundle/bin"
cargo build --release -q -p rgpt-cli --features cuda
cp target/release/rgpt "$bundle/bin/rgpt"
# The test binaries, found from cargo's own report of what it built.
test_binary() { # PACKAGE TEST [FEATURES]
  cargo test --release -q -p "$1" --test "$2" ${3:+--features "$3"} --no-run \
    --message-format=json |
    python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == sys.argv[1]:
        print(m["executable"])' "$2"
}
cp "$(test_binary rgpt-region cuda_pool cuda)" "$bundle/bin/cuda_pool"
cp "$(test_binary rgpt-dist collectives)" "$bundle/bin/collectives"
strip "$bundle"/bin/*
cp scripts/gpu_check.sh "$bundle/"
size=$(du -sm "$bundle" | cut -f1)
echo "gpu_build: $bundle/ is ${size} MB: $(ls "$bundle/bin" | tr '\n' ' ')"
if [ "$size" -ge 60 ]; then
  echo "gpu_build: $bundle/ is over 60 MB" >&2
  exit 1
fi
