#!/usr/bin/env bash
# Evaluation throughput: 1,000 synthetic regions classified by a model of the
# demo's size (a ~4M-parameter RGPT: CLIP ViT 4x128 on 64 px images with 8 px
# patches, deconv refiner, LLaMA 4x256), batched, on this machine's CPU
# threads. Each region gets a generated answer (4 tokens) and a probability for
# each of the 6 shape names (one prefill + one batched candidate forward).
# The weights are random (transformers' init): only the time means something.
# As the demo's model will, it reads a BPE tokenizer trained on the world's
# own text (vocabulary 2,000), so prompts are as long as the demo's.
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
import json, pathlib, sys
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
    num_attention_heads=4, num_key_value_heads=4, vocab_size=2000, max_position_embeddings=1024,
    bos_token_id=1, eos_token_id=2)).save_pretrained(out / "llama")
PY
rgpt=target/release/rgpt
$rgpt data synth --out "$work/world" --images 334 --seed 0 >/dev/null
.venv/bin/python - "$work" <<'PY'
import json, pathlib, sys
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, decoders, processors, trainers
out = pathlib.Path(sys.argv[1])
texts = ["A chat between a curious user and an artificial intelligence assistant. The assistant gives "
         "helpful, detailed, and polite answers to the user's questions. USER: ASSISTANT:"]
for f in (out / "world").glob("synth-*.jsonl"):
    for line in open(f):
        texts += [t["value"] for t in json.loads(line)["conversations"]]
tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never", split=False)
tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)])
trainer = trainers.BpeTrainer(vocab_size=2000, special_tokens=["<unk>", "<s>", "</s>"],
                              initial_alphabet=[f"<0x{b:02X}>" for b in range(256)])
tok.train_from_iterator(texts, trainer)
tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
tok.save(str(out / "llama" / "tokenizer.json"))
PY
$rgpt compose --vision "$work/clip" --llm "$work/llama" --out "$work/model" >/dev/null
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
