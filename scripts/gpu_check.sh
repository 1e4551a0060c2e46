#!/usr/bin/env bash
# The GPU check, on the GPU machine, from the folder scripts/gpu_build.sh
# made (it has no Rust toolchain and no network; it has the NVIDIA driver
# and torch 2.11.0+cu130, the libtorch the binaries were built against).
#
#   gpu-bundle/gpu_check.sh OUT_DIR
#
# Points the loader at this machine's torch and NVIDIA libraries, then runs:
# the CUDA mask-pool kernel against the CPU (every dtype, many shapes,
# poisoned outputs, gradients), rgpt-dist's collectives (NCCL over every GPU
# present), and `rgpt bench` mask-pool, decode, prefill and e2e. Full logs go to
# OUT_DIR; a short table is printed last. Exits non-zero if a check fails.
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
out=${1:?usage: gpu_check.sh OUT_DIR}
mkdir -p "$out"
torch=$(python3 -c 'import os, torch; print(os.path.dirname(torch.__file__))')
site=$(dirname "$torch")
libs="$torch/lib"
for d in "$site"/nvidia/*/lib; do libs="$libs:$d"; done
export LD_LIBRARY_PATH="$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
[ -d "$site/nvidia/cu13/include" ] && export RGPT_CUDA_INCLUDE="$site/nvidia/cu13/include"
gpus=$(nvidia-smi -L | wc -l)
nvidia-smi >"$out/nvidia-smi.txt" 2>&1
status=0
rows=()
check() { # NAME LOG COMMAND...
  local name=$1 log=$2
  shift 2
  local started=$SECONDS
  if "$@" >"$out/$log" 2>&1; then
    rows+=("$(printf '%-44s ok      %4ss  %s' "$name" $((SECONDS - started)) "$log")")
  else
    rows+=("$(printf '%-44s FAILED  %4ss  %s' "$name" $((SECONDS - started)) "$log")")
    status=1
  fi
}
check "mask-pool kernel against the CPU" cuda_pool.log "$here/bin/cuda_pool" --test-threads 1
check "collectives over NCCL on $gpus GPUs" collectives.log env RGPT_NCCL_GPUS="$gpus" "$here/bin/collectives"
bench() { "$here/bin/rgpt" bench "$@" --device cuda --json; }
check "bench mask-pool f32" bench-mask-pool-f32.json bench mask-pool --dtype f32
check "bench mask-pool bf16" bench-mask-pool-bf16.json bench mask-pool --dtype bf16
check "bench decode llama-7b bf16" bench-decode-7b.json bench decode --random-init llama-7b --dtype bf16
check "bench prefill llama-7b bf16" bench-prefill-7b.json bench prefill --random-init llama-7b --dtype bf16 --prompt-tokens 512
check "bench e2e rgpt-7b bf16" bench-e2e-7b.json bench e2e --random-init rgpt-7b --dtype bf16
echo
echo "GPU check on $(nvidia-smi --query-gpu=name --format=csv,noheader | head -1) x $gpus, logs in $out"
printf '%s\n' "${rows[@]}"
for f in "$out"/bench-*.json; do
  [ -s "$f" ] && echo "$(basename "$f"): $(tail -1 "$f")"
done
exit $status
