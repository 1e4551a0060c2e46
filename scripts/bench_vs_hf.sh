#!/usr/bin/env bash
# `rgpt generate` beside HF transformers on the same checkpoints, in one run
# (scripts/bench_vs_hf.py says what is timed). Works on a fresh checkout:
# `scripts/setup.sh --bench` installs torch and the pinned transformers.
#
#   scripts/bench_vs_hf.sh [--threads N] [--runs R] [--new-tokens T]
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
scripts/setup.sh --bench
exec .venv/bin/python scripts/bench_vs_hf.py "$@"
