//! Continuous batching (as vLLM and TGI serve): each sequence has its own
//! cache, sampling, budget and stopping, sequences join the running batch
//! between decode steps and leave it as soon as they finish. A step runs
//! the decoder once over every sequence in the batch
//! ([`Llama::forward_rows`]); a sequence's tokens are those it would get
//! alone, up to the rounding of batched matrix products.
use rand_chacha::ChaCha8Rng;
use tch::{Kind, Tensor};

use crate::generation::{
    next_tokens, seen_tokens, sequence_rngs, FinishReason, GenerationConfig, SequenceOutput,
};
use crate::{KvCache, Llama, LlmError, Tokenizer};

/// One sequence of a continuous batch.
#[derive(Debug)]
pub struct Sequence {
    cache: KvCache,
    config: GenerationConfig,
    rng: ChaCha8Rng,
    /// [1, vocab] bool, with a repetition penalty: the tokens seen so far.
    seen: Option<Tensor>,
    output: SequenceOutput,
    budget: usize,
    finished: bool,
}

impl Sequence {
    /// Reads the prompt `embeds` [1, seq, hidden] into a cache of its own
    /// and chooses the first token, returned with the sequence. `history`
    /// holds the prompt ids the repetition penalty sees, as in
    /// [`crate::generate_from_embeds`], whose checks and budget it shares.
    pub fn start(
        model: &Llama,
        embeds: &Tensor,
        history: &[i64],
        config: GenerationConfig,
        tokenizer: Option<&Tokenizer>,
    ) -> Result<(Sequence, i64), LlmError> {
        config.validate(tokenizer)?;
        let _guard = tch::no_grad_guard();
        let (batch, prompt_len, _) = embeds.size3()?;
        if batch != 1 {
            return Err(LlmError::InvalidRequest(format!(
                "a sequence starts from one prompt, not {batch}"
            )));
        }
        let budget = config.budget(prompt_len as usize, model)?;
        let device = model.device();
        let seen = (config.repetition_penalty != 1.0)
            .then(|| seen_tokens(model, std::slice::from_ref(&history.to_vec()), device))
            .transpose()?;
        let mut cache = model.new_cache(1, prompt_len + budget as i64);
        let mask = Tensor::ones([1, prompt_len], (Kind::Bool, device));
        let hidden = model.forward_embeds(embeds, Some(&mask), &mut cache)?;
        let logits = model.logits(&hidden.select(1, -1));
        let mut sequence = Sequence {
            cache,
            rng: sequence_rngs(config.seed, 1).remove(0),
            config,
            seen,
            output: SequenceOutput::new(),
            budget,
            finished: false,
        };
        let id = sequence.choose(&logits, tokenizer)?;
        Ok((sequence, id))
    }

    /// What it has generated so far, and why it stopped once finished.
    pub fn output(&self) -> &SequenceOutput {
        &self.output
    }

    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Ends the sequence now ([`FinishReason::Cancelled`]), e.g. because
    /// its client has gone.
    pub fn cancel(&mut self) {
        if !self.finished {
            self.output.finish_reason = FinishReason::Cancelled;
            self.finished = true;
        }
    }

    /// Chooses the next token from this sequence's `logits` [1, vocab].
    fn choose(&mut self, logits: &Tensor, tokenizer: Option<&Tokenizer>) -> Result<i64, LlmError> {
        let (_, ids, top) = next_tokens(
            logits,
            self.seen.as_ref(),
            &self.config,
            std::slice::from_mut(&mut self.rng),
        )?;
        let id = ids[0];
        let top = top.and_then(|mut t| t.pop());
        self.finished = self.output.accept(id, top, &self.config, tokenizer)?
            || self.output.token_ids.len() >= self.budget;
        if self.config.is_cancelled() {
            self.cancel();
        }
        if let Some(seen) = &mut self.seen {
            let _ =
                seen.f_index_fill_(1, &Tensor::from_slice(&[id]).to_device(seen.device()), 1)?;
        }
        Ok(id)
    }
}

/// One decode step for every sequence of `batch` that has not finished:
/// each is fed its last token and chooses its next, returned in the
/// batch's order (`None` for a sequence that had finished).
pub fn decode_step(
    model: &Llama,
    batch: &mut [&mut Sequence],
    tokenizer: Option<&Tokenizer>,
) -> Result<Vec<Option<i64>>, LlmError> {
    let _guard = tch::no_grad_guard();
    let rows: Vec<usize> = (0..batch.len()).filter(|&i| !batch[i].finished).collect();
    let mut next = vec![None; batch.len()];
    if rows.is_empty() {
        return Ok(next);
    }
    let fed: Vec<i64> = rows
        .iter()
        .map(|&i| {
            *batch[i]
                .output
                .token_ids
                .last()
                .expect("a started sequence has a token")
        })
        .collect();
    let logits = {
        let mut caches: Vec<&mut KvCache> = batch
            .iter_mut()
            .filter(|s| !s.finished)
            .map(|s| &mut s.cache)
            .collect();
        let _span = tracing::trace_span!("decode_step", rows = rows.len()).entered();
        model.forward_rows(&fed, &mut caches)?
    };
    for (row, &i) in rows.iter().enumerate() {
        let logits = logits.narrow(0, row as i64, 1);
        next[i] = Some(batch[i].choose(&logits, tokenizer)?);
    }
    Ok(next)
}
