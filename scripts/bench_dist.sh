#!/usr/bin/env bash
# Data-parallel throughput on this machine: the same from-scratch config
# trained by one process with 2 threads and by `rgpt launch --nproc 2` (two
# ranks of 1 thread, Gloo over 127.0.0.1, DDP and ZeRO-1), ROUNDS times each
# in turn. Prints the median samples/s over steps 11-END of each run, the
# median of those over the rounds, and the ranks' median seconds per step
# spent on gradients across ranks (`comm_s` in metrics.jsonl).
#
#   scripts/bench_dist.sh [ROUNDS=3] [STEPS=100]
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
rounds=${1:-3}
steps=${2:-100}
scripts/setup.sh
cargo build --release -q -p rgpt-cli
rgpt=$root/target/release/rgpt
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$rgpt" data synth --out "$work/world" --images 64 --image-size 64 >/dev/null
config() { # NAME MICRO_BATCH DISTRIBUTED
  cat >"$work/$1.yaml" <<YAML
model: {tiny: {image_size: 64}}
data:
  files: [{path: world/synth-shape.jsonl}, {path: world/synth-rec.jsonl}, {path: world/synth-caption.jsonl}]
  image_root: world
stage: finetune
lr: 0.001
global_batch: 8
micro_batch: $2
steps: $steps
checkpoint_every: 100000
loader_workers: 1
seed: 0
device: cpu
output_dir: run-$1
$3
YAML
}
config one 2 ""
config ddp 2 "distributed: {backend: gloo}"
config zero 2 "distributed: {backend: gloo, zero: 1}"
summary() { # RUN -> "samples/s comm_s"
  .venv/bin/python - "$1/metrics.jsonl" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"loss"' in l][10:]
comm = [r["comm_s"] for r in rows if "comm_s" in r]
print(f'{statistics.median(r["samples_per_s"] for r in rows):.1f}',
      f'{statistics.median(comm) * 1000:.1f}' if comm else '-')
PY
}
declare -A speed comm
for round in $(seq "$rounds"); do
  for name in one ddp zero; do
    rm -rf "$work/run-$name"
    if [ "$name" = one ]; then
      OMP_NUM_THREADS=2 "$rgpt" train --config "$work/$name.yaml" >/dev/null 2>&1
    else
      "$rgpt" launch --nproc 2 --master-port $((29700 + round)) -- \
        train --config "$work/$name.yaml" >/dev/null 2>&1
    fi
    read -r s c < <(summary "$work/run-$name")
    speed[$name]+="$s "
    comm[$name]+="$c "
    echo "round $round $name: $s samples/s, comm $c ms/step" >&2
  done
done
median() { printf '%s\n' $1 | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); $(date -u +%F)"
for name in one ddp zero; do
  echo "$name: median samples/s $(median "${speed[$name]}") (rounds: ${speed[$name]}), comm ms/step: ${comm[$name]}"
done
