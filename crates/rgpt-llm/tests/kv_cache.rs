//! The KV cache and batching give the same numbers as the plain path: a
//! cached step-by-step decode equals one full recompute, and a left-padded
//! batch equals running each prompt alone. Tolerance 1e-4 absolute on f32
//! logits: the two paths only differ in reduction order.
mod common;

use common::{expected, fixture, hidden_states};
use rgpt_llm::generation::{FinishReason, GenerationConfig, Sampling};
use rgpt_llm::{generate, Llama, Tokenizer};
use tch::{Device, Kind, Tensor};

fn load(name: &str) -> (Llama, tch::nn::VarStore) {
    Llama::from_pretrained(&fixture(name), Device::Cpu, Kind::Float).unwrap()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    f64::try_from((a - b).abs().max()).unwrap()
}

/// Logits of every position of `ids`, in one pass.
fn full_logits(model: &Llama, ids: &[i64]) -> Tensor {
    model.logits(&hidden_states(model, ids))
}

#[test]
fn cached_decode_equals_full_recompute() {
    let _guard = tch::no_grad_guard();
    for name in ["llama-mha-tied", "llama-gqa-theta", "llama-rope-llama3"] {
        let (model, _vs) = load(name);
        let case = &expected(name).cases[0];
        let all: Vec<i64> = case
            .prompt_ids
            .iter()
            .chain(&case.greedy_tokens)
            .copied()
            .collect();
        let full = full_logits(&model, &all);

        let prompt_len = case.prompt_ids.len();
        let mut cache = model.new_cache(1, all.len() as i64);
        let mut step_logits = vec![model
            .forward(
                &Tensor::from_slice(&all[..prompt_len]).unsqueeze(0),
                None,
                &mut cache,
            )
            .unwrap()];
        for &id in &all[prompt_len..all.len() - 1] {
            step_logits.push(
                model
                    .forward(&Tensor::from_slice(&[id]).unsqueeze(0), None, &mut cache)
                    .unwrap(),
            );
        }
        assert_eq!(cache.len(), all.len() as i64 - 1);
        let incremental = Tensor::cat(&step_logits, 0);
        let reference = full.narrow(0, prompt_len as i64 - 1, incremental.size()[0]);
        let diff = max_abs_diff(&incremental, &reference);
        assert!(
            diff < 1e-4,
            "{name}: cached vs full logits differ by {diff:e}"
        );
    }
}

#[test]
fn cloned_and_reset_caches_continue_identically() {
    let _guard = tch::no_grad_guard();
    let (model, _vs) = load("llama-gqa-theta");
    let case = &expected("llama-gqa-theta").cases[0];
    let prompt = Tensor::from_slice(&case.prompt_ids).unsqueeze(0);
    let next = Tensor::from_slice(&case.greedy_tokens[..1]).unsqueeze(0);

    let mut cache = model.new_cache(1, 64);
    let first = model.forward(&prompt, None, &mut cache).unwrap();
    let mut branch = cache.try_clone();
    let a = model.forward(&next, None, &mut cache).unwrap();
    let b = model.forward(&next, None, &mut branch).unwrap();
    assert_eq!(max_abs_diff(&a, &b), 0.0);

    cache.reset();
    assert!(cache.is_empty());
    let again = model.forward(&prompt, None, &mut cache).unwrap();
    assert_eq!(max_abs_diff(&first, &again), 0.0);
    // Writing past the preallocated capacity is an error, not a panic.
    let long = Tensor::zeros([1, 64], (Kind::Int64, Device::Cpu));
    assert!(model.forward(&long, None, &mut cache).is_err());
}

#[test]
fn batched_generation_equals_each_prompt_alone() {
    for name in ["llama-mha-tied", "llama-gqa-theta", "llama-rope-linear"] {
        let (model, _vs) = load(name);
        let tokenizer = Tokenizer::from_dir(&fixture(name)).unwrap();
        let prompts = vec![
            tokenizer
                .encode("The quick brown fox jumps over the lazy dog.", true)
                .unwrap(),
            tokenizer.encode("Once", true).unwrap(),
        ];
        assert!(
            prompts[0].len() > prompts[1].len() + 5,
            "the prompts must need padding"
        );
        let config = GenerationConfig {
            max_new_tokens: 10,
            ignore_eos: true,
            top_logprobs: 5,
            ..GenerationConfig::default()
        };
        let batched = generate(&model, &prompts, &config, None, &mut |_, _| {}).unwrap();
        for (i, prompt) in prompts.iter().enumerate() {
            let alone = generate(
                &model,
                std::slice::from_ref(prompt),
                &config,
                None,
                &mut |_, _| {},
            )
            .unwrap();
            let (b, a) = (&batched.sequences[i], &alone.sequences[0]);
            assert_eq!(b.token_ids, a.token_ids, "{name}: prompt {i}");
            // A zip of unequal or empty lists would compare nothing.
            assert_eq!(
                b.top_logprobs.len(),
                b.token_ids.len(),
                "{name}: prompt {i}"
            );
            assert_eq!(
                b.top_logprobs.len(),
                a.top_logprobs.len(),
                "{name}: prompt {i}"
            );
            for (bs, as_) in b.top_logprobs.iter().zip(&a.top_logprobs) {
                assert_eq!((bs.len(), as_.len()), (5, 5), "{name}: prompt {i}");
                for (x, y) in bs.iter().zip(as_) {
                    assert_eq!(x.id, y.id);
                    assert!(
                        (x.logprob - y.logprob).abs() < 1e-4,
                        "{name}: {} vs {}",
                        x.logprob,
                        y.logprob
                    );
                }
            }
        }
    }
}

#[test]
fn generation_stops_on_eos_and_stop_strings() {
    let name = "llama-mha-tied";
    let (model, _vs) = load(name);
    let tokenizer = Tokenizer::from_dir(&fixture(name)).unwrap();
    let case = &expected(name).cases[0];
    let prompts = [case.prompt_ids.clone()];

    let third = case.greedy_tokens[2];
    let first_third = case.greedy_tokens.iter().position(|&t| t == third).unwrap();
    let eos = GenerationConfig {
        max_new_tokens: 12,
        eos_token_ids: vec![third],
        ..GenerationConfig::default()
    };
    let out = generate(&model, &prompts, &eos, None, &mut |_, _| {}).unwrap();
    assert_eq!(
        out.sequences[0].token_ids,
        case.greedy_tokens[..=first_third]
    );
    assert_eq!(out.sequences[0].finish_reason, FinishReason::Eos);

    let ignored = GenerationConfig {
        ignore_eos: true,
        ..eos.clone()
    };
    let out = generate(&model, &prompts, &ignored, None, &mut |_, _| {}).unwrap();
    assert_eq!(out.sequences[0].token_ids, case.greedy_tokens);
    assert_eq!(out.sequences[0].finish_reason, FinishReason::Length);

    let stop_text = tokenizer.decode(&case.greedy_tokens[..4], false).unwrap();
    let stop = GenerationConfig {
        max_new_tokens: 12,
        stop_strings: vec![stop_text.trim().to_string()],
        ..GenerationConfig::default()
    };
    let mut streamed = Vec::new();
    let out = generate(&model, &prompts, &stop, Some(&tokenizer), &mut |_, id| {
        streamed.push(id)
    })
    .unwrap();
    let seq = &out.sequences[0];
    assert_eq!(seq.finish_reason, FinishReason::StopString);
    assert!(
        seq.token_ids.len() <= 4,
        "stopped after {} tokens",
        seq.token_ids.len()
    );
    assert_eq!(seq.token_ids, case.greedy_tokens[..seq.token_ids.len()]);
    assert_eq!(
        streamed, seq.token_ids,
        "the callback sees every token as it is chosen"
    );
}

#[test]
fn sampling_is_seeded_and_top_k_1_is_greedy() {
    let name = "llama-gqa-theta";
    let (model, _vs) = load(name);
    let case = &expected(name).cases[1];
    let prompts = [case.prompt_ids.clone()];
    let sample = |sampling: Sampling, seed: u64| {
        let config = GenerationConfig {
            max_new_tokens: 12,
            ignore_eos: true,
            sampling,
            seed: Some(seed),
            ..GenerationConfig::default()
        };
        generate(&model, &prompts, &config, None, &mut |_, _| {})
            .unwrap()
            .sequences[0]
            .token_ids
            .clone()
    };
    let hot = Sampling::Sample {
        temperature: 1.5,
        top_k: None,
        top_p: Some(0.95),
    };
    assert_eq!(sample(hot.clone(), 7), sample(hot.clone(), 7));
    let runs: Vec<_> = (0..4).map(|seed| sample(hot.clone(), seed)).collect();
    assert!(
        runs.iter().any(|r| r != &runs[0]),
        "different seeds should sample differently"
    );
    let top1 = Sampling::Sample {
        temperature: 0.7,
        top_k: Some(1),
        top_p: None,
    };
    assert_eq!(sample(top1, 3), case.greedy_tokens);
    let tiny_p = Sampling::Sample {
        temperature: 1.0,
        top_k: None,
        top_p: Some(1e-6),
    };
    assert_eq!(sample(tiny_p, 3), case.greedy_tokens);
}

#[test]
fn repetition_penalty_discourages_seen_tokens() {
    let name = "llama-mha-tied";
    let (model, _vs) = load(name);
    let case = &expected(name).cases[0];
    let config = |penalty| GenerationConfig {
        max_new_tokens: 12,
        ignore_eos: true,
        repetition_penalty: penalty,
        ..GenerationConfig::default()
    };
    let plain = generate(
        &model,
        std::slice::from_ref(&case.prompt_ids),
        &config(1.0),
        None,
        &mut |_, _| {},
    )
    .unwrap();
    let penalized = generate(
        &model,
        std::slice::from_ref(&case.prompt_ids),
        &config(100.0),
        None,
        &mut |_, _| {},
    )
    .unwrap();
    let tokens = &penalized.sequences[0].token_ids;
    assert_eq!(plain.sequences[0].token_ids, case.greedy_tokens);
    // With a huge penalty no token of the prompt or earlier output recurs.
    for (i, t) in tokens.iter().enumerate() {
        assert!(
            !case.prompt_ids.contains(t) && !tokens[..i].contains(t),
            "token {t} repeated at step {i}"
        );
    }
}

/// A cancel flag set while generating (here by the token callback, as a
/// server's engine sets it when its client has gone) ends generation after
/// that step, with what was generated so far.
#[test]
fn generation_stops_when_cancelled() {
    let name = "llama-mha-tied";
    let (model, _vs) = load(name);
    let case = &expected(name).cases[0];
    let prompts = [case.prompt_ids.clone()];
    let cancel = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let config = GenerationConfig {
        max_new_tokens: 12,
        ignore_eos: true,
        cancel: Some(std::sync::Arc::clone(&cancel)),
        ..GenerationConfig::default()
    };
    let mut seen = 0;
    let out = generate(&model, &prompts, &config, None, &mut |_, _| {
        seen += 1;
        if seen == 3 {
            cancel.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    })
    .unwrap();
    let seq = &out.sequences[0];
    assert_eq!(seq.finish_reason, FinishReason::Cancelled);
    assert_eq!(seq.token_ids, case.greedy_tokens[..3]);
}
