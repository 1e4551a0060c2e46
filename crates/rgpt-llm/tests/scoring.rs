//! Candidate scoring: one prefill, a cache expanded per candidate and a
//! right-padded batch must give each candidate the same log-likelihood as
//! running prompt + candidate alone through the decoder.
use std::path::PathBuf;

use rgpt_llm::scoring::score_continuations;
use rgpt_llm::Llama;
use tch::{Device, Kind, Tensor};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(name)
}

/// Sum of log p(candidate | prompt) from one plain forward over both.
fn alone(model: &Llama, prompt: &[i64], candidate: &[i64]) -> f64 {
    let ids: Vec<i64> = prompt.iter().chain(candidate).copied().collect();
    let input = Tensor::from_slice(&ids).unsqueeze(0);
    let mut cache = model.new_cache(1, ids.len() as i64);
    let hidden = model
        .forward_embeds(&model.embed(&input), None, &mut cache)
        .unwrap();
    let log_probs = model.logits(&hidden).log_softmax(-1, Kind::Float).get(0);
    candidate
        .iter()
        .enumerate()
        .map(|(j, &id)| {
            f64::try_from(log_probs.get((prompt.len() + j - 1) as i64).get(id)).unwrap()
        })
        .sum()
}

#[test]
fn batched_scores_equal_each_candidate_alone() {
    let _guard = tch::no_grad_guard();
    for name in ["llama-gqa-theta", "llama-mha-tied"] {
        let (model, _vs) =
            Llama::from_pretrained(&fixture(name), Device::Cpu, Kind::Float).unwrap();
        let prompt = vec![1i64, 15, 27, 99, 4, 61, 8];
        let candidates = vec![
            vec![42i64],
            vec![42, 7, 2],
            vec![13, 2],
            vec![200, 201, 202, 203, 2],
        ];
        let embeds = model.embed(&Tensor::from_slice(&prompt).unsqueeze(0));
        let scores = score_continuations(&model, &embeds, &candidates).unwrap();
        assert_eq!(scores.len(), candidates.len(), "{name}");
        for (candidate, score) in candidates.iter().zip(&scores) {
            let expected = alone(&model, &prompt, candidate);
            assert!(
                (score - expected).abs() < 1e-4,
                "{name} {candidate:?}: {score} vs {expected}"
            );
        }
        // The chain rule: a candidate that extends another scores the
        // other's log-prob plus its extension's given the longer prefix.
        let prefix: Vec<i64> = prompt.iter().copied().chain([42]).collect();
        let extension = alone(&model, &prefix, &[7, 2]);
        assert!(
            (scores[1] - (scores[0] + extension)).abs() < 1e-4,
            "{name}: {} vs {} + {extension}",
            scores[1],
            scores[0]
        );
        assert!(score_continuations(&model, &embeds, &[vec![]]).is_err());
    }
}

#[test]
fn a_left_padded_batch_of_prompts_scores_as_each_prompt_alone() {
    let _guard = tch::no_grad_guard();
    let (model, _vs) =
        Llama::from_pretrained(&fixture("llama-gqa-theta"), Device::Cpu, Kind::Float).unwrap();
    let prompts = [vec![1i64, 15, 27, 99, 4, 61, 8], vec![1i64, 300, 5]];
    let candidates = vec![vec![42i64, 2], vec![13], vec![200, 201, 202, 2]];
    let longest = 7;
    let mut ids = Vec::new();
    let mut mask = Vec::new();
    for p in &prompts {
        let pad = longest - p.len();
        ids.extend(std::iter::repeat_n(0, pad).chain(p.iter().copied()));
        mask.extend(std::iter::repeat_n(false, pad).chain(std::iter::repeat_n(true, p.len())));
    }
    let ids = Tensor::from_slice(&ids).view([2, longest as i64]);
    let mask = Tensor::from_slice(&mask).view([2, longest as i64]);
    let scores = rgpt_llm::scoring::score_continuations_batch(
        &model,
        &model.embed(&ids),
        &mask,
        &candidates,
    )
    .unwrap();
    for (prompt, row) in prompts.iter().zip(&scores) {
        for (candidate, score) in candidates.iter().zip(row) {
            let expected = alone(&model, prompt, candidate);
            assert!(
                (score - expected).abs() < 1e-4,
                "{prompt:?} {candidate:?}: {score} vs {expected}"
            );
        }
    }
}
