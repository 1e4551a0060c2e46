//! Continuous batching gives every sequence what it gets alone: sequences
//! of different prompt lengths and settings (greedy, sampled with a seed,
//! a repetition penalty, a short budget) join a running batch at different
//! steps, leave it as they finish, and each ends with exactly the tokens
//! of a one-prompt `generate` with the same config.
mod common;

use common::{expected, fixture};
use rgpt_llm::batching::{decode_step, Sequence};
use rgpt_llm::generation::{FinishReason, GenerationConfig, Sampling};
use rgpt_llm::{generate, Llama};
use tch::{Device, Kind, Tensor};

fn configs() -> Vec<GenerationConfig> {
    let sampled = |seed| GenerationConfig {
        max_new_tokens: 10,
        sampling: Sampling::Sample {
            temperature: 1.3,
            top_k: None,
            top_p: Some(0.95),
        },
        seed: Some(seed),
        ignore_eos: true,
        ..GenerationConfig::default()
    };
    vec![
        GenerationConfig {
            max_new_tokens: 12,
            ignore_eos: true,
            ..GenerationConfig::default()
        },
        sampled(5),
        GenerationConfig {
            max_new_tokens: 3,
            ignore_eos: true,
            ..GenerationConfig::default()
        },
        sampled(6),
        GenerationConfig {
            max_new_tokens: 9,
            repetition_penalty: 1.4,
            ignore_eos: true,
            top_logprobs: 3,
            ..GenerationConfig::default()
        },
    ]
}

#[test]
fn sequences_joining_and_leaving_a_batch_get_their_own_answers() {
    let _guard = tch::no_grad_guard();
    for name in ["llama-mha-tied", "llama-gqa-theta"] {
        let (model, _vs) =
            Llama::from_pretrained(&fixture(name), Device::Cpu, Kind::Float).unwrap();
        let cases = &expected(name).cases;
        let prompts: Vec<Vec<i64>> = (0..5)
            .map(|i| {
                let ids = &cases[i % cases.len()].prompt_ids;
                ids[..ids.len() - (i / cases.len()).min(ids.len() - 1)].to_vec()
            })
            .collect();
        let configs = configs();
        let alone: Vec<_> = prompts
            .iter()
            .zip(&configs)
            .map(|(prompt, config)| {
                generate(
                    &model,
                    std::slice::from_ref(prompt),
                    config,
                    None,
                    &mut |_, _| {},
                )
                .unwrap()
                .sequences
                .remove(0)
            })
            .collect();

        // Sequence i joins before step 2 * i.
        let mut running: Vec<(usize, Sequence)> = Vec::new();
        let mut done = vec![None; prompts.len()];
        let mut step = 0;
        while done.iter().any(Option::is_none) {
            if step % 2 == 0 && step / 2 < prompts.len() {
                let i = step / 2;
                let embeds = model.embed(&Tensor::from_slice(&prompts[i]).unsqueeze(0));
                let (sequence, _) =
                    Sequence::start(&model, &embeds, &prompts[i], configs[i].clone(), None)
                        .unwrap();
                running.push((i, sequence));
            }
            let mut batch: Vec<&mut Sequence> = running.iter_mut().map(|(_, s)| s).collect();
            decode_step(&model, &mut batch, None).unwrap();
            running.retain(|(i, s)| {
                if s.is_finished() {
                    done[*i] = Some(s.output().clone());
                }
                !s.is_finished()
            });
            step += 1;
        }
        for (i, (got, want)) in done.into_iter().map(Option::unwrap).zip(&alone).enumerate() {
            assert_eq!(got.token_ids, want.token_ids, "{name}: sequence {i}");
            assert_eq!(
                got.finish_reason,
                FinishReason::Length,
                "{name}: sequence {i}"
            );
            assert_eq!(got.top_logprobs.len(), want.top_logprobs.len());
            for (a, b) in got
                .top_logprobs
                .iter()
                .flatten()
                .zip(want.top_logprobs.iter().flatten())
            {
                assert_eq!(a.id, b.id, "{name}: sequence {i}");
                assert!((a.logprob - b.logprob).abs() < 1e-4, "{name}: sequence {i}");
            }
        }
    }
}

#[test]
fn a_cancelled_sequence_leaves_and_the_rest_go_on() {
    let _guard = tch::no_grad_guard();
    let name = "llama-mha-tied";
    let (model, _vs) = Llama::from_pretrained(&fixture(name), Device::Cpu, Kind::Float).unwrap();
    let prompt = &expected(name).cases[0].prompt_ids;
    let config = GenerationConfig {
        max_new_tokens: 6,
        ignore_eos: true,
        ..GenerationConfig::default()
    };
    let embeds = model.embed(&Tensor::from_slice(prompt).unsqueeze(0));
    let (mut a, _) = Sequence::start(&model, &embeds, prompt, config.clone(), None).unwrap();
    let (mut b, _) = Sequence::start(&model, &embeds, prompt, config.clone(), None).unwrap();
    a.cancel();
    let next = decode_step(&model, &mut [&mut a, &mut b], None).unwrap();
    assert_eq!(next[0], None);
    assert!(next[1].is_some());
    assert_eq!(a.output().finish_reason, FinishReason::Cancelled);
    assert_eq!(a.output().token_ids.len(), 1);
    while !b.is_finished() {
        decode_step(&model, &mut [&mut a, &mut b], None).unwrap();
    }
    let alone = generate(
        &model,
        std::slice::from_ref(prompt),
        &config,
        None,
        &mut |_, _| {},
    )
    .unwrap();
    assert_eq!(b.output().token_ids, alone.sequences[0].token_ids);
}
