//! Shared helpers for the rgpt-llm integration tests.
#![allow(dead_code)]
use std::path::PathBuf;

use serde::Deserialize;

/// The committed fixtures (see scripts/gen_fixtures.py).
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(name)
}

pub const MODEL_FIXTURES: [&str; 5] = [
    "llama-mha-tied",
    "llama-gqa-theta",
    "llama-rope-llama3",
    "llama-rope-linear",
    "llama-sharded-bin",
];

#[derive(Debug, Deserialize)]
pub struct Expected {
    pub produced_by: String,
    pub cases: Vec<Case>,
}

#[derive(Debug, Deserialize)]
pub struct Case {
    pub prompt: String,
    pub prompt_ids: Vec<i64>,
    pub greedy_tokens: Vec<i64>,
    pub top_logprobs: Vec<Vec<TopLogprob>>,
    pub last_hidden_state: Vec<Vec<f32>>,
}

#[derive(Debug, Deserialize)]
pub struct TopLogprob {
    pub id: i64,
    pub logprob: f32,
}

pub fn expected(name: &str) -> Expected {
    let path = fixture(name).join("expected.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Final-normed hidden states of `ids` in one uncached pass: [seq, hidden].
pub fn hidden_states(model: &rgpt_llm::Llama, ids: &[i64]) -> tch::Tensor {
    let ids = tch::Tensor::from_slice(ids).unsqueeze(0);
    let mut cache = model.new_cache(1, ids.size()[1]);
    model
        .forward_embeds(&model.embed(&ids), None, &mut cache)
        .unwrap()
        .squeeze_dim(0)
}

impl Case {
    /// transformers' last hidden state, [seq, hidden] f32.
    pub fn reference_hidden(&self) -> tch::Tensor {
        let rows: Vec<f32> = self.last_hidden_state.concat();
        tch::Tensor::from_slice(&rows).view([self.prompt_ids.len() as i64, -1])
    }
}

/// ||a - b|| / ||b||, computed in f32.
pub fn relative_error(a: &tch::Tensor, b: &tch::Tensor) -> f64 {
    let a = a.to_kind(tch::Kind::Float);
    f64::try_from((&a - b).norm() / b.norm()).unwrap()
}
