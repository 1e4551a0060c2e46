#!/usr/bin/env python3
"""Can the demo's decoder learn REC when each region is one embedding?

    .venv/bin/python experiments/rec_region_codes.py MODEL_DIR WORLD_DIR STEPS LR [CODES] [SYSTEM] [INIT]

The toy (`experiments/rec_learnability.py`) learns the lookup from clean codes on
a world of shape and colour alone; the demo's decoder, fed each region's
name in words (docs/experiments/demo-journal.md, fifth round), needed about 900 steps. This
stands between the two: the demo's own decoder, tokenizer and world, with
every `<region>` of a REC conversation replaced by one embedding made from
the decoder's own word embeddings, as a connector aligned with words would
give it. Only REC is trained, in PyTorch through transformers.

MODEL_DIR is an RGPT checkpoint written by `rgpt demo` (its decoder and
tokenizer are read; `<stage>/model` of any stage). WORLD_DIR is a world
written by `rgpt demo` or `rgpt data synth`, with `train/` and `test/`:
training draws from `train/synth-rec.jsonl`, and every 100 steps the
accuracy is taken on the first 200 conversations of `test/synth-rec.jsonl`
(an answer is right when every answer token, and the `</s>` after it, is the
argmax given the gold prefix: greedy decoding reproduces it).
CODES is how a region becomes one embedding, from its object in
`objects.jsonl`:
  `name-mean`   the mean of the token embeddings of its name in the text
                form, "small red circle in the top left";
  `attributes`  the sum of the token embeddings of its four attributes,
                "small red circle top left";
  `shape-colour` the sum of those of its colour and shape alone, "red
                circle", as the toy's regions are (expressions naming size
                or position then have no answer in the codes);
  `colour-shape-mean` the mean of those, what `world.text_regions:
                colour_shape` gives the demo's text stages.
SYSTEM is `vicuna` (the Vicuna v1 system prompt first, as `rgpt` renders
conversations) or `none` (the same turns without it: 23 fewer tokens).
INIT is `load` (the checkpoint's decoder) or `scratch` (the same shape,
drawn as transformers draws it).
Defaults: `name-mean vicuna load`. AdamW (weight decay 0), a constant LR,
gradient clipping at 1.0, batch 32 (REC_BATCH sets it), 2 threads (REC_THREADS sets them);
seeds are fixed (python `random` and torch both 0, or REC_SEED). Prints the
mean training loss and the held-out accuracy every 100 steps; STEPS 0 only
scores the checkpoint. REC_NUMBER=1 numbers the regions: the k-th one gets
the embedding of the token `▁[k` added (`rgpt.region_index_tokens`).
REC_SPLIT=1 puts spaces around the quotes and punctuation of each question,
so that the BPE does not glue them to the expression's words (`▁circle"?`
is then `▁circle ▁"` `▁?`, the word's own token as in the region's name).
REC_SIMPLE=1 keeps the conversations whose first expression names at most
colour and shape ("the red circle"), as the toy's do. REC_NO_LONE_SPACE=1
drops the lone `▁` before each `<region>`, REC_SHORT_NO_MATCH=1 answers
"No." for no match. REC_SHOW_ERRORS=1 prints every held-out conversation answered wrongly (expression, regions'
names, answer given and expected). Each accuracy is also given on the
held-out questions whose expression's shape is shared by two candidates,
which only colour (or size and position) can settle. REC_SHORT_STEPS=N
trains the first N steps on a short form of each conversation's first
question ("USER: <region>, <region> and <region>: the red circle?
ASSISTANT: Region [2].</s>"), then on the conversations as written.
The thirteenth round's variants (docs/experiments/demo-journal.md): REC_WORD_LEVEL=1 (INIT
scratch) replaces the BPE with one id per word or punctuation mark, trained
on the world's REC text; REC_COLOUR_ONLY=P rewrites, with chance P, a training
question naming the shape alone whose target's colour is unique among the
candidates to name the colour alone ("the red one"; it draws one random
number per such question even when P is 0, so training runs from this round
on sample other batches than the same seed did before it); REC_COLOUR_COPIES=N
repeats each training question that names a colour N times;
REC_COLOUR_WEIGHT=W gives colour-shape-mean codes (W colour + shape) / (W + 1);
REC_HEADS=N and REC_LAYERS=N (INIT scratch) reshape the decoder;
REC_ANSWER_EXPRESSION=1 answers "The red circle is Region [2]." (held-out
accuracy then needs the expression copied too); REC_NO_COMMAS=1 lists the
candidates without commas between them; REC_NO_PREFIX=1 drops "From the
provided masks denoted by" and REC_NO_GUIDE=1 the task-guided prompt.
The fourteenth round's (docs/experiments/demo-journal.md): REC_NO_LONE_SPACE=all drops every lone
`▁`, not only those before regions; REC_VOCAB=N pads the REC_WORD_LEVEL
vocabulary to N rows (the decoder then draws other weights) and
REC_VOCAB_APPEND=N appends rows up to N after the decoder is drawn (the same
decoder, more rows); REC_UNTIE=1 (INIT scratch) gives the decoder an output
head of its own; REC_EPS sets AdamW's epsilon.
Needs transformers in .venv
(`scripts/bench_train.sh` installs the pinned version; docs/experiments/demo-journal.md's
numbers used 5.24.0).
"""
import functools
import json
import os
import random
import re
import sys
import time

import torch
from safetensors.torch import load_file
from tokenizers import Tokenizer
from transformers import LlamaConfig, LlamaForCausalLM

if len(sys.argv) < 5:
    sys.exit(__doc__.split('\n\n')[1])
MODEL_DIR, WORLD, STEPS, LR = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
CODES = sys.argv[5] if len(sys.argv) > 5 else 'name-mean'
SYSTEM = sys.argv[6] if len(sys.argv) > 6 else 'vicuna'
INIT = sys.argv[7] if len(sys.argv) > 7 else 'load'
if CODES not in ('name-mean', 'attributes', 'shape-colour', 'colour-shape-mean'):
    sys.exit(f"codes `{CODES}`: use name-mean, attributes, shape-colour or colour-shape-mean")
if SYSTEM not in ('vicuna', 'none'):
    sys.exit(f"system `{SYSTEM}`: use vicuna or none")
if INIT not in ('load', 'scratch'):
    sys.exit(f"init `{INIT}`: use load or scratch")
BATCH, HELD_OUT = int(os.environ.get('REC_BATCH', 32)), 200

torch.set_num_threads(int(os.environ.get('REC_THREADS', 2)))
torch.manual_seed(int(os.environ.get('REC_SEED', 0)))
random.seed(int(os.environ.get('REC_SEED', 0)))
text_config = json.load(open(f'{MODEL_DIR}/config.json'))['text_config']
# REC_HEADS=N and REC_LAYERS=N (with INIT scratch) change the decoder's shape.
for key, var in (('num_attention_heads', 'REC_HEADS'), ('num_key_value_heads', 'REC_HEADS'),
                 ('num_hidden_layers', 'REC_LAYERS')):
    if var in os.environ:
        assert INIT == 'scratch', f'{var} needs INIT scratch'
        text_config[key] = int(os.environ[var])
@functools.cache
def objects_of(split):
    """Each image's objects in `split` (objects.jsonl), read once."""
    return [json.loads(line)['objects'] for line in open(f'{WORLD}/{split}/objects.jsonl')]


# The world's palette, from its objects.
COLOURS = sorted({o['color'] for image in objects_of('train') for o in image})
SHAPES = sorted({o['shape'] for image in objects_of('train') for o in image})
tok = Tokenizer.from_file(f'{MODEL_DIR}/tokenizer.json')
# REC_WORD_LEVEL=1 (with INIT scratch) replaces the BPE with one id per word
# or punctuation mark, read off the world's REC text and the regions' names,
# as the toy's are.
if os.environ.get('REC_WORD_LEVEL') == '1':
    assert INIT == 'scratch', 'REC_WORD_LEVEL needs INIT scratch'
    from tokenizers import AddedToken, models, pre_tokenizers, processors, trainers
    texts = [t['value'] for line in open(f'{WORLD}/train/synth-rec.jsonl')
             for t in json.loads(line)['conversations']]
    texts.append(' '.join(['USER:', 'ASSISTANT:', '1', '2', '3', '4'] + COLOURS + SHAPES))
    tok = Tokenizer(models.WordLevel(unk_token='<unk>'))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(),
                                                 pre_tokenizers.Punctuation()])
    tok.add_special_tokens([AddedToken(t, normalized=False) for t in ['<region>', '</s>', '<s>']])
    tok.train_from_iterator(texts, trainers.WordLevelTrainer(
        special_tokens=['<unk>', '<s>', '</s>', '<region>']))
    tok.post_processor = processors.TemplateProcessing(
        single='<s> $A', special_tokens=[('<s>', tok.token_to_id('<s>'))])
    # The largest id, not get_vocab_size(): the trainer can leave a gap in the ids.
    text_config['vocab_size'] = max(tok.get_vocab().values()) + 1
    # REC_VOCAB=N pads the embedding to N rows no text uses, as a larger
    # vocabulary would.
    text_config['vocab_size'] = max(text_config['vocab_size'], int(os.environ.get('REC_VOCAB', 0)))
    print('word-level vocabulary', tok.get_vocab_size(), tok.encode(
        'USER: <region>, <region> and <region> fits "the red circle"? ASSISTANT: Region [2].</s>'
    ).tokens)
# REC_UNTIE=1 (INIT scratch) gives the decoder an output head of its own.
if os.environ.get('REC_UNTIE') == '1':
    assert INIT == 'scratch', 'REC_UNTIE needs INIT scratch'
    text_config['tie_word_embeddings'] = False
llm = LlamaForCausalLM(LlamaConfig(**{k: v for k, v in text_config.items() if k != 'model_type'}))
if INIT == 'load':
    weights = load_file(f'{MODEL_DIR}/model.safetensors')
    prefix = 'language_model.'
    missing = llm.load_state_dict(
        {k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)}, strict=False)
    assert not [m for m in missing.missing_keys if 'lm_head' not in m], missing
if text_config.get('tie_word_embeddings', True):
    llm.tie_weights()
# REC_VOCAB_APPEND=N appends rows up to N after the decoder is drawn, from a
# generator of their own: the same decoder, with more rows no text uses.
if int(os.environ.get('REC_VOCAB_APPEND', 0)) > text_config['vocab_size']:
    old = llm.get_input_embeddings().weight.data
    extra = torch.randn(int(os.environ['REC_VOCAB_APPEND']) - old.shape[0], old.shape[1],
                        generator=torch.Generator().manual_seed(1234)) * 0.02
    grown = torch.nn.Embedding(old.shape[0] + extra.shape[0], old.shape[1])
    grown.weight.data = torch.cat([old, extra])
    llm.set_input_embeddings(grown)
    llm.lm_head = torch.nn.Linear(old.shape[1], grown.weight.shape[0], bias=False)
    llm.config.vocab_size = grown.weight.shape[0]
    llm.tie_weights()
REGION = tok.token_to_id('<region>')
# REC_SPLIT=1 spaces punctuation off the words of each question.
SPLIT_PUNCTUATION = os.environ.get('REC_SPLIT') == '1'
# REC_NUMBER=1 adds to the k-th region the embedding of `▁[k`, as a model
# with `rgpt.region_index_tokens` does (the bare `k` when the tokenizer
# splits punctuation off and has no `▁[k`, as `rgpt` does too).
NUMBERS = []
if os.environ.get('REC_NUMBER') == '1':
    NUMBERS = [tok.token_to_id(f'\u2581[{k}') for k in range(1, 5)]
    if None in NUMBERS:
        NUMBERS = [tok.token_to_id(str(k)) for k in range(1, 5)]
assert None not in NUMBERS, 'the tokenizer has neither `▁[k` nor `k` tokens to number regions with'
SYSTEM_PROMPT = ("A chat between a curious user and an artificial intelligence assistant. "
                 "The assistant gives helpful, detailed, and polite answers to the user's "
                 "questions. ") if SYSTEM == 'vicuna' else ""
# rgpt_data::synth::describe::Position::phrase.
PHRASE = {"top left": "in the top left", "top": "at the top", "top right": "in the top right",
          "left": "on the left", "centre": "in the centre", "right": "on the right",
          "bottom left": "in the bottom left", "bottom": "at the bottom",
          "bottom right": "in the bottom right"}


def region_words(o):
    if CODES == 'name-mean':
        return f"{o['size']} {o['color']} {o['shape']} {PHRASE[o['position']]}"
    if CODES in ('shape-colour', 'colour-shape-mean'):
        return f"{o['color']} {o['shape']}"
    return f"{o['size']} {o['color']} {o['shape']} {o['position']}"


# REC_SHORT_STEPS=N trains the first N steps on a short form of each
# conversation's first question, "USER: <region>, <region> and <region>:
# the red circle? ASSISTANT: Region [2].</s>", then on the conversations as
# written; accuracy is always taken on the conversations as written.
SHORT_STEPS = int(os.environ.get('REC_SHORT_STEPS', 0))
# REC_SIMPLE=1 keeps the conversations whose first expression names at most
# colour and shape ("the circle", "the red circle"), as the toy's do.
SIMPLE = os.environ.get('REC_SIMPLE') == '1'
# REC_SHOW_ERRORS=1 prints each held-out conversation answered wrongly.
SHOW_ERRORS = os.environ.get('REC_SHOW_ERRORS') == '1'
# REC_NO_LONE_SPACE=1 drops the lone `▁` token the tokenizer writes before
# each `<region>`; REC_SHORT_NO_MATCH=1 answers "No." for "No corresponding
# options found." (two of the world's tokenizer quirks that slow the toy;
# docs/experiments/demo-journal.md, twelfth round).
# REC_NO_LONE_SPACE=all drops every lone `▁` (before quotes and brackets too).
NO_LONE_SPACE = os.environ.get('REC_NO_LONE_SPACE') in ('1', 'all')
ALL_LONE_SPACES = os.environ.get('REC_NO_LONE_SPACE') == 'all'
LONE_SPACE = tok.token_to_id('\u2581')
SHORT_NO_MATCH = os.environ.get('REC_SHORT_NO_MATCH') == '1'
# REC_COLOUR_ONLY=P rewrites, with chance P, a training question whose
# expression names the shape alone ("the circle") and whose target's colour is
# unique among the candidates to name the colour alone ("the red one").
COLOUR_ONLY = float(os.environ.get('REC_COLOUR_ONLY', 0))
# REC_COLOUR_COPIES=N repeats N times each training question whose
# expression names a colour.
# REC_ANSWER_EXPRESSION=1 answers "The red circle is Region [2]." (the
# expression first, then the template, which the eval still finds).
ANSWER_EXPRESSION = os.environ.get('REC_ANSWER_EXPRESSION') == '1'
# REC_NO_COMMAS=1 lists the candidates without commas between them
# ("<region> <region> and <region>"); with REC_NO_LONE_SPACE=1 they are then
# adjacent tokens, as in the toy's short form.
NO_COMMAS = os.environ.get('REC_NO_COMMAS') == '1'
# REC_NO_PREFIX=1 drops the question's "From the provided masks denoted by "
# and REC_NO_GUIDE=1 its task-guided prompt, as the toy's `REC_SENTENCE`
# parts `noprefix` and `noguide` do.
NO_PREFIX = os.environ.get('REC_NO_PREFIX') == '1'
NO_GUIDE = os.environ.get('REC_NO_GUIDE') == '1'
GUIDE = ' Answer the question using the template Region [x].'
COLOUR_WEIGHT = float(os.environ.get('REC_COLOUR_WEIGHT', 1.0))
COLOUR_COPIES = int(os.environ.get('REC_COLOUR_COPIES', 1))


def region_list(n):
    regions = ['<region>'] * n
    return regions[0] if n == 1 else ', '.join(regions[:-1]) + ' and ' + regions[-1]


def load(split, n=None, short=False):
    """(token ids, labels, each region's word ids) per conversation: the
    conversation rendered as `rgpt` renders it and tokenised in one piece,
    an answer token being one whose text overlaps the answer and its `</s>`
    (rgpt_model::prompt::conversation_segments)."""
    objects = objects_of(split)
    out = []
    for line in list(open(f'{WORLD}/{split}/synth-rec.jsonl'))[:n]:
        s = json.loads(line)
        if SIMPLE and len(s['meta']['expressions'][0].split()) > 3:
            continue
        image = int(s['id'].split('/')[-1])
        words = [region_words(objects[image][c]) for c in s['meta']['candidates']]
        text, spans = SYSTEM_PROMPT, []
        turns = s['conversations']
        expression = s['meta']['expressions'][0]
        target = s['meta']['targets'][0]
        if (split == 'train' and target and len(expression.split()) == 2
                and random.random() < COLOUR_ONLY):
            objs = [objects[image][c] for c in s['meta']['candidates']]
            colour = objs[target - 1]['color']
            if [o['color'] for o in objs].count(colour) == 1:
                new = f'the {colour} one'
                turns = [dict(t, value=t['value'].replace(f'"{expression}"', f'"{new}"')) for t in turns]
        names_colour = any(word in COLOURS for word in expression.split())
        copies = COLOUR_COPIES if split == 'train' and names_colour else 1
        if short:
            turns = [{'from': 'human', 'value': f"{region_list(len(words))}: {s['meta']['expressions'][0]}?"},
                     turns[1]]
        for turn in turns:
            if turn['from'] == 'human':
                question = turn['value'].replace('<image>\n', '')
                while NO_COMMAS and '<region>, <region>' in question:
                    question = question.replace('<region>, <region>', '<region> <region>')
                if NO_PREFIX:
                    question = question.replace('From the provided masks denoted by ', '')
                if NO_GUIDE:
                    question = question.replace(GUIDE, '')
                if SPLIT_PUNCTUATION:
                    question = re.sub(r'\s*(["?.,:])\s*', r' \1 ', question).strip()
                text += 'USER: ' + question + ' '
            else:
                text += 'ASSISTANT: '
                start = len(text)
                answer = turn['value']
                if SHORT_NO_MATCH and answer == 'No corresponding options found.':
                    answer = 'No.'
                if ANSWER_EXPRESSION and answer.startswith('Region ['):
                    answer = f"{expression.capitalize()} is {answer}"

                text += answer + '</s>'
                spans.append((start, len(text)))
        enc = tok.encode(text)
        ids = enc.ids
        labels = [i if a < b and any(a < e and b > st for st, e in spans) else -100
                  for i, (a, b) in zip(ids, enc.offsets)]
        if NO_LONE_SPACE:
            keep = [k for k in range(len(ids))
                    if not (ids[k] == LONE_SPACE and (ALL_LONE_SPACES or (
                        k + 1 < len(ids) and ids[k + 1] == REGION)))]
            ids, labels = [ids[k] for k in keep], [labels[k] for k in keep]
        word_ids = [tok.encode(w, add_special_tokens=False).ids for w in words]
        assert ids.count(REGION) == len(words), s['id']
        # A question that colour must settle: its shape is not unique among
        # the candidates (with a match or without).
        shapes = [objects[image][c]['shape'] for c in s['meta']['candidates']]
        same_shape = any(shapes.count(shape) > 1 and shape in expression.split()
                         for shape in shapes)
        out.extend([(ids, labels, word_ids, expression, same_shape)] * copies)
    return out


def embeds(items, emb):
    """Right-padded input embeddings, labels and attention mask."""
    length = max(len(ids) for ids, *_ in items)
    E, L, M = [], [], []
    for ids, labels, word_ids, *_ in items:
        t = torch.tensor(ids)
        rows = list(emb(t))
        for k, p in enumerate((t == REGION).nonzero().flatten().tolist()):
            w = emb(torch.tensor(word_ids[k]))
            if COLOUR_WEIGHT != 1.0:
                # (W colour + shape) / (W + 1), for colour-shape-mean.
                rows[p] = (COLOUR_WEIGHT * w[0] + w[1:].sum(0)) / (COLOUR_WEIGHT + 1)
            elif CODES in ('name-mean', 'colour-shape-mean'):
                rows[p] = w.mean(0)
            else:
                rows[p] = w.sum(0)
            if NUMBERS:
                rows[p] = rows[p] + emb(torch.tensor(NUMBERS[k]))
        pad = length - len(ids)
        E.append(torch.cat([torch.stack(rows), torch.zeros(pad, rows[0].shape[0])]))
        L.append(torch.tensor(labels + [-100] * pad))
        M.append(torch.tensor([1] * len(ids) + [0] * pad))
    return torch.stack(E), torch.stack(L), torch.stack(M)


def accuracy(test, emb):
    llm.eval()
    right = 0
    with torch.no_grad():
        for i in range(0, len(test), 50):
            items = test[i:i + 50]
            E, L, M = embeds(items, emb)
            pred = llm(inputs_embeds=E, attention_mask=M).logits.argmax(-1)
            for b in range(len(items)):
                target = L[b, 1:]
                at = (target != -100).nonzero().flatten()
                ok = bool((pred[b, at] == target[at]).all())
                right += ok
                if SHOW_ERRORS and not ok:
                    _, _, word_ids, expression, _ = items[b]
                    names = [tok.decode(w) for w in word_ids]
                    print(f'  wrong: {expression!r} regions {names} '
                          f'said {tok.decode(pred[b, at].tolist())!r} '
                          f'for {tok.decode(target[at].tolist())!r}', flush=True)
    llm.train()
    return right / len(test)


train, test = load('train'), load('test', HELD_OUT)
short_train = load('train', short=True) if SHORT_STEPS else []
emb = llm.get_input_embeddings()
mean_len = sum(len(x[0]) for x in train) / len(train)
print(f'{len(train)} training conversations ({mean_len:.1f} tokens on average), '
      f'{len(test)} held out; codes {CODES}, system {SYSTEM}, init {INIT}, lr {LR}', flush=True)
# REC_EPS sets AdamW's epsilon (torch's default 1e-8).
opt = torch.optim.AdamW(llm.parameters(), lr=LR, weight_decay=0.0,
                        eps=float(os.environ.get('REC_EPS', 1e-8)))
same_shape = [x for x in test if x[4]]


def scores():
    return (f'accuracy {accuracy(test, emb):.3f} '
            f'(same-shape candidates {accuracy(same_shape, emb):.3f} of {len(same_shape)})')


print(f'step 0 {scores()}', flush=True)
start, losses = time.time(), []
for step in range(1, STEPS + 1):
    E, L, M = embeds(random.sample(short_train if step <= SHORT_STEPS else train, BATCH), emb)
    loss = llm(inputs_embeds=E, attention_mask=M, labels=L).loss
    opt.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(llm.parameters(), 1.0)
    opt.step()
    losses.append(loss.item())
    if step % 100 == 0:
        print(f'step {step} loss {sum(losses[-100:]) / 100:.3f} '
              f'{scores()} {time.time() - start:.0f} s', flush=True)
