#!/usr/bin/env python3
"""Times HF transformers and `rgpt generate` on the same checkpoints, in one run.

    scripts/bench_vs_hf.sh [--threads N] [--runs R] [--new-tokens T]

(the script sets up .venv with the pinned transformers, then runs this file).

Both sides run greedy decoding of the same prompt ids on the same checkpoint,
f32 on CPU, with the same libtorch (torch 2.11.0) and the same intra-op
thread count. Two models: the tiny committed fixture (overhead-bound) and a
~100M-parameter random LLaMA (kernel-bound), written once to
target/bench-models/ with transformers.

Prefill is the time to the first token; per-token decode is the mean time of
the following steps. HF: `generate(max_new_tokens=1)` gives prefill, and
`(t(1 + T) - t(1)) / T` per-token decode (generate's own per-call overhead
cancels). rgpt: the `timing` of `rgpt generate --json`, measured the same
way inside the process. Medians over R runs after one warm-up, each with its
range (fastest-slowest run), so a reader can tell a difference from noise.
"""
import argparse
import json
import pathlib
import platform
import statistics
import subprocess
import time

import torch
import transformers
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

ROOT = pathlib.Path(__file__).resolve().parent.parent
RGPT = ROOT / "target" / "release" / "rgpt"
PROMPT = "The quick brown fox jumps over the lazy dog. " * 3


def llama_100m(directory):
    if (directory / "model.safetensors").exists():
        return directory
    config = LlamaConfig(
        vocab_size=32000,
        hidden_size=768,
        intermediate_size=2048,
        num_hidden_layers=8,
        num_attention_heads=12,
        num_key_value_heads=12,
        max_position_embeddings=2048,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.save_pretrained(directory)
    # The tiny fixture's tokenizer: token ids only need to be valid.
    AutoTokenizer.from_pretrained(ROOT / "tests" / "fixtures" / "llama-mha-tied").save_pretrained(directory)
    return directory


def time_hf(directory, ids, new_tokens, runs):
    model = LlamaForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()
    ids = torch.tensor([ids])

    def run(n):
        start = time.perf_counter()
        with torch.no_grad():
            out = model.generate(
                ids, max_new_tokens=n, min_new_tokens=n, do_sample=False, eos_token_id=None, pad_token_id=0
            )
        elapsed = time.perf_counter() - start
        assert out.shape[1] == ids.shape[1] + n
        return elapsed

    run(1), run(new_tokens + 1)  # warm-up
    prefill, decode = [], []
    for _ in range(runs):
        t1 = run(1)
        tn = run(new_tokens + 1)
        prefill.append(t1 * 1e3)
        decode.append((tn - t1) / new_tokens * 1e3)
    return prefill, decode


def time_rgpt(directory, threads, new_tokens, runs):
    cmd = [
        str(RGPT), "generate", "--model", str(directory), "--prompt", PROMPT, "--raw", "--greedy",
        "--ignore-eos", "--max-new-tokens", str(new_tokens + 1), "--threads", str(threads),
        "--device", "cpu", "--dtype", "f32", "--json",
    ]
    prefill, decode, ids = [], [], None
    for i in range(runs + 1):
        report = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
        ids = report["prompt_ids"]
        if i == 0:
            continue  # warm-up (page cache)
        prefill.append(report["timing"]["prefill_ms"])
        decode.append(1e3 / report["timing"]["decode_tokens_per_s"])
    return prefill, decode, ids


def spread(values, digits):
    """`median (fastest-slowest)`."""
    return f"{statistics.median(values):.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--new-tokens", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "rgpt-cli"], cwd=ROOT, check=True)

    models = {
        "tiny fixture (llama-mha-tied, 0.1M params)": ROOT / "tests" / "fixtures" / "llama-mha-tied",
        "llama-100m (random, 106M params)": llama_100m(ROOT / "target" / "bench-models" / "llama-100m"),
    }
    print(f"machine: {platform.processor() or platform.machine()}, {args.threads} threads; "
          f"torch {torch.__version__}, transformers {transformers.__version__}; "
          f"{args.new_tokens} new tokens, median of {args.runs} (fastest-slowest)")
    print(f"| model | prompt tokens | HF prefill ms | rgpt prefill ms | HF decode ms/token | rgpt decode ms/token | decode speed-up |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, directory in models.items():
        r_prefill, r_decode, ids = time_rgpt(directory, args.threads, args.new_tokens, args.runs)
        h_prefill, h_decode = time_hf(directory, ids, args.new_tokens, args.runs)
        speedup = statistics.median(h_decode) / statistics.median(r_decode)
        print(f"| {name} | {len(ids)} | {spread(h_prefill, 2)} | {spread(r_prefill, 2)} | {spread(h_decode, 3)} | "
              f"{spread(r_decode, 3)} | {speedup:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
