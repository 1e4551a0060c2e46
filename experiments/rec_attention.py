#!/usr/bin/env python3
"""Where does the demo's decoder look when it answers REC in words?

    .venv/bin/python experiments/rec_attention.py MODEL_DIR "EXPRESSION" "NAME" "NAME" [...]

MODEL_DIR is an RGPT checkpoint written by `rgpt demo` (`<stage>/model`; its
decoder and tokenizer are read). The question is the world's REC question
in the paper's phrasing, "From the provided masks denoted by <region>, ...
which one fits "EXPRESSION"? Answer the question using the template Region
[x].", each `<region>` one embedding: the mean of the word embeddings of its
NAME ("red circle") plus the embedding of its number, as the demo's text
stages give it (`world.text_regions: colour_shape`, `model.number_regions`).
The prompt runs up to the answer's `Region [`, so the next token is the
region's number.

It prints the probability of each region's number, and per layer and head
how much attention the answer position pays to each region, and what the
expression's tokens attend to in the first layer. The numbers in
docs/experiments/demo-journal.md (thirteenth round) are

    .venv/bin/python experiments/rec_attention.py runs/final13/rec-lookup/model \\
        "the red circle" "blue circle" "red circle" "green square"

Needs transformers in .venv (`scripts/bench_train.sh` installs it).
"""
import json
import sys

import torch
from safetensors.torch import load_file
from tokenizers import Tokenizer
from transformers import LlamaConfig, LlamaForCausalLM

if len(sys.argv) < 5:
    sys.exit(__doc__.split('\n\n')[1])
MODEL_DIR, EXPRESSION, NAMES = sys.argv[1], sys.argv[2], sys.argv[3:]
if len(NAMES) > 4:
    sys.exit('give 2 to 4 region names: the demo numbers at most 4 regions')

text_config = json.load(open(f'{MODEL_DIR}/config.json'))['text_config']
llm = LlamaForCausalLM(LlamaConfig(**{k: v for k, v in text_config.items() if k != 'model_type'},
                                   attn_implementation='eager'))
prefix = 'language_model.'
weights = load_file(f'{MODEL_DIR}/model.safetensors')
llm.load_state_dict({k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)},
                    strict=False)
llm.tie_weights()
llm.eval()
tok = Tokenizer.from_file(f'{MODEL_DIR}/tokenizer.json')
embed = llm.get_input_embeddings()
REGION = tok.token_to_id('<region>')
NUMBERS = [tok.token_to_id(str(k)) for k in range(1, 5)]

regions = ['<region>'] * len(NAMES)
listed = ', '.join(regions[:-1]) + ' and ' + regions[-1]
text = (f'USER: From the provided masks denoted by {listed}, which one fits "{EXPRESSION}"? '
        'Answer the question using the template Region [x]. ASSISTANT: Region [')
enc = tok.encode(text)
ids = torch.tensor(enc.ids)
positions = (ids == REGION).nonzero().flatten().tolist()
with torch.no_grad():
    x = embed(ids).clone()
    for k, p in enumerate(positions):
        name = torch.tensor(tok.encode(NAMES[k], add_special_tokens=False).ids)
        x[p] = embed(name).mean(0) + embed(torch.tensor(NUMBERS[k]))
    out = llm(inputs_embeds=x[None], output_attentions=True)

probs = out.logits[0, -1].softmax(-1)
print(f'"{EXPRESSION}" among {NAMES}: P(number) =',
      ' '.join(f'[{k + 1}] {probs[NUMBERS[k]]:.3f}' for k in range(len(NAMES))))
for layer, attention in enumerate(out.attentions):
    for head in range(attention.shape[1]):
        row = attention[0, head, -1]
        top = row.topk(3)
        print(f'layer {layer} head {head}: answer -> regions',
              ' '.join(f'{row[p]:.2f}' for p in positions),
              '| most:', ', '.join(f'{enc.tokens[i]!r}@{i} {v:.2f}'
                                   for v, i in zip(top.values.tolist(), top.indices.tolist())))
expression_words = set(tok.encode(EXPRESSION, add_special_tokens=False).tokens) - {'▁the'}
for i, token in enumerate(enc.tokens):
    if token in expression_words and i > max(positions):
        row = out.attentions[0][0, :, i]
        print(f'layer 0: {token!r}@{i} -> regions',
              ' / '.join(' '.join(f'{row[h, p]:.2f}' for p in positions)
                         for h in range(row.shape[0])), '(per head)')
