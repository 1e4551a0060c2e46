#!/usr/bin/env bash
# `rgpt serve` under load on this machine, in release mode: the 16-client
# load test (crates/rgpt-cli/tests/serve_load.rs) ROUNDS times. Each round
# measures generated tokens/s of one client sending the 32 requests one
# after another, of 16 clients against one-request-at-a-time serving
# (`--max-batch 1`), and of 16 clients against the continuous batch
# (`--max-batch 16`), and checks every answer against the one-client one.
# Prints each round and the medians.
#
#   scripts/bench_serve.sh [ROUNDS=5]
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
rounds=${1:-5}
scripts/setup.sh
cargo test --release -q -p rgpt-cli --test serve_load --no-run
lines=$(mktemp)
trap 'rm -f "$lines"' EXIT
for _ in $(seq "$rounds"); do
  cargo test --release -q -p rgpt-cli --test serve_load -- --nocapture 2>&1 |
    grep '^load:' | tee -a "$lines"
done
python3 - "$lines" <<'PY'
import re, statistics, sys
rows = [list(map(float, re.findall(r"(?:client|serving|batching) ([0-9.]+)", line)))
        for line in open(sys.argv[1])]
one, unbatched, batched = (statistics.median(r[i] for r in rows) for i in range(3))
print(f"median of {len(rows)} rounds, tokens/s: one client {one:.0f}, "
      f"one-at-a-time serving {unbatched:.0f}, continuous batching {batched:.0f} "
      f"({batched / one:.2f}x one client, {batched / unbatched:.2f}x one-at-a-time)")
PY
