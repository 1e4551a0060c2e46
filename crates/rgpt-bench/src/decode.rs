//! Decoding with the KV cache, as `rgpt generate` runs it: a prompt read
//! in one prefill, then one token per sequence per step, each step's
//! tokens read back to the host (the one synchronisation a real loop has).
//! A decode step at small batch is bound by memory traffic: it must read
//! every weight once (the embedding table aside, unless it is the LM head
//! too) and the keys and values of every cached token, so the bound is
//! the measured bandwidth over those bytes.
use serde::Serialize;
use tch::{Device, Kind, Tensor};

use crate::bandwidth::Bandwidth;
use crate::timing::{median, synchronize};
use crate::BenchError;
use rgpt_llm::Llama;

#[derive(Debug, Clone)]
pub struct DecodeOptions {
    pub batch: i64,
    pub prompt_tokens: i64,
    pub new_tokens: i64,
    /// Timed runs, after one untimed.
    pub runs: usize,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        DecodeOptions {
            batch: 1,
            prompt_tokens: 128,
            new_tokens: 64,
            runs: 3,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct DecodeReport {
    pub batch: i64,
    pub prompt_tokens: i64,
    pub new_tokens: i64,
    /// Median over runs of the prefill's time.
    pub prefill_ms: f64,
    pub prefill_tokens_per_s: f64,
    /// Median over runs of the mean decode step.
    pub decode_ms_per_step: f64,
    /// Generated tokens per second: `batch` per step.
    pub decode_tokens_per_s: f64,
    /// Bytes of weights a step reads.
    pub weight_bytes: u64,
    /// Bytes of cached keys and values a step reads, on average.
    pub kv_bytes_per_step: u64,
    pub bandwidth_bytes_per_s: f64,
    /// Tokens per second if a step took exactly its bytes over the bandwidth.
    pub bound_tokens_per_s: f64,
    /// `decode_tokens_per_s / bound_tokens_per_s`.
    pub bound_fraction: f64,
}

/// Bytes a decode step of `batch` sequences reads from `model`'s weights.
pub fn weight_bytes(model: &Llama, vs: &tch::nn::VarStore, batch: i64) -> u64 {
    let bytes = |t: &Tensor| t.numel() as u64 * t.kind().elt_size_in_bytes() as u64;
    let all: u64 = vs.variables().values().map(bytes).sum();
    let config = model.config();
    if config.tie_word_embeddings {
        all
    } else {
        // The lookup reads one row per sequence, not the table.
        let table = (config.vocab_size * config.hidden_size) as u64
            * model.kind().elt_size_in_bytes() as u64;
        all - table
            + (batch as u64 * config.hidden_size as u64 * model.kind().elt_size_in_bytes() as u64)
    }
}

/// Runs the decode benchmark on `model`.
pub fn run(
    model: &Llama,
    vs: &tch::nn::VarStore,
    options: &DecodeOptions,
    bandwidth: &Bandwidth,
) -> Result<DecodeReport, BenchError> {
    let DecodeOptions {
        batch,
        prompt_tokens,
        new_tokens,
        runs,
    } = *options;
    let config = model.config();
    if batch < 1 || prompt_tokens < 1 || new_tokens < 2 {
        return Err(BenchError::Invalid(
            "decode needs a batch and a prompt of at least 1 and at least 2 new tokens".into(),
        ));
    }
    if (prompt_tokens + new_tokens) as usize > config.max_position_embeddings {
        return Err(BenchError::Invalid(format!(
            "{prompt_tokens} prompt and {new_tokens} new tokens are over the model's {} positions",
            config.max_position_embeddings
        )));
    }
    let _guard = tch::no_grad_guard();
    let device = model.device();
    tch::manual_seed(1);
    let prompt = Tensor::f_randint(
        config.vocab_size as i64,
        [batch, prompt_tokens],
        (Kind::Int64, device),
    )?;
    let mut prefills = Vec::new();
    let mut steps = Vec::new();
    for run in 0..=runs {
        let mut cache = model.new_cache(batch, prompt_tokens + new_tokens);
        synchronize(device);
        let started = std::time::Instant::now();
        let logits = model.forward(&prompt, None, &mut cache)?;
        let mut next = logits.f_argmax(-1, false)?;
        let _: Vec<i64> = Vec::try_from(&next.to_device(Device::Cpu))?;
        let prefill = started.elapsed().as_secs_f64();
        let started = std::time::Instant::now();
        for _ in 1..new_tokens {
            let logits = model.forward(&next.f_view([batch, 1])?, None, &mut cache)?;
            next = logits.f_argmax(-1, false)?;
            let _: Vec<i64> = Vec::try_from(&next.to_device(Device::Cpu))?;
        }
        let step = started.elapsed().as_secs_f64() / (new_tokens - 1) as f64;
        if run > 0 {
            prefills.push(prefill);
            steps.push(step);
        }
    }
    let prefill = median(&prefills);
    let step = median(&steps);
    let weights = weight_bytes(model, vs, batch);
    // Step t (from 1) attends over prompt + t tokens.
    let mean_context = prompt_tokens as f64 + new_tokens as f64 / 2.0;
    let kv_per_token = 2
        * config.num_hidden_layers
        * config.num_key_value_heads()
        * config.head_dim()
        * model.kind().elt_size_in_bytes();
    let kv = (kv_per_token as f64 * mean_context * batch as f64) as u64;
    let tokens_per_s = batch as f64 / step;
    let bound = batch as f64 * bandwidth.bytes_per_s / (weights + kv) as f64;
    Ok(DecodeReport {
        batch,
        prompt_tokens,
        new_tokens,
        prefill_ms: prefill * 1e3,
        prefill_tokens_per_s: (batch * prompt_tokens) as f64 / prefill,
        decode_ms_per_step: step * 1e3,
        decode_tokens_per_s: tokens_per_s,
        weight_bytes: weights,
        kv_bytes_per_step: kv,
        bandwidth_bytes_per_s: bandwidth.bytes_per_s,
        bound_tokens_per_s: bound,
        bound_fraction: tokens_per_s / bound,
    })
}
