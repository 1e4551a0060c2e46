#!/usr/bin/env python3
"""How fast can a small decoder learn REC from scratch? A PyTorch toy.

    .venv/bin/python experiments/rec_learnability.py FORMAT STEPS [THREADS] [WIDTH] [LR] [BATCH] \
        [QUESTIONS] [CODES] [DECODER] [LAYERS] [HEADS] [CANDIDATES]

FORMAT is `plain` (the paper's order: candidates, then the expression, no
labels), `before` (expression first, `Region [k] <region>`) or `after`
(expression first, `<region> as Region [k]`): the orders the synthetic
world writes with `rec_expression_first` and `candidate_labels`
(docs/experiments/demo-journal.md). Two more isolate parts of the task; both list the candidates
first and then ask QUESTIONS questions about them, one after another:
`multi` labels each candidate before it (`Region [k] <region>`), `indexed`
writes bare `<region>`s but adds the token embedding of `[k` to the k-th
region's code, so the label is already inside the region and only the
matching is left to learn. CODES is `learned` (a region's code is a shape
embedding plus a colour embedding of its own) or `words` (the decoder's own
embeddings of the shape and colour words, with the output head tied to
them, as if the connector had already aligned regions with words).
DECODER is `encoder` (below) or `llama`: the demo's own decoder,
transformers' `LlamaForCausalLM` (RMSNorm, rotary positions, SwiGLU
feed-forward 2.6875 x WIDTH, head tied to the embeddings, every weight drawn
as transformers draws it: normal(0, 0.02)); `llama-mimetic` is the same with
each layer's query and key projections started equal to one random
orthogonal matrix, so attention starts out favouring similar vectors
(mimetic initialisation, Trockman & Kolter 2023). Both need transformers in
.venv (`scripts/bench_train.sh` installs the pinned version).
CANDIDATES is how many candidates a question lists, `MIN-MAX` (`2-2` for
the easiest REC there is).
Defaults: 1 thread, width 256, lr 1e-3, batch 32, 1 question, learned codes,
the `encoder` decoder, 4 layers, 4 heads, 2-4 candidates.
The demo's schedule is off by default (a constant lr, no clipping); the
environment turns it on: REC_WARMUP=0.03 warms up linearly over that
fraction of STEPS, REC_COSINE=1 decays the lr to 0 by a cosine after it,
REC_CLIP=1.0 clips the gradient norm, as `rgpt train` does. REC_BETA2 sets
AdamW's second-moment decay (default 0.999, torch's and `rgpt train`'s).
REC_GUIDE=N puts N fixed tokens before the answer of the single-question
formats, as the task-guided prompt does in the world's conversations;
with REC_VARY=1 they are drawn afresh for every question from 200 filler
words, as varied text that carries nothing.
REC_SENTENCE=full (plain and indexed, one question) writes the question in
the world's words, the paper's phrasing and the task-guided prompt, one
token a word; `noguide` drops the guide, `noprefix` the "From the provided
masks denoted by", `noregion` the guide's "Region [x]"; they combine with commas
(`noprefix,noguide`). REC_NO_COMMAS=1 lists the sentence's candidates without
commas, REC_NO_QUOTES=1 drops its quotes, REC_ASK="is" replaces its ", which one
fits"; REC_COMMAS=1 puts commas between the short form's candidates. REC_SHORT_STEPS=N
trains the first N steps on the short form, then on the sentence (accuracy
is always taken on the sentence). REC_POOL=N trains on N questions drawn
once, as the world's 3,000 conversations are, instead of fresh ones at
every step. REC_QUIRKS=1 adds the world's BPE quirks to the short formats:
a lone `_` before every region, `ASSISTANT:` before the answer and the
long no-match answer; REC_QUIRK_PARTS=space,assistant,no-match (any of
them) keeps only those. REC_SEED=N seeds the run (default 0). Besides the
accuracy, each line gives it on the questions whose expression names a
colour, the ones the shape alone does not settle.

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
import math
import os
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
QUESTIONS = int(sys.argv[7]) if len(sys.argv) > 7 else 1
CODES = sys.argv[8] if len(sys.argv) > 8 else 'learned'
DECODER = sys.argv[9] if len(sys.argv) > 9 else 'encoder'
LAYERS = int(sys.argv[10]) if len(sys.argv) > 10 else 4
HEADS = int(sys.argv[11]) if len(sys.argv) > 11 else 4
try:
    MIN_N, MAX_N = (int(k) for k in (sys.argv[12] if len(sys.argv) > 12 else '2-4').split('-'))
except ValueError:
    sys.exit("CANDIDATES: give MIN-MAX, as in 2-4")
if not 1 <= MIN_N <= MAX_N <= 4:
    sys.exit("CANDIDATES: between 1 and 4 (there are 4 labels)")
if os.environ.get('REC_SENTENCE', '0') != '0' and (FMT not in ('plain', 'indexed') or QUESTIONS > 1):
    sys.exit("REC_SENTENCE: with the plain or indexed format and one question")
if FMT not in ("plain", "before", "after", "multi", "indexed"):
    sys.exit(f"format `{FMT}`: use plain, before, after, multi or indexed")
if QUESTIONS < 1 or (QUESTIONS > 1 and FMT not in ("multi", "indexed")):
    sys.exit("QUESTIONS: 1, or more with the multi and indexed formats")
if CODES not in ("learned", "words"):
    sys.exit(f"codes `{CODES}`: use learned or words")
if DECODER not in ("encoder", "llama", "llama-mimetic"):
    sys.exit(f"decoder `{DECODER}`: use encoder, llama or llama-mimetic")
# REC_SEED=N seeds python's and torch's generators (default 0).
random.seed(int(os.environ.get('REC_SEED', 0)))
torch.manual_seed(int(os.environ.get('REC_SEED', 0)))
S, C = 6, 6
words = ['<pad>', '<bos>', 'which', 'is', 'the', '?', ':', 'as', 'Region', 'and', 'No', 'ans',
         '<reg>', '.'] + [f's{i}' for i in range(S)] + [f'c{i}' for i in range(C)] \
    + [f'[{k}' for k in range(1, 5)]
GUIDE = [f'g{i}' for i in range(int(os.environ.get('REC_GUIDE', 0)))]
VARY = os.environ.get('REC_VARY') == '1'
FILLERS = [f'f{i}' for i in range(200)] if VARY else []
# REC_SENTENCE=full (plain and indexed) writes the single question in the
# world's words, one token a word: "USER: From the provided masks denoted by
# <reg>, <reg> and <reg>, which one fits " the c1 s2 "? Answer the question
# using the template Region [x] . ASSISTANT:" (the paper's phrasing).
SENTENCE = os.environ.get('REC_SENTENCE', '0')
SENTENCE_WORDS = ['USER:', 'From', 'provided', 'masks', 'denoted', 'by', ',', 'one', 'fits', '"',
                  'Answer', 'question', 'using', 'template', '[x]', 'ASSISTANT:', 'example', 'form']
SENTENCE = None if SENTENCE == '0' else SENTENCE
# REC_SHORT_STEPS=N trains the first N steps on the short form (no sentence),
# then on the sentence; accuracy is always taken on the sentence.
SHORT_STEPS = int(os.environ.get('REC_SHORT_STEPS', 0))
# REC_NO_COMMAS=1 lists the sentence's candidates without the commas between
# them ("<reg> <reg> and <reg>"), as the short form does; REC_COMMAS=1 puts
# them into the short form ("<reg> , <reg> and <reg>").
NO_COMMAS = os.environ.get('REC_NO_COMMAS') == '1'
COMMAS = os.environ.get('REC_COMMAS') == '1'
if COMMAS and SENTENCE:
    sys.exit("REC_COMMAS: the sentence has its commas already (REC_NO_COMMAS=1 drops them)")
# REC_NO_QUOTES=1 drops the quotes around the sentence's expression.
NO_QUOTES = os.environ.get('REC_NO_QUOTES') == '1'
# REC_ASK="..." replaces the sentence's ", which one fits" (words of the
# vocabulary, space-separated).
ASK = os.environ.get('REC_ASK', ', which one fits').split()
short_now = SHORT_STEPS > 0
# REC_QUIRKS=1 writes the world's BPE quirks into the short formats: a lone
# `▁` before every region, `ASSISTANT:` before the answer and the long
# no-match answer. REC_QUIRK_PARTS (a comma list of `space`, `assistant`,
# `no-match`; default all three) picks which; the vocabulary is the same
# whichever are picked, so runs differ only in the text.
QUIRKS = os.environ.get('REC_QUIRKS') == '1'
QUIRK_PARTS = os.environ.get('REC_QUIRK_PARTS', 'space,assistant,no-match').split(',')
if not set(QUIRK_PARTS) <= {'space', 'assistant', 'no-match'}:
    sys.exit(f"REC_QUIRK_PARTS `{','.join(QUIRK_PARTS)}`: use space, assistant, no-match")
ANS = 'ASSISTANT:' if QUIRKS and 'assistant' in QUIRK_PARTS else 'ans'
QUIRK_WORDS = ['_', 'corresponding', 'options', 'found', 'ASSISTANT:'] if QUIRKS else []
# One id per word: the sentence and the quirks share `ASSISTANT:`.
words = list(dict.fromkeys(words + GUIDE + FILLERS + (SENTENCE_WORDS if SENTENCE else [])
                           + QUIRK_WORDS + ([','] if COMMAS else [])))
idx = {w: i for i, w in enumerate(words)}
V = len(words)


def question(objs):
    """One expression about `objs` and its answer (1-based, None: no match)."""
    n = len(objs)
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
    return expr, target


def candidates(n):
    """The candidate list's tokens in FMT's order."""
    regs = []
    for k in range(n):
        if FMT in ('plain', 'indexed'):
            item = ['_', '<reg>'] if QUIRKS and 'space' in QUIRK_PARTS else ['<reg>']
        elif FMT in ('before', 'multi'):
            item = ['Region', f'[{k+1}', '<reg>']
        else:
            item = ['<reg>', 'as', 'Region', f'[{k+1}']
        if k:
            item = (['and'] if k == n - 1 else [','] if COMMAS else []) + item
        regs += item
    return regs



def answer(target):
    if target:
        return ['Region', f'[{target}', '.']
    long = QUIRKS and 'no-match' in QUIRK_PARTS
    return ['No', 'corresponding', 'options', 'found', '.'] if long else ['No', '.']


def sample():
    """Tokens, each answer's (start, target), and every candidate's code
    (shape, colour, the label index added to it or 0)."""
    n = random.randint(MIN_N, MAX_N)
    objs = []
    while len(objs) < n:
        o = (random.randrange(S), random.randrange(C))
        if o not in objs:
            objs.append(o)
    codes = [(sh, co, k + 1 if FMT == 'indexed' else 0) for k, (sh, co) in enumerate(objs)]
    if SENTENCE and not short_now:
        expr, target = question(objs)
        regs = candidates(n)
        listed = regs if NO_COMMAS else [
            t for k, r in enumerate(regs)
            for t in ([','] if k and r == '<reg>' and regs[k - 1] != 'and' else []) + [r]]
        prefix = ['USER:', 'From', 'the', 'provided', 'masks', 'denoted', 'by']
        guide = ['Answer', 'the', 'question', 'using', 'the', 'template', 'Region', '[x]', '.']
        if 'noprefix' in SENTENCE.split(','):
            prefix = ['USER:']
        if 'noguide' in SENTENCE.split(','):
            guide = []
        if 'noregion' in SENTENCE.split(','):
            guide = guide[:6] + ['example', 'form', '.']
        quote = [] if NO_QUOTES else ['"']
        prompt = (['<bos>'] + prefix + listed + ASK + quote + expr
                  + quote + ['?'] + guide + ['ASSISTANT:'])
        return prompt + answer(target), [(len(prompt), target)], codes
    if FMT in ('multi', 'indexed'):
        toks = ['<bos>'] + candidates(n) + [':']
        spans = []
        for _ in range(QUESTIONS):
            expr, target = question(objs)
            toks += ['which', 'is'] + expr + ['?', ANS]
            spans.append((len(toks), target))
            toks += answer(target)
        return toks, spans, codes
    expr, target = question(objs)
    if FMT == 'plain':
        prompt = ['<bos>', 'which'] + candidates(n) + ['is'] + expr + ['?', 'ans']
    else:
        prompt = ['<bos>', 'which', 'is'] + expr + [':'] + candidates(n) + ['?', 'ans']
    guide = random.choices(FILLERS, k=len(GUIDE)) if VARY else GUIDE
    prompt = prompt[:-1] + guide + prompt[-1:]
    return prompt + answer(target), [(len(prompt), target)], codes


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
        if CODES == 'words':
            self.head.weight = self.emb.weight

    def code(self, sh, co, label):
        if CODES == 'words':
            x = self.emb.weight[idx[f's{sh}']] + self.emb.weight[idx[f'c{co}']]
        else:
            x = self.shape.weight[sh] + self.col.weight[co]
        return x + self.emb.weight[idx[f'[{label}']] if label else x

    def inputs(self, ids, reg_pos, reg_codes):
        x = self.emb(ids)
        for (b, p), c in zip(reg_pos, reg_codes):
            x[b, p] = self.code(*c)
        return x

    def forward(self, ids, reg_pos, reg_codes):
        x = self.inputs(ids, reg_pos, reg_codes)
        x = x + self.pos(torch.arange(ids.shape[1]))[None]
        mask = nn.Transformer.generate_square_subsequent_mask(ids.shape[1])
        return self.head(self.ln(self.tr(x, mask=mask, is_causal=True)))


class LlamaDecoder(Decoder):
    """The demo's decoder; see DECODER in the docstring."""

    def __init__(self, d, layers, heads, mimetic):
        nn.Module.__init__(self)
        from transformers import LlamaConfig, LlamaForCausalLM
        config = LlamaConfig(vocab_size=V, hidden_size=d, intermediate_size=int(d * 2.6875),
                             num_hidden_layers=layers, num_attention_heads=heads,
                             num_key_value_heads=heads, max_position_embeddings=256,
                             tie_word_embeddings=True)
        self.llm = LlamaForCausalLM(config)
        self.emb = self.llm.get_input_embeddings()
        self.shape = nn.Embedding(S, d)
        self.col = nn.Embedding(C, d)
        nn.init.normal_(self.shape.weight, std=0.02)
        nn.init.normal_(self.col.weight, std=0.02)
        if mimetic:
            with torch.no_grad():
                for layer in self.llm.model.layers:
                    w = nn.init.orthogonal_(torch.empty(d, d))
                    layer.self_attn.q_proj.weight.copy_(w)
                    layer.self_attn.k_proj.weight.copy_(w)

    def forward(self, ids, reg_pos, reg_codes):
        x = self.inputs(ids, reg_pos, reg_codes)
        return self.llm(inputs_embeds=x).logits


# One question fits in 48 positions; several need more.
if DECODER == 'encoder':
    model = Decoder(d=D, layers=LAYERS, heads=HEADS,
                    max_len=48 + len(GUIDE) + 24 * bool(SENTENCE) if QUESTIONS == 1 else 48 + 12 * QUESTIONS)
else:
    model = LlamaDecoder(D, LAYERS, HEADS, DECODER == 'llama-mimetic')
opt = torch.optim.AdamW(model.parameters(), LR, weight_decay=0,
                        betas=(0.9, float(os.environ.get('REC_BETA2', 0.999))))
WARMUP = float(os.environ.get('REC_WARMUP', 0))
COSINE = os.environ.get('REC_COSINE', '0') == '1'
CLIP = float(os.environ.get('REC_CLIP', 0))


def lr_at(step):
    """`rgpt train`'s schedule: linear warm-up from 0, then constant or cosine."""
    warm = math.ceil(WARMUP * STEPS)
    if step <= warm:
        return LR * step / warm
    if not COSINE:
        return LR
    return LR * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, STEPS - warm)))


# REC_POOL=N trains on N questions drawn once (the world writes one REC
# conversation per image), instead of fresh questions at every step.
POOL = [sample() for _ in range(int(os.environ.get('REC_POOL', 0)))]


def batch(n, fresh=False):
    data = [sample() for _ in range(n)] if fresh or not POOL else random.sample(POOL, n)
    T = max(len(d[0]) for d in data)
    ids = torch.zeros(n, T, dtype=torch.long)
    lab = torch.full((n, T), -100)
    rp, rc = [], []
    for b, (toks, spans, codes) in enumerate(data):
        ids[b, :len(toks)] = torch.tensor([idx[t] for t in toks])
        for start, target in spans:
            end = start + len(answer(target))
            lab[b, start:end] = ids[b, start:end]
        ps = [i for i, t in enumerate(toks) if t == '<reg>']
        for p, c in zip(ps, codes):
            rp.append((b, p))
            rc.append(c)
    return ids, lab, rp, rc, data


def accuracy(n=400):
    """Over every question of n fresh samples, and over those whose
    expression names a colour (the shape alone does not settle them): the
    two accuracies and how many of the second kind there were."""
    global short_now
    short, short_now = short_now, False
    model.eval()
    ok = total = colour_ok = colour_total = 0
    with torch.no_grad():
        ids, _, rp, rc, data = batch(n, fresh=True)
        logits = model(ids, rp, rc)
        for b, (toks, spans, _) in enumerate(data):
            named_colour = any(t[0] == 'c' and t[1:].isdigit() for t in toks)
            for pl, tgt in spans:
                first = logits[b, pl - 1].argmax().item()
                if tgt is None:
                    right = first == idx['No']
                else:
                    right = (first == idx['Region']
                             and logits[b, pl].argmax().item() == idx[f'[{tgt}'])
                ok += right
                total += 1
                colour_ok += right and named_colour
                colour_total += named_colour
    model.train()
    short_now = short
    return ok / total, colour_ok / max(colour_total, 1), colour_total


t0 = time.time()
for step in range(1, STEPS + 1):
    short_now = step <= SHORT_STEPS
    ids, lab, rp, rc, _ = batch(BS)
    logits = model(ids, rp, rc)
    loss = nn.functional.cross_entropy(logits[:, :-1].reshape(-1, V), lab[:, 1:].reshape(-1))
    opt.zero_grad()
    loss.backward()
    if CLIP:
        nn.utils.clip_grad_norm_(model.parameters(), CLIP)
    for group in opt.param_groups:
        group['lr'] = lr_at(step)
    opt.step()
    if step % 100 == 0:
        print(FMT, D, LR, BS, QUESTIONS, CODES, DECODER, LAYERS, HEADS, f'{MIN_N}-{MAX_N}', step, f'loss {loss.item():.3f} acc {"%.3f (colour named %.3f of %d)" % accuracy()} '
              f'{time.time() - t0:.0f}s', flush=True)
