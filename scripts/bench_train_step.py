#!/usr/bin/env python3
"""PyTorch-eager reference for `cargo bench -p rgpt-train --bench train_step`.

    .venv/bin/python scripts/bench_train_step.py [--attn eager|sdpa|both] [--threads 2]
        [--steps 20] [--warmup 3]

The same step as the Rust bench, in transformers: the demo's tiny LLaMA
(hidden 256, 2 layers, 4 heads / 4 KV heads, intermediate 688, RMSNorm eps
1e-6, RoPE theta 10000, tied embeddings, vocab 1024, f32 on CPU) as
`LlamaForCausalLM(LlamaConfig(...))` with transformers' own init (normal(0,
0.02)), a fixed seeded batch of 32 x 96 token ids whose first 80 labels are
-100, and per step: `zero_grad`, forward with labels (transformers'
`ForCausalLMLoss`: shifted next-token cross-entropy, mean over counted
tokens), backward, `clip_grad_norm_(1.0)`, `torch.optim.AdamW(lr=1e-3,
weight_decay=0)` (its default implementation on CPU: the single-tensor
loop; foreach and fused are not picked by default there).

Two attention implementations, as transformers offers them:
- `sdpa` (transformers' default): `scaled_dot_product_attention` with
  `is_causal`, the same libtorch kernel rgpt's `Llama` calls, so this is
  the like-for-like peer.
- `eager`: the explicit `softmax(q k^T / sqrt(d) + mask) v` of
  `modeling_llama.py`, what "PyTorch eager" means in the strictest reading.

Times `--steps` steps after `--warmup`, with `torch.set_num_threads`, and
prints one JSON line per implementation: median / min step seconds,
samples/s and tokens/s (32 x 96 input tokens a step), and the medians of the
forward + loss, backward and clip + AdamW phases.
"""
import argparse
import json
import platform
import statistics
import time

import torch
import transformers
from transformers import LlamaConfig, LlamaForCausalLM

BATCH, SEQ, PROMPT, VOCAB = 32, 96, 80, 1024
LR, MAX_GRAD_NORM = 1e-3, 1.0


def tiny_llama(attn):
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=256,
        intermediate_size=688,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=1024,
        rms_norm_eps=1e-6,
        rope_theta=10000.0,
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=True,
        attn_implementation=attn,
    )
    model = LlamaForCausalLM(config).float().train()
    assert model.config._attn_implementation == attn, model.config._attn_implementation
    return model


def batch():
    ids = torch.randint(VOCAB, (BATCH, SEQ))
    labels = ids.clone()
    labels[:, :PROMPT] = -100
    mask = torch.ones(BATCH, SEQ, dtype=torch.long)
    return ids, labels, mask


def run(attn, steps, warmup):
    torch.manual_seed(0)
    model = tiny_llama(attn)
    ids, labels, mask = batch()
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.0)
    params = [p for p in model.parameters() if p.requires_grad]

    def step():
        start = time.perf_counter()
        optimizer.zero_grad()
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        forward = time.perf_counter()
        loss.backward()
        backward = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(params, MAX_GRAD_NORM)
        optimizer.step()
        end = time.perf_counter()
        return end - start, forward - start, backward - forward, end - backward, loss.item()

    for _ in range(warmup):
        step()
    times = [step() for _ in range(steps)]
    total = [t[0] for t in times]
    median = statistics.median(total)
    return {
        "peer": f"pytorch-{attn}",
        "attn_implementation": attn,
        "threads": torch.get_num_threads(),
        "steps": steps,
        "median_s": median,
        "min_s": min(total),
        "samples_per_s": BATCH / median,
        "tokens_per_s": BATCH * SEQ / median,
        "forward_loss_s": statistics.median(t[1] for t in times),
        "backward_s": statistics.median(t[2] for t in times),
        "clip_adamw_s": statistics.median(t[3] for t in times),
        "first_loss": times[0][4],
        "last_loss": times[-1][4],
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attn", choices=["sdpa", "eager", "both"], default="both")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for attn in ["sdpa", "eager"] if args.attn == "both" else [args.attn]:
        print(json.dumps(run(attn, args.steps, args.warmup)), flush=True)


if __name__ == "__main__":
    main()
