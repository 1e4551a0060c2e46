//! Continuous batching gives every sequence what it gets alone: sequences
//! of different prompt lengths and settings (greedy, sampled with a seed,
//! a repetition penalty, a short budget) join a running batch at different
//! steps, leave it as they finish, and each ends with exactly the tokens
//! of a one-prompt `generate` with the same config.
mod common;

use common::{expected, fixture};
use rgpt_llm::batching::DecodeBatch;
use rgpt_llm::generation::{FinishReason, GenerationConfig, Sampling, SequenceOutput};
use rgpt_llm::{generate, Llama};
use tch::{Device, Kind, Tensor};

/// What `generate` gives `prompt` alone.
fn alone(model: &Llama, prompt: &[i64], config: &GenerationConfig) -> SequenceOutput {
    generate(model, &[prompt.to_vec()], config, None, &mut |_, _| {})
        .unwrap()
        .sequences
        .remove(0)
}

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
        let alone_outputs: Vec<_> = prompts
            .iter()
            .zip(&configs)
            .map(|(prompt, config)| alone(&model, prompt, config))
            .collect();

        // Sequence i joins before step 2 * i, into a batch of three: the
        // later ones take the slots of those that left.
        let mut batch = DecodeBatch::new(&model, 3);
        let mut slots: Vec<(usize, usize)> = Vec::new(); // (sequence, slot)
        let mut done = vec![None; prompts.len()];
        let mut step = 0;
        let mut waiting = 0;
        while done.iter().any(Option::is_none) {
            if waiting < prompts.len() && step >= 2 * waiting && batch.has_room() {
                let i = waiting;
                let embeds = model.embed(&Tensor::from_slice(&prompts[i]).unsqueeze(0));
                let (slot, _) = batch
                    .join(&model, &embeds, &prompts[i], configs[i].clone(), None)
                    .unwrap();
                slots.push((i, slot));
                waiting += 1;
            }
            batch.step(&model, None).unwrap();
            slots.retain(|&(i, slot)| {
                if batch.is_finished(slot) {
                    done[i] = batch.leave(slot);
                    return false;
                }
                true
            });
            step += 1;
        }
        assert!(batch.is_empty());
        for (i, (got, want)) in done
            .into_iter()
            .map(Option::unwrap)
            .zip(&alone_outputs)
            .enumerate()
        {
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
    let mut batch = DecodeBatch::new(&model, 2);
    let (a, _) = batch
        .join(&model, &embeds, prompt, config.clone(), None)
        .unwrap();
    let (b, _) = batch
        .join(&model, &embeds, prompt, config.clone(), None)
        .unwrap();
    assert!(!batch.has_room());
    batch.cancel(a);
    let next = batch.step(&model, None).unwrap();
    assert_eq!(next.iter().map(|(s, _)| *s).collect::<Vec<_>>(), vec![b]);
    let cancelled = batch.leave(a).unwrap();
    assert_eq!(cancelled.finish_reason, FinishReason::Cancelled);
    assert_eq!(cancelled.token_ids.len(), 1);
    assert!(batch.has_room());
    while !batch.is_finished(b) {
        batch.step(&model, None).unwrap();
    }
    assert_eq!(
        batch.output(b).unwrap().token_ids,
        alone(&model, prompt, &config).token_ids
    );
}

/// Prompts of different lengths read in one left-padded prefill still get
/// their own answers; one with a bad setting fails alone, and one that
/// finds the batch full is told so while the rest join.
#[test]
fn prompts_joining_together_are_read_in_one_prefill() {
    use rgpt_llm::batching::Prompt;
    let _guard = tch::no_grad_guard();
    let name = "llama-gqa-theta";
    let (model, _vs) = Llama::from_pretrained(&fixture(name), Device::Cpu, Kind::Float).unwrap();
    let cases = &expected(name).cases;
    let configs = configs();
    let prompts: Vec<Vec<i64>> = (0..3)
        .map(|i| {
            let ids = &cases[i % cases.len()].prompt_ids;
            ids[..ids.len() - i.min(ids.len() - 1)].to_vec()
        })
        .collect();
    assert!(prompts[0].len() != prompts[2].len());
    let mut bad = configs[0].clone();
    bad.max_new_tokens = 0;
    let joining = |ids: &Vec<i64>, config: GenerationConfig| Prompt {
        embeds: model.embed(&Tensor::from_slice(ids).unsqueeze(0)),
        history: ids.clone(),
        config,
    };
    let mut batch = DecodeBatch::new(&model, 3);
    let results = batch.join_all(
        &model,
        vec![
            joining(&prompts[0], configs[0].clone()),
            joining(&prompts[1], bad),
            joining(&prompts[1], configs[1].clone()),
            joining(&prompts[2], configs[4].clone()),
            joining(&prompts[0], configs[0].clone()),
        ],
        None,
    );
    assert!(results[1]
        .as_ref()
        .unwrap_err()
        .to_string()
        .contains("max_new_tokens"));
    assert!(results[4]
        .as_ref()
        .unwrap_err()
        .to_string()
        .contains("full"));
    let joined: Vec<(usize, usize)> = [(0, 0), (2, 1), (3, 2)]
        .iter()
        .map(|&(r, p)| (results[r].as_ref().unwrap().0, p))
        .collect();
    while joined.iter().any(|&(slot, _)| !batch.is_finished(slot)) {
        batch.step(&model, None).unwrap();
    }
    for (slot, p) in joined {
        let config = [&configs[0], &configs[1], &configs[4]][p];
        assert_eq!(
            batch.output(slot).unwrap().token_ids,
            alone(&model, &prompts[p], config).token_ids,
            "prompt {p}"
        );
    }
}
