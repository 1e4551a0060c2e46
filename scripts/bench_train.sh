#!/usr/bin/env bash
# Training throughput of the demo's tiny LLaMA: the rgpt step (criterion,
# `cargo bench -p rgpt-train --bench train_step`), then the same step in
# PyTorch eager with transformers (scripts/bench_train_step.py, `sdpa` and
# `eager` attention), each on the same number of libtorch intra-op threads;
# then a comparison of the median steps.
#
#   scripts/bench_train.sh [THREADS] [ROUNDS]     # defaults: 2 threads, 1 round
#
# On a shared machine other jobs' load moves every number; ROUNDS > 1 runs
# the pair again (rgpt, PyTorch, rgpt, PyTorch, ...) and reports each
# round's ratio, so a ratio only ever compares runs minutes apart.
#
# Works on a fresh checkout: `scripts/setup.sh --bench` installs torch and the
# pinned transformers into .venv.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
threads=${1:-2}
rounds=${2:-1}
scripts/setup.sh --bench

out=${TMPDIR:-/tmp}/rgpt-bench-train
rm -rf "$out" && mkdir -p "$out"
cargo bench -p rgpt-train --bench train_step --no-run --quiet
for round in $(seq 1 "$rounds"); do
  echo "== round $round: rgpt (cargo bench -p rgpt-train --bench train_step, $threads threads)" >&2
  RGPT_BENCH_THREADS=$threads cargo bench -p rgpt-train --bench train_step --quiet -- train_step/step \
    | tee "$out/rgpt-$round.log"
  # Criterion's samples: the time and step count of each.
  cp target/criterion/train_step/step/new/sample.json "$out/rgpt-$round.sample.json"
  echo "== round $round: PyTorch eager (scripts/bench_train_step.py, $threads threads)" >&2
  .venv/bin/python scripts/bench_train_step.py --threads "$threads" | tee "$out/pytorch-$round.jsonl"
done

.venv/bin/python - "$out" "$rounds" <<'PY'
import json, pathlib, platform, statistics, subprocess, sys

BATCH, SEQ = 32, 96
out, rounds = pathlib.Path(sys.argv[1]), int(sys.argv[2])
rustc = subprocess.run(["rustc", "--version"], capture_output=True, text=True).stdout.strip()
header = ("round", "peer", "median s", "min s", "samples/s", "tokens/s",
          "fwd+loss s", "bwd s", "clip+adamw s")
rows, ratios = [], []
for r in range(1, rounds + 1):
    log = (out / f"rgpt-{r}.log").read_text().splitlines()
    phases = next(json.loads(l) for l in log if l.startswith("{") and '"peer"' in l)
    sample = json.loads((out / f"rgpt-{r}.sample.json").read_text())
    steps = [t / n / 1e9 for t, n in zip(sample["times"], sample["iters"])]
    rgpt = dict(phases, median_s=statistics.median(steps), min_s=min(steps))
    peers = [rgpt] + [json.loads(l) for l in (out / f"pytorch-{r}.jsonl").read_text().splitlines()]
    for p in peers:
        m = p["median_s"]
        rows.append(f"| {r} | {p['peer']} | {m:.3f} | {p['min_s']:.3f} | {BATCH / m:.2f} | "
                    f"{BATCH * SEQ / m:.0f} | {p['forward_loss_s']:.3f} | {p['backward_s']:.3f} | "
                    f"{p['clip_adamw_s']:.3f} |")
    for p in peers[1:]:
        ratios.append(f"round {r}: rgpt / {p['peer']} throughput "
                      f"{p['median_s'] / rgpt['median_s']:.2f}x (medians), "
                      f"{p['min_s'] / rgpt['min_s']:.2f}x (fastest steps)")
    versions = peers[1]
print(f"\n{platform.machine()}, {versions['threads']} threads; torch {versions['torch']}, "
      f"transformers {versions['transformers']}, {rustc}")
print("step: 32 x 96 tokens (labels on the last 16), forward + loss + backward + clip + AdamW\n")
print("| " + " | ".join(header) + " |")
print("|" + " --- |" * len(header))
print("\n".join(rows))
print()
print("\n".join(ratios))
PY
