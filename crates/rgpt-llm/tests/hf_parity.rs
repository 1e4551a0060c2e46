//! Parity with Hugging Face transformers on the tiny random-weight fixtures.
//!
//! Reference: `scripts/gen_fixtures.py` (transformers 5.23.0, torch 2.11.0,
//! f32, one thread), which saves each fixture and records, from the model as
//! transformers reloads it, the prompt ids, greedy tokens, top-5 log-probs
//! per step and the last hidden state. Tolerances (f32): log-probs 1e-4
//! absolute, hidden states 1e-4 relative L2 norm; both are far above the
//! ~1e-6 reordering noise between two f32 BLAS paths and far below any real
//! bug (a wrong RoPE or mask moves them by >1e-2).
mod common;

use common::{expected, fixture, hidden_states, relative_error, MODEL_FIXTURES};
use rgpt_llm::generation::GenerationConfig;
use rgpt_llm::{generate, Llama, Tokenizer};
use tch::{Device, Kind};

fn load(name: &str) -> (Llama, Tokenizer, tch::nn::VarStore) {
    let dir = fixture(name);
    let tokenizer = Tokenizer::from_dir(&dir).unwrap();
    let (model, vs) = Llama::from_pretrained(&dir, Device::Cpu, Kind::Float).unwrap();
    (model, tokenizer, vs)
}

#[test]
fn prompts_tokenize_as_transformers() {
    for name in MODEL_FIXTURES {
        let (_, tokenizer, _) = load(name);
        for case in expected(name).cases {
            assert_eq!(
                tokenizer.encode(&case.prompt, true).unwrap(),
                case.prompt_ids,
                "{name}: {}",
                case.prompt
            );
        }
    }
}

#[test]
fn last_hidden_state_matches_transformers() {
    let _guard = tch::no_grad_guard();
    for name in MODEL_FIXTURES {
        let (model, _, _) = load(name);
        for case in expected(name).cases {
            let hidden = hidden_states(&model, &case.prompt_ids);
            let rel = relative_error(&hidden, &case.reference_hidden());
            assert!(
                rel < 1e-4,
                "{name}: relative error {rel:e} on {:?}",
                case.prompt
            );
        }
    }
}

#[test]
fn greedy_tokens_and_top5_logprobs_match_transformers() {
    for name in MODEL_FIXTURES {
        let (model, tokenizer, _) = load(name);
        for case in expected(name).cases {
            let config = GenerationConfig {
                max_new_tokens: case.greedy_tokens.len(),
                ignore_eos: true,
                top_logprobs: 5,
                ..GenerationConfig::default()
            };
            let out = generate(
                &model,
                std::slice::from_ref(&case.prompt_ids),
                &config,
                Some(&tokenizer),
                &mut |_, _| {},
            )
            .unwrap();
            let seq = &out.sequences[0];
            assert_eq!(
                seq.token_ids, case.greedy_tokens,
                "{name}: {:?}",
                case.prompt
            );
            assert_eq!(seq.top_logprobs.len(), case.top_logprobs.len());
            for (step, (ours, theirs)) in
                seq.top_logprobs.iter().zip(&case.top_logprobs).enumerate()
            {
                assert!(
                    !theirs.is_empty(),
                    "{name} step {step}: the fixture has no top-k"
                );
                assert_eq!(ours.len(), theirs.len(), "{name} step {step}");
                for (o, t) in ours.iter().zip(theirs) {
                    assert_eq!(o.id, t.id, "{name} step {step}");
                    assert!(
                        (o.logprob - t.logprob).abs() < 1e-4,
                        "{name} step {step}: logprob {} vs {}",
                        o.logprob,
                        t.logprob
                    );
                }
            }
        }
    }
}

/// bf16 and f16 runs cast the weights once at load and keep HF's f32
/// RMSNorm/RoPE arithmetic; their hidden states stay within 2e-2 relative
/// norm of the f32 reference (bf16 has 8 mantissa bits: ~4e-3 per op).
#[test]
fn half_precision_stays_close_to_the_f32_reference() {
    let _guard = tch::no_grad_guard();
    let name = "llama-gqa-theta";
    let dir = fixture(name);
    for kind in [Kind::BFloat16, Kind::Half] {
        let (model, _vs) = Llama::from_pretrained(&dir, Device::Cpu, kind).unwrap();
        assert_eq!(model.kind(), kind);
        for case in expected(name).cases {
            let hidden = hidden_states(&model, &case.prompt_ids);
            assert_eq!(hidden.kind(), kind);
            let rel = relative_error(&hidden, &case.reference_hidden());
            assert!(rel < 2e-2, "{name} {kind:?}: relative error {rel:e}");
        }
    }
}

#[test]
fn loading_reports_monotonic_progress_to_the_total() {
    let mut seen = Vec::new();
    let dir = fixture("llama-sharded-bin");
    Llama::from_pretrained_with_progress(&dir, Device::Cpu, Kind::Float, &mut |p| seen.push(p))
        .unwrap();
    // 2 layers x 9 tensors + embed_tokens + norm + lm_head.
    assert_eq!(seen.len(), 21);
    assert!(seen.windows(2).all(|w| w[0].bytes_done < w[1].bytes_done));
    let last = seen.last().unwrap();
    assert_eq!(
        (last.tensors_done, last.bytes_done),
        (last.tensors_total, last.bytes_total)
    );
    let files: u64 = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "bin"))
        .map(|p| p.metadata().unwrap().len())
        .sum();
    // The weights are most of the shard files (the rest is zip and pickle).
    assert!(last.bytes_total <= files && last.bytes_total > files / 2);
}
