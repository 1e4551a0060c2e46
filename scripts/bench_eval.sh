#!/usr/bin/env bash
# Evaluation throughput: 1,000 synthetic regions classified by a model of the
# demo's size (a ~4M-parameter RGPT: CLIP ViT 4x128 on 64 px images with 8 px
# patches, deconv refiner, LLaMA 4x256), batched, on this machine's CPU
# threads. Each region gets a generated answer (4 tokens) and a probability for
# each of the 6 shape names (one prefill + one batched candidate forward).
# The weights are random (transformers' init): only the time means something.
#
#   scripts/bench_eval.sh [BATCH_SIZE]
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
scripts/setup.sh
batch=${1:-16}
work=${TMPDIR:-/tmp}/rgpt-bench-eval
rm -rf "$work" && mkdir -p "$work"
cargo build --release -p rgpt-cli --quiet
.venv/bin/python - "$work" <<'PY'
import json, pathlib, shutil, sys
import torch
from transformers import CLIPVisionConfig, CLIPVisionModel, LlamaConfig, LlamaForCausalLM
out = pathlib.Path(sys.argv[1])
torch.manual_seed(0)
CLIPVisionModel(CLIPVisionConfig(hidden_size=128, intermediate_size=512, num_hidden_layers=4,
    num_attention_heads=4, image_size=64, patch_size=8)).save_pretrained(out / "clip")
(out / "clip" / "preprocessor_config.json").write_text(json.dumps({
    "image_processor_type": "CLIPImageProcessor", "size": {"shortest_edge": 64},
    "crop_size": {"height": 64, "width": 64}, "image_aspect_ratio": "pad"}))
LlamaForCausalLM(LlamaConfig(hidden_size=256, intermediate_size=688, num_hidden_layers=4,
    num_attention_heads=4, num_key_value_heads=4, vocab_size=800, max_position_embeddings=1024,
    bos_token_id=1, eos_token_id=2)).save_pretrained(out / "llama")
for f in ("tokenizer.model", "tokenizer_config.json", "special_tokens_map.json"):
    src = pathlib.Path("tests/fixtures/sentencepiece") / f
    if src.exists():
        shutil.copy(src, out / "llama" / f)
PY
rgpt=target/release/rgpt
$rgpt compose --vision "$work/clip" --llm "$work/llama" --out "$work/model" >/dev/null
$rgpt data synth --out "$work/world" --images 334 --seed 0 >/dev/null
regions=$(wc -l < "$work/world/objects.jsonl")
regions=$(.venv/bin/python -c "import json,sys; print(sum(len(json.loads(l)['objects']) for l in open(sys.argv[1])))" "$work/world/objects.jsonl")
start=$(date +%s.%N)
$rgpt eval coco-cls --model "$work/model" --data "$work/world/synth-shape.jsonl" --out "$work/eval" \
    --device cpu --batch-size "$batch" --max-new-tokens 4 >/dev/null
end=$(date +%s.%N)
.venv/bin/python - "$start" "$end" "$regions" "$batch" "$work/eval/results.json" <<'PY'
import json, sys
start, end, regions, batch = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
results = json.load(open(sys.argv[5]))
secs = end - start
print(f"{regions} regions, batch {batch}: {secs:.1f} s ({regions / secs:.1f} regions/s), "
      f"unanswered {len(results['unanswered'])}")
PY
