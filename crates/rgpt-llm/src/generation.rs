//! Text generation over the decoder, following transformers' `generate`:
//! repetition penalty, then temperature, top-k and top-p (the order of its
//! logits processors and warpers), greedy or sampled choice (each sequence
//! with its own seeded generator, as vLLM gives each request), and stopping
//! on EOS, stop strings or the token budget. Batches of prompts of different
//! lengths are left-padded; finished sequences keep stepping with the pad id
//! until all are done, as there.
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use rand::{Rng as _, SeedableRng as _};
use rand_chacha::ChaCha8Rng;
use tch::{Kind, Tensor};

use crate::llama::Llama;
use crate::tokenizer::Tokenizer;
use crate::LlmError;

/// How the next token is chosen.
#[derive(Debug, Clone, PartialEq)]
pub enum Sampling {
    Greedy,
    Sample {
        temperature: f64,
        top_k: Option<i64>,
        top_p: Option<f64>,
    },
}

#[derive(Debug, Clone)]
pub struct GenerationConfig {
    pub max_new_tokens: usize,
    pub sampling: Sampling,
    /// 1.0 disables it; >1 discourages tokens already in prompt or output.
    pub repetition_penalty: f64,
    /// Seeds each sequence's own generator, for reproducible draws that do
    /// not depend on the rest of the batch ([`sequence_rngs`]).
    pub seed: Option<u64>,
    pub eos_token_ids: Vec<i64>,
    pub stop_strings: Vec<String>,
    pub ignore_eos: bool,
    /// How many of the most likely tokens to report per step (0: none).
    pub top_logprobs: usize,
    /// Report the chosen token's log-probability at each step.
    pub logprobs: bool,
    /// Fed for finished sequences and used to left-pad prompts.
    pub pad_token_id: i64,
    /// Once set (by another thread: a server whose client has gone),
    /// generation ends after the step in progress, each unfinished
    /// sequence with [`FinishReason::Cancelled`].
    pub cancel: Option<Arc<AtomicBool>>,
}

impl Default for GenerationConfig {
    fn default() -> Self {
        GenerationConfig {
            max_new_tokens: 128,
            sampling: Sampling::Greedy,
            repetition_penalty: 1.0,
            seed: None,
            eos_token_ids: Vec::new(),
            stop_strings: Vec::new(),
            ignore_eos: false,
            top_logprobs: 0,
            logprobs: false,
            pad_token_id: 0,
            cancel: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct TokenLogprob {
    pub id: i64,
    pub logprob: f32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    Eos,
    StopString,
    Length,
    /// [`GenerationConfig::cancel`] was set.
    Cancelled,
}

#[derive(Debug, Clone)]
pub struct SequenceOutput {
    /// Generated ids, the EOS that ended it included (as transformers returns).
    pub token_ids: Vec<i64>,
    /// Per step, the `top_logprobs` most likely tokens under the model
    /// (log-softmax of the raw logits, before any sampling transform).
    pub top_logprobs: Vec<Vec<TokenLogprob>>,
    /// With [`GenerationConfig::logprobs`], each chosen token's
    /// log-probability under the model (of the raw logits, likewise).
    pub token_logprobs: Vec<f32>,
    pub finish_reason: FinishReason,
}

#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Timing {
    pub prefill_ms: f64,
    /// Decode steps per second after the first token (each step yields one
    /// token per sequence).
    pub decode_tokens_per_s: f64,
}

#[derive(Debug, Clone)]
pub struct GenerationOutput {
    pub sequences: Vec<SequenceOutput>,
    pub timing: Timing,
}

impl GenerationConfig {
    /// Defaults with a model's stop and pad ids: EOS from the config (the
    /// tokenizer's `</s>` when the config names none), pad from the config
    /// or 0.
    pub fn for_model(config: &crate::LlamaConfig, tokenizer: &Tokenizer) -> Self {
        let mut eos_token_ids = config.eos_token_ids();
        if eos_token_ids.is_empty() {
            eos_token_ids.extend(tokenizer.token_to_id("</s>"));
        }
        let pad_token_id = config
            .pad_token_id
            .as_ref()
            .and_then(|p| p.to_vec().first().copied())
            .unwrap_or(0);
        GenerationConfig {
            eos_token_ids,
            pad_token_id,
            ..GenerationConfig::default()
        }
    }

    /// How many tokens a sequence after `prompt_len` may generate: the
    /// request's budget, cut at the model's context length rather than
    /// failing (at least one).
    pub(crate) fn budget(&self, prompt_len: usize, model: &Llama) -> Result<usize, LlmError> {
        let max_positions = model.config().max_position_embeddings;
        if prompt_len > max_positions {
            return Err(LlmError::PromptTooLong {
                prompt_tokens: prompt_len,
                max_positions,
            });
        }
        Ok(self.max_new_tokens.min(max_positions - prompt_len).max(1))
    }

    pub(crate) fn validate(&self, tokenizer: Option<&Tokenizer>) -> Result<(), LlmError> {
        let invalid = |m: &str| Err(LlmError::InvalidRequest(m.to_string()));
        if self.max_new_tokens == 0 {
            return invalid("max_new_tokens must be at least 1");
        }
        if let Sampling::Sample {
            temperature,
            top_k,
            top_p,
        } = self.sampling
        {
            if !(temperature > 0.0 && temperature.is_finite()) {
                return invalid(
                    "temperature must be a positive number (use greedy decoding for 0)",
                );
            }
            if top_k.is_some_and(|k| k < 1) {
                return invalid("top_k must be at least 1");
            }
            if top_p.is_some_and(|p| !(p > 0.0 && p <= 1.0)) {
                return invalid("top_p must be in (0, 1]");
            }
        }
        if !(self.repetition_penalty > 0.0 && self.repetition_penalty.is_finite()) {
            return invalid("repetition_penalty must be a positive number");
        }
        if !self.stop_strings.is_empty() && tokenizer.is_none() {
            return invalid("stop strings need a tokenizer to decode the output");
        }
        Ok(())
    }
}

/// Generates from token-id prompts (each a non-empty list; BOS included if
/// wanted). `on_token(sequence, id)` is called for every generated token as
/// soon as it is chosen.
pub fn generate(
    model: &Llama,
    prompts: &[Vec<i64>],
    config: &GenerationConfig,
    tokenizer: Option<&Tokenizer>,
    on_token: &mut dyn FnMut(usize, i64),
) -> Result<GenerationOutput, LlmError> {
    if prompts.is_empty() || prompts.iter().any(Vec::is_empty) {
        return Err(LlmError::InvalidRequest("the prompt is empty".into()));
    }
    let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
    let mut ids = Vec::with_capacity(prompts.len() * longest);
    let mut mask = Vec::with_capacity(prompts.len() * longest);
    for prompt in prompts {
        let pad = longest - prompt.len();
        ids.extend(std::iter::repeat_n(config.pad_token_id, pad).chain(prompt.iter().copied()));
        mask.extend(std::iter::repeat_n(false, pad).chain(std::iter::repeat_n(true, prompt.len())));
    }
    let shape = [prompts.len() as i64, longest as i64];
    let device = model.device();
    let ids = Tensor::from_slice(&ids).view(shape).to_device(device);
    let mask = Tensor::from_slice(&mask).view(shape).to_device(device);
    let embeds = model.embed(&ids);
    generate_from_embeds(model, &embeds, &mask, prompts, config, tokenizer, on_token)
}

/// Generates after prompt embeddings `embeds` [batch, seq, hidden] with
/// `mask` [batch, seq] (left padding false). `history` holds, per sequence,
/// the prompt ids the repetition penalty should see (transformers sees none
/// when it is given embeddings only: pass empty lists for that).
pub fn generate_from_embeds(
    model: &Llama,
    embeds: &Tensor,
    mask: &Tensor,
    history: &[Vec<i64>],
    config: &GenerationConfig,
    tokenizer: Option<&Tokenizer>,
    on_token: &mut dyn FnMut(usize, i64),
) -> Result<GenerationOutput, LlmError> {
    config.validate(tokenizer)?;
    let _guard = tch::no_grad_guard();
    let (batch, prompt_len, _) = embeds.size3()?;
    let budget = config.budget(prompt_len as usize, model)?;
    let mut rngs = sequence_rngs(config.seed, batch as usize);
    let device = model.device();
    let mut seen = (config.repetition_penalty != 1.0)
        .then(|| seen_tokens(model, history, device))
        .transpose()?;

    let started = Instant::now();
    let mut cache = model.new_cache(batch, prompt_len + budget as i64);
    let _prefill = tracing::debug_span!("prefill", batch, prompt_len).entered();
    let hidden = model.forward_embeds(embeds, Some(mask), &mut cache)?;
    let mut logits = model.logits(&hidden.select(1, -1));
    drop(_prefill);
    let mut prefill_ms = None;
    let mut decode_started = started;
    let mut decode_steps = 0usize;

    let mut outputs: Vec<SequenceOutput> = (0..batch).map(|_| SequenceOutput::new()).collect();
    let mut finished = vec![false; batch as usize];
    for step in 0..budget {
        let NextTokens {
            next,
            ids: next_ids,
            mut top,
            chosen,
        } = next_tokens(&logits, seen.as_ref(), config, &mut rngs)?;
        if prefill_ms.is_none() {
            prefill_ms = Some(started.elapsed().as_secs_f64() * 1e3);
            decode_started = Instant::now();
        }
        for (row, &id) in next_ids.iter().enumerate() {
            if finished[row] {
                continue;
            }
            let top = top.as_mut().map(|t| std::mem::take(&mut t[row]));
            let chosen = chosen.as_ref().map(|c| c[row]);
            finished[row] = outputs[row].accept(id, top, chosen, config, tokenizer)?;
            on_token(row, id);
        }
        if config.is_cancelled() {
            for (out, done) in outputs.iter_mut().zip(&mut finished) {
                if !*done {
                    out.finish_reason = FinishReason::Cancelled;
                    *done = true;
                }
            }
        }
        if step + 1 == budget || finished.iter().all(|&f| f) {
            break;
        }
        let fed = if finished.iter().any(|&f| f) {
            let done = Tensor::from_slice(&finished).to_device(device);
            next.masked_fill(&done, config.pad_token_id)
        } else {
            next
        }
        .view([batch, 1]);
        if let Some(seen) = seen.as_mut() {
            let _ = seen.scatter_(1, &fed, &Tensor::ones([batch, 1], (Kind::Bool, device)));
        }
        let _decode = tracing::trace_span!("decode_step", step).entered();
        logits = model.forward(&fed, None, &mut cache)?;
        decode_steps += 1;
    }
    let decode_s = decode_started.elapsed().as_secs_f64();
    Ok(GenerationOutput {
        sequences: outputs,
        timing: Timing {
            prefill_ms: prefill_ms.unwrap_or(0.0),
            decode_tokens_per_s: if decode_steps > 0 && decode_s > 0.0 {
                decode_steps as f64 / decode_s
            } else {
                0.0
            },
        },
    })
}

impl SequenceOutput {
    pub(crate) fn new() -> Self {
        SequenceOutput {
            token_ids: Vec::new(),
            top_logprobs: Vec::new(),
            token_logprobs: Vec::new(),
            finish_reason: FinishReason::Length,
        }
    }

    /// Records the chosen `id` (with its step's `top` log-probs and its
    /// own) and says whether it ends the sequence: EOS unless ignored, or a
    /// stop string in the decoded output.
    pub(crate) fn accept(
        &mut self,
        id: i64,
        top: Option<Vec<TokenLogprob>>,
        logprob: Option<f32>,
        config: &GenerationConfig,
        tokenizer: Option<&Tokenizer>,
    ) -> Result<bool, LlmError> {
        self.token_ids.push(id);
        self.top_logprobs.extend(top);
        self.token_logprobs.extend(logprob);
        if !config.ignore_eos && config.eos_token_ids.contains(&id) {
            self.finish_reason = FinishReason::Eos;
            return Ok(true);
        }
        if let Some(tokenizer) = tokenizer.filter(|_| !config.stop_strings.is_empty()) {
            let text = tokenizer.decode(&self.token_ids, false)?;
            if config
                .stop_strings
                .iter()
                .any(|s| text.contains(s.as_str()))
            {
                self.finish_reason = FinishReason::StopString;
                return Ok(true);
            }
        }
        Ok(false)
    }
}

impl GenerationConfig {
    /// Whether rows generated with `self` and `other` can choose their
    /// tokens in one pass: the same sampling and reports, and no
    /// repetition penalty (which reads each row's own history).
    pub(crate) fn chooses_like(&self, other: &GenerationConfig) -> bool {
        self.repetition_penalty == 1.0
            && other.repetition_penalty == 1.0
            && self.sampling == other.sampling
            && self.top_logprobs == other.top_logprobs
            && self.logprobs == other.logprobs
    }

    /// Whether [`GenerationConfig::cancel`] has been set.
    pub(crate) fn is_cancelled(&self) -> bool {
        self.cancel
            .as_ref()
            .is_some_and(|c| c.load(Ordering::Relaxed))
    }
}

/// One generator per sequence, so a sequence's draws never depend on what
/// else is in its batch: with a seed, sequence `row` reads stream `row` of
/// ChaCha8 seeded with it (a one-sequence run and the first sequence of a
/// batch draw alike); without, each is seeded from the OS.
pub(crate) fn sequence_rngs(seed: Option<u64>, rows: usize) -> Vec<ChaCha8Rng> {
    (0..rows)
        .map(|row| match seed {
            Some(seed) => {
                let mut rng = ChaCha8Rng::seed_from_u64(seed);
                rng.set_stream(row as u64);
                rng
            }
            None => ChaCha8Rng::from_os_rng(),
        })
        .collect()
}

/// [batch, vocab] bool: the tokens of each history, which the repetition
/// penalty discourages.
pub(crate) fn seen_tokens(
    model: &Llama,
    history: &[Vec<i64>],
    device: tch::Device,
) -> Result<Tensor, LlmError> {
    let vocab = model.config().vocab_size as i64;
    let seen = Tensor::zeros([history.len() as i64, vocab], (Kind::Bool, device));
    for (row, ids) in history.iter().enumerate() {
        if !ids.is_empty() {
            let index = Tensor::from_slice(ids).to_device(device);
            let _ = seen.get(row as i64).f_index_fill_(0, &index, 1)?;
        }
    }
    Ok(seen)
}

/// Each row's next token from `logits` [rows, vocab].
pub(crate) struct NextTokens {
    /// [rows] on the device.
    pub next: Tensor,
    /// The same, read back.
    pub ids: Vec<i64>,
    /// Each row's `top_logprobs` most likely tokens, when asked for.
    pub top: Option<Vec<Vec<TokenLogprob>>>,
    /// Each row's chosen token's log-probability, when asked for.
    pub chosen: Option<Vec<f32>>,
}

/// Chooses each row's next token; row `r` draws from `rngs[r]`.
pub(crate) fn next_tokens(
    logits: &Tensor,
    seen: Option<&Tensor>,
    config: &GenerationConfig,
    rngs: &mut [ChaCha8Rng],
) -> Result<NextTokens, LlmError> {
    let top = match config.top_logprobs {
        0 => None,
        k => Some(top_logprobs(logits, k as i64)?),
    };
    let scores = match seen {
        Some(seen) => penalize_repetition(logits, seen, config.repetition_penalty),
        None => logits.shallow_clone(),
    };
    let next = choose(&scores, &config.sampling, rngs);
    let ids = Vec::try_from(&next)?;
    let chosen = if config.logprobs {
        let logprobs = logits
            .log_softmax(-1, Kind::Float)
            .gather(1, &next.unsqueeze(1), false)
            .squeeze_dim(1);
        Some(Vec::try_from(&logprobs.to_device(tch::Device::Cpu))?)
    } else {
        None
    };
    Ok(NextTokens {
        next,
        ids,
        top,
        chosen,
    })
}

/// transformers' `RepetitionPenaltyLogitsProcessor`: divide positive and
/// multiply negative logits of already-seen tokens by the penalty.
fn penalize_repetition(logits: &Tensor, seen: &Tensor, penalty: f64) -> Tensor {
    let penalized = (logits / penalty).where_self(&logits.ge(0.0), &(logits * penalty));
    penalized.where_self(seen, logits)
}

fn choose(scores: &Tensor, sampling: &Sampling, rngs: &mut [ChaCha8Rng]) -> Tensor {
    match *sampling {
        Sampling::Greedy => scores.argmax(-1, false),
        Sampling::Sample {
            temperature,
            top_k,
            top_p,
        } => {
            let mut scores = scores / temperature;
            if let Some(k) = top_k {
                let k = k.min(scores.size()[1]);
                let kth = scores.topk(k, -1, true, true).0.narrow(1, k - 1, 1);
                scores = scores.masked_fill(&scores.lt_tensor(&kth), f64::NEG_INFINITY);
            }
            if let Some(p) = top_p.filter(|&p| p < 1.0) {
                // TopPLogitsWarper: drop the least likely tokens whose total
                // probability stays within 1 - p, always keeping the top one.
                let (sorted, indices) = scores.sort(-1, false);
                let cumulative = sorted.softmax(-1, Kind::Float).cumsum(-1, Kind::Float);
                let remove = cumulative.le(1.0 - p);
                let last = remove.size()[1] - 1;
                let _ = remove.narrow(1, last, 1).fill_(0);
                let remove = remove.scatter(1, &indices, &remove);
                scores = scores.masked_fill(&remove, f64::NEG_INFINITY);
            }
            // A draw by inverse CDF with each row's own uniform number:
            // the first token whose cumulative probability exceeds it
            // (a token of probability 0 never is).
            let cdf = scores.softmax(-1, Kind::Float).cumsum(-1, Kind::Float);
            let vocab = cdf.size()[1];
            let uniform: Vec<f32> = rngs.iter_mut().map(|r| r.random::<f32>()).collect();
            let uniform = Tensor::from_slice(&uniform)
                .to_device(cdf.device())
                .view([-1, 1])
                * cdf.narrow(1, vocab - 1, 1);
            uniform
                .searchsorted(&cdf, false, true, "right", None::<Tensor>)
                .clamp_max(vocab - 1)
                .squeeze_dim(1)
        }
    }
}

fn top_logprobs(logits: &Tensor, k: i64) -> Result<Vec<Vec<TokenLogprob>>, LlmError> {
    let k = k.min(logits.size()[1]);
    let (values, indices) = logits.log_softmax(-1, Kind::Float).topk(k, -1, true, true);
    let values: Vec<Vec<f32>> = Vec::try_from(&values.to_device(tch::Device::Cpu))?;
    let indices: Vec<Vec<i64>> = Vec::try_from(&indices.to_device(tch::Device::Cpu))?;
    Ok(values
        .into_iter()
        .zip(indices)
        .map(|(v, i)| {
            i.into_iter()
                .zip(v)
                .map(|(id, logprob)| TokenLogprob { id, logprob })
                .collect()
        })
        .collect())
}
