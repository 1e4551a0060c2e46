#!/usr/bin/env python3
"""Held-out accuracy of a demo model's decoder on the text form of a task.

    .venv/bin/python experiments/text_form_accuracy.py MODEL_DIR TEXT_TASK_FILE [SAMPLES]

MODEL_DIR is an RGPT checkpoint (`rgpt demo` writes one per stage, and
`--curve-every` refreshes `<stage>/model`); TEXT_TASK_FILE a text-form task
file (`text/synth-rec.jsonl` of a world written with `text: true`, e.g.
`rgpt data synth --config C --seed 1` with `text: true` in C for held-out
images). Only the decoder is read, into transformers' `LlamaForCausalLM`,
and each conversation is rendered in the Vicuna v1 template as `rgpt`
renders it (without the system prompt where the checkpoint's
`rgpt.conversation` says `vicuna_v1_no_system`). An answer is right when
greedy decoding reproduces it: every answer token, and the `</s>` after
it, is the argmax given the gold prefix.
Prints the accuracy over every answer and over first questions.
Needs transformers in .venv: `scripts/bench_train.sh` installs the pinned
version; the numbers in docs/experiments/demo-journal.md's fifth round used 5.24.0.
"""
import json, sys, torch
from safetensors.torch import load_file
from tokenizers import Tokenizer
from transformers import LlamaConfig, LlamaForCausalLM
model_dir, task_file = sys.argv[1], sys.argv[2]
n = int(sys.argv[3]) if len(sys.argv) > 3 else 300
torch.set_num_threads(1)
cfg = json.load(open(f'{model_dir}/config.json'))['text_config']
llm = LlamaForCausalLM(LlamaConfig(**{k: v for k, v in cfg.items() if k != 'model_type'}))
sd = {k[len('language_model.'):]: v for k, v in load_file(f'{model_dir}/model.safetensors').items() if k.startswith('language_model.')}
missing = llm.load_state_dict(sd, strict=False)
assert not [m for m in missing.missing_keys if 'lm_head' not in m], missing
llm.tie_weights(); llm.eval()
tok = Tokenizer.from_file(f'{model_dir}/tokenizer.json')
template = json.load(open(f'{model_dir}/config.json')).get('rgpt', {}).get('conversation', 'vicuna_v1')
if template not in ('vicuna_v1', 'vicuna_v1_no_system'):
    sys.exit(f"{model_dir}: conversation template `{template}` is not scored here")
SYS = "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, detailed, and polite answers to the user's questions. " if template == 'vicuna_v1' else ""
ok = total = 0; first_ok = first_total = 0
for line in list(open(task_file))[:n]:
    sample = json.loads(line)
    if sample.get('regions'):
        sys.exit(f"{task_file}: its regions are given by name (`text_regions: named`); "
                 "this scores the text form with names in words")
    conv = sample['conversations']
    text = SYS; spans = []
    for t in conv:
        if t['from'] == 'human':
            text += 'USER: ' + t['value'] + ' '
        else:
            text += 'ASSISTANT: '
            s = len(text); text += t['value'] + '</s>'; spans.append((s, len(text)))
    enc = tok.encode(text)
    ids = torch.tensor([enc.ids])
    with torch.no_grad():
        logits = llm(ids).logits[0]
    pred = logits.argmax(-1)
    for q, (s, e) in enumerate(spans):
        toks = [i for i, (a, b) in enumerate(enc.offsets) if a >= s and b <= e and b > a]
        right = all(pred[i - 1].item() == enc.ids[i] for i in toks)
        ok += right; total += 1
        if q == 0: first_ok += right; first_total += 1
print(f'{task_file}: {ok}/{total} = {ok/total:.3f}; first questions {first_ok/first_total:.3f}', flush=True)
