#!/usr/bin/env bash
# The main job, at this stage: `rgpt generate` on a committed fixture model
# (tiny random weights in the Hugging Face layout Vicuna ships: sharded
# pytorch_model-*.bin and a SentencePiece tokenizer.model). Its text is
# gibberish by construction; the demo shows loading, templating, streaming
# and the JSON report. Pass another model directory as $1 to use it instead.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
scripts/setup.sh
cargo build --release -q -p rgpt-cli
model=${1:-tests/fixtures/llama-sharded-bin}

echo "== rgpt generate (vicuna_v1 template, greedy, streamed) =="
target/release/rgpt generate --model "$model" --prompt "What is in the region?" --max-new-tokens 24 --device auto
echo
echo "== rgpt generate --json (sampled, seed 0, top-3 log-probs) =="
target/release/rgpt generate --model "$model" --prompt "Describe the image." --max-new-tokens 8 \
  --temperature 0.8 --top-p 0.9 --seed 0 --top-logprobs 3 --json
echo
echo "== rgpt generate with an image and regions (tiny RGPT fixture: CLIP + refiner + mask pooling) =="
rgpt_model=tests/fixtures/rgpt-tiny
target/release/rgpt generate --model "$rgpt_model" --image "$rgpt_model/image.png" \
  --region box:8,5,24,20 --prompt "What is <region>?" --max-new-tokens 16
target/release/rgpt generate --model "$rgpt_model" --image "$rgpt_model/image.png" \
  --region box:8,5,24,20 --region poly:30,2,39,2,39,28,30,28 \
  --prompt "How does <region> differ from <region>?" --max-new-tokens 16
