#!/usr/bin/env python3
"""Builds the committed test fixtures and their reference outputs.

Run once in the project venv (tests never run it):

    scripts/setup.sh
    .venv/bin/pip install transformers==5.23.0 tokenizers==0.23.3 sentencepiece==0.2.3 protobuf \
        peft==0.22.0 \
        pillow==13.0.0 pycocotools==2.0.11 numpy==2.4.6 \
        pycocoevalcap==1.2   # and a Java runtime, for its PTBTokenizer and METEOR jars
    .venv/bin/python scripts/gen_fixtures.py

Everything is deterministic (fixed seeds, one thread). Each model fixture is
a tiny random-weight LlamaForCausalLM saved in a real Hugging Face layout, with
`expected.json` holding what transformers computes on it: prompt ids, greedy
tokens, the top-5 log-probs of every step and the last hidden states.
"""
import json
import pathlib
import shutil
import sys

import torch
import transformers
from transformers import LlamaConfig, LlamaForCausalLM

ROOT = pathlib.Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
sys.path.insert(0, str(ROOT / "scripts" / "fixtures"))

import caption_metrics  # noqa: E402
import connector  # noqa: E402
import dataset_formats  # noqa: E402
import eval_metrics  # noqa: E402
import llava  # noqa: E402
import lora_peft  # noqa: E402
import lr_schedules  # noqa: E402
import rgpt  # noqa: E402
import regiongpt_extractor  # noqa: E402
import preprocess  # noqa: E402
import sentencepiece_tokenizer  # noqa: E402
import torch_bin  # noqa: E402
import vision_towers  # noqa: E402

PROMPTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Once upon a time, in a small village",
]
NEW_TOKENS = 12
TOP_K = 5

# name -> (config overrides, how to save, legacy config keys to write instead)
MODELS = {
    "llama-mha-tied": dict(
        config=dict(num_key_value_heads=4, tie_word_embeddings=True),
        save="safetensors",
    ),
    "llama-gqa-theta": dict(
        config=dict(num_key_value_heads=2, rope_parameters={"rope_type": "default", "rope_theta": 500000.0}),
        save="safetensors",
    ),
    "llama-rope-llama3": dict(
        config=dict(
            num_key_value_heads=2,
            rope_parameters={
                "rope_type": "llama3",
                "rope_theta": 500000.0,
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 16,
            },
        ),
        save="safetensors",
    ),
    # Vicuna-era config keys (`rope_theta` + `rope_scaling` with `type`).
    "llama-rope-linear": dict(
        config=dict(num_key_value_heads=4),
        save="safetensors",
        legacy={"rope_theta": 10000.0, "rope_scaling": {"type": "linear", "factor": 2.0}},
    ),
    # As lmsys/vicuna-7b-v1.5 ships: sharded pytorch_model-*.bin and only a
    # SentencePiece tokenizer.model.
    "llama-sharded-bin": dict(
        config=dict(num_key_value_heads=4),
        save="bin",
        legacy={"rope_theta": 10000.0, "rope_scaling": None},
        sentencepiece_only=True,
    ),
}


def base_config(vocab_size):
    return dict(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=256,
        rms_norm_eps=1e-6,
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=False,
    )


def randomize(model, seed):
    # HF's 0.02-std init gives near-uniform logits, where greedy parity would
    # hinge on 1e-7 ties; larger weights give a peaked, well-separated argmax.
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(torch.randn(p.shape, generator=gen) / p.shape[-1] ** 0.5)


def reference(model, tok):
    cases = []
    for prompt in PROMPTS:
        ids = tok(prompt, return_tensors="pt").input_ids
        with torch.no_grad():
            hidden = model.model(input_ids=ids).last_hidden_state[0]
            out = model.generate(
                ids,
                max_new_tokens=NEW_TOKENS,
                do_sample=False,
                eos_token_id=None,
                pad_token_id=0,
                output_logits=True,
                return_dict_in_generate=True,
            )
        tokens = out.sequences[0, ids.shape[1]:].tolist()
        steps = []
        for logits in out.logits:
            lp = torch.log_softmax(logits[0].float(), dim=-1)
            top = torch.topk(lp, TOP_K)
            margin = (top.values[0] - top.values[1]).item()
            assert margin > 1e-3, f"greedy choice too close to call ({margin}); pick another seed"
            steps.append([{"id": i, "logprob": v} for i, v in zip(top.indices.tolist(), top.values.tolist())])
        cases.append(
            {
                "prompt": prompt,
                "prompt_ids": ids[0].tolist(),
                "greedy_tokens": tokens,
                "top_logprobs": steps,
                "last_hidden_state": hidden.tolist(),
            }
        )
    return cases


def save_sharded_bin(model, directory):
    """Rewrites the weights as transformers 4 did with safe_serialization=False
    (transformers 5 only writes safetensors): torch.save shards plus
    pytorch_model.bin.index.json."""
    for path in directory.glob("model*.safetensors*"):
        path.unlink()
    state = {k: v.contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight" or not model.config.tie_word_embeddings}
    names = list(state)
    shards = [names[: len(names) // 2], names[len(names) // 2 :]]
    weight_map = {}
    for i, shard in enumerate(shards, start=1):
        file = f"pytorch_model-{i:05d}-of-{len(shards):05d}.bin"
        torch.save({k: state[k] for k in shard}, directory / file)
        weight_map.update({k: file for k in shard})
    total = sum(t.numel() * t.element_size() for t in state.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (directory / "pytorch_model.bin.index.json").write_text(json.dumps(index, indent=2) + "\n")


def write_config(directory, legacy):
    path = directory / "config.json"
    config = json.loads(path.read_text())
    config.pop("rope_parameters", None)
    config.update(legacy)
    path.write_text(json.dumps(config, indent=2) + "\n")


def build_model(name, spec, tok, seed):
    directory = FIXTURES / name
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    cfg = base_config(len(tok))
    cfg.update(spec["config"])
    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig(**cfg)).eval()
    randomize(model, seed)
    model.save_pretrained(directory)
    if spec["save"] == "bin":
        save_sharded_bin(model, directory)
    if "legacy" in spec:
        write_config(directory, spec["legacy"])
    if spec.get("sentencepiece_only"):
        for file in ("tokenizer.model", "tokenizer_config.json"):
            shutil.copy(FIXTURES / "sentencepiece" / file, directory / file)
    else:
        tok.save_pretrained(directory)
    # The reference runs on the model as transformers reloads it from disk,
    # so the saved config (legacy keys included) is what is being checked.
    reloaded = LlamaForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()
    reloaded_tok = transformers.AutoTokenizer.from_pretrained(directory)
    expected = {
        "produced_by": (
            f"scripts/gen_fixtures.py with transformers {transformers.__version__}, torch {torch.__version__}, "
            f"seed {seed}, f32, 1 thread; greedy generate(max_new_tokens={NEW_TOKENS}, eos_token_id=None), "
            "top-5 log_softmax of output_logits, model.model(ids).last_hidden_state"
        ),
        "cases": reference(reloaded, reloaded_tok),
    }
    (directory / "expected.json").write_text(json.dumps(expected) + "\n")


def main():
    torch.set_num_threads(1)
    sentencepiece_tokenizer.generate(FIXTURES / "sentencepiece")
    torch_bin.generate(FIXTURES / "torch_bin")
    connector.generate(FIXTURES / "connector")
    vision_towers.generate(FIXTURES)
    preprocess.generate(FIXTURES / "preprocess")
    dataset_formats.generate(FIXTURES / "datasets")
    eval_metrics.generate(FIXTURES / "eval_metrics")
    lr_schedules.main()
    caption_metrics.generate(FIXTURES / "caption_metrics")  # needs java
    # A directory with only tokenizer.model (+ config), as Vicuna ships it.
    tok = transformers.AutoTokenizer.from_pretrained(FIXTURES / "sentencepiece")
    for seed, (name, spec) in enumerate(MODELS.items(), start=1):
        build_model(name, spec, tok, seed)
        print(f"wrote {FIXTURES / name}")
    # PEFT's LoRA on llama-gqa-theta, once that exists.
    lora_peft.generate(FIXTURES / "lora_peft")
    # After the tokenizer fixture, which the LLaVA one extends with <image>.
    llava.generate(FIXTURES / "llava-tiny")
    llava.generate_siglip(FIXTURES / "llava-siglip-tiny")
    rgpt.generate(FIXTURES / "rgpt-tiny")
    # RegionGPT's reference region path on that checkpoint.
    regiongpt_extractor.generate(FIXTURES / "regiongpt")


if __name__ == "__main__":
    main()
