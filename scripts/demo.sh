#!/usr/bin/env bash
# The main job: `rgpt demo`. Renders a synthetic world of shapes, trains a
# tiny RGPT from nothing (vision tower pre-trained on the world, then the
# paper's two stages), scores it on held-out images and prints the table
# and a few dialogues; everything lands in runs/demo (results.json,
# samples.png, the model). About 13-14 minutes on 2 CPU cores, more or less by
# the machine (docs/demo.md); rerunning resumes. Extra arguments go to
# `rgpt demo` (e.g. --quick, --ablation).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
scripts/setup.sh
cargo build --release -q -p rgpt-cli
exec target/release/rgpt demo "$@"
