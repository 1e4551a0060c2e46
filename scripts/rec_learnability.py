#!/usr/bin/env python3
"""How fast can a small decoder learn REC from scratch? A PyTorch toy.

    .venv/bin/python scripts/rec_learnability.py FORMAT STEPS [THREADS] [WIDTH] [LR] [BATCH]

FORMAT is `plain` (the paper's order: candidates, then the expression, no
labels), `before` (expression first, `Region [k] <region>`) or `after`
(expression first, `<region> as Region [k]`): the orders the synthetic
world writes with `rec_expression_first` and `candidate_labels`
(docs/demo.md). Defaults: 1 thread, width 256, lr 1e-3, batch 32.

It isolates the decoder's part of REC. A question has 2-4 candidates, each
an object of 6 shapes x 6 colours; 15% of questions match none (answer
`No .`). The expression names the shape, plus the colour when the shape is
not unique or for a miss. A region is one position whose input embedding is
`shape_embedding + colour_embedding`: a clean, learned stand-in for the
connector's output, so nothing about vision is at stake. The decoder is
`nn.TransformerEncoder` with a causal mask (4 pre-norm layers, 4 heads,
feed-forward 688, GELU, learned absolute positions), AdamW, REC only.

Every 100 steps it prints the loss of that step's batch and the accuracy on
400 fresh questions: the answer is right when its first token (`Region` or
`No`) and, for a match, the index token after `Region` are the argmax.
Seeds are fixed (python `random` 0, torch 0), so a rerun on torch 2.11.0
prints the same lines.
"""
import sys
import time

import random
import torch
import torch.nn as nn

torch.set_num_threads(int(sys.argv[3]) if len(sys.argv) > 3 else 1)
FMT = sys.argv[1]
STEPS = int(sys.argv[2])
D = int(sys.argv[4]) if len(sys.argv) > 4 else 256
LR = float(sys.argv[5]) if len(sys.argv) > 5 else 1e-3
BS = int(sys.argv[6]) if len(sys.argv) > 6 else 32
if FMT not in ("plain", "before", "after"):
    sys.exit(f"format `{FMT}`: use plain, before or after")
random.seed(0)
torch.manual_seed(0)
S, C = 6, 6
words = ['<pad>', '<bos>', 'which', 'is', 'the', '?', ':', 'as', 'Region', 'and', 'No', 'ans',
         '<reg>', '.'] + [f's{i}' for i in range(S)] + [f'c{i}' for i in range(C)] \
    + [f'[{k}' for k in range(1, 5)]
idx = {w: i for i, w in enumerate(words)}
V = len(words)


def sample():
    """Tokens, prompt length, the candidates' (shape, colour), the answer."""
    n = random.randint(2, 4)
    objs = []
    while len(objs) < n:
        o = (random.randrange(S), random.randrange(C))
        if o not in objs:
            objs.append(o)
    neg = random.random() < 0.15
    if neg:
        while True:
            q = (random.randrange(S), random.randrange(C))
            if q not in objs:
                break
        target = None
    else:
        t = random.randrange(n)
        q = objs[t]
        target = t + 1
    shapes = [o[0] for o in objs]
    unique = shapes.count(q[0]) <= 1 and not neg
    expr = ['the', f's{q[0]}'] if unique else ['the', f'c{q[1]}', f's{q[0]}']
    regs = []
    for k in range(n):
        if FMT == 'plain':
            item = ['<reg>']
        elif FMT == 'before':
            item = ['Region', f'[{k+1}', '<reg>']
        else:
            item = ['<reg>', 'as', 'Region', f'[{k+1}']
        if k:
            item = (['and'] if k == n - 1 else []) + item
        regs += item
    if FMT == 'plain':
        prompt = ['<bos>', 'which'] + regs + ['is'] + expr + ['?', 'ans']
    else:
        prompt = ['<bos>', 'which', 'is'] + expr + [':'] + regs + ['?', 'ans']
    answer = ['Region', f'[{target}', '.'] if target else ['No', '.']
    return prompt + answer, len(prompt), objs, target


class Decoder(nn.Module):
    def __init__(self, d=256, layers=4, heads=4, max_len=48):
        super().__init__()
        self.emb = nn.Embedding(V, d)
        self.pos = nn.Embedding(max_len, d)
        self.shape = nn.Embedding(S, d)
        self.col = nn.Embedding(C, d)
        layer = nn.TransformerEncoderLayer(d, heads, 688, 0.0, batch_first=True,
                                           norm_first=True, activation='gelu')
        self.tr = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.ln = nn.LayerNorm(d)
        self.head = nn.Linear(d, V)

    def forward(self, ids, reg_pos, reg_codes):
        x = self.emb(ids)
        for (b, p), (sh, co) in zip(reg_pos, reg_codes):
            x[b, p] = self.shape.weight[sh] + self.col.weight[co]
        x = x + self.pos(torch.arange(ids.shape[1]))[None]
        mask = nn.Transformer.generate_square_subsequent_mask(ids.shape[1])
        return self.head(self.ln(self.tr(x, mask=mask, is_causal=True)))


model = Decoder(d=D)
opt = torch.optim.AdamW(model.parameters(), LR, weight_decay=0)


def batch(n):
    data = [sample() for _ in range(n)]
    T = max(len(d[0]) for d in data)
    ids = torch.zeros(n, T, dtype=torch.long)
    lab = torch.full((n, T), -100)
    rp, rc = [], []
    for b, (toks, pl, codes, _) in enumerate(data):
        ids[b, :len(toks)] = torch.tensor([idx[t] for t in toks])
        lab[b, pl:len(toks)] = ids[b, pl:len(toks)]
        ps = [i for i, t in enumerate(toks) if t == '<reg>']
        for p, c in zip(ps, codes):
            rp.append((b, p))
            rc.append(c)
    return ids, lab, rp, rc, data


def accuracy(n=400):
    model.eval()
    ok = 0
    with torch.no_grad():
        ids, _, rp, rc, data = batch(n)
        logits = model(ids, rp, rc)
        for b, (_, pl, _, tgt) in enumerate(data):
            first = logits[b, pl - 1].argmax().item()
            if tgt is None:
                ok += first == idx['No']
            else:
                ok += first == idx['Region'] and logits[b, pl].argmax().item() == idx[f'[{tgt}']
    model.train()
    return ok / n


t0 = time.time()
for step in range(1, STEPS + 1):
    ids, lab, rp, rc, _ = batch(BS)
    logits = model(ids, rp, rc)
    loss = nn.functional.cross_entropy(logits[:, :-1].reshape(-1, V), lab[:, 1:].reshape(-1))
    opt.zero_grad()
    loss.backward()
    opt.step()
    if step % 100 == 0:
        print(FMT, D, LR, BS, step, f'loss {loss.item():.3f} acc {accuracy():.3f} '
              f'{time.time() - t0:.0f}s', flush=True)
