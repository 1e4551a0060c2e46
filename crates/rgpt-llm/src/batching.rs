//! Continuous batching (as vLLM and TGI serve): each sequence has its own
//! sampling, budget and stopping; sequences join the running batch
//! between decode steps and leave it as soon as they finish. A sequence's
//! prompt is read alone, exactly as [`crate::generate_from_embeds`] reads
//! it; a step then runs the decoder once for every sequence in the batch
//! over one [`SlotCache`] ([`Llama::forward_slots`]). A sequence's tokens
//! are those it gets alone, up to the rounding of batched matrix products
//! and of attention over its slot.
use rand_chacha::ChaCha8Rng;
use tch::{Kind, Tensor};

use crate::generation::{
    next_tokens, seen_tokens, sequence_rngs, FinishReason, GenerationConfig, SequenceOutput,
};
use crate::kv_cache::SlotCache;
use crate::{Llama, LlmError, Tokenizer};

/// A sequence's place in a [`DecodeBatch`].
pub type Slot = usize;

/// One sequence of a continuous batch.
#[derive(Debug)]
struct Sequence {
    config: GenerationConfig,
    rng: ChaCha8Rng,
    /// [1, vocab] bool, with a repetition penalty: the tokens seen so far.
    seen: Option<Tensor>,
    output: SequenceOutput,
    budget: usize,
    finished: bool,
}

/// The running batch: up to a fixed number of sequences, each in a slot.
#[derive(Debug)]
pub struct DecodeBatch {
    cache: SlotCache,
    sequences: Vec<Option<Sequence>>,
}

impl DecodeBatch {
    /// A batch of up to `slots` sequences for `model`.
    pub fn new(model: &Llama, slots: usize) -> Self {
        DecodeBatch {
            cache: SlotCache::new(model.config(), slots as i64, model.kind(), model.device()),
            sequences: (0..slots).map(|_| None).collect(),
        }
    }

    /// Sequences in the batch, finished or not.
    pub fn len(&self) -> usize {
        self.sequences.iter().flatten().count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether another sequence can join.
    pub fn has_room(&self) -> bool {
        self.sequences.iter().any(Option::is_none)
    }

    /// Reads the prompt `embeds` [1, seq, hidden] and chooses the first
    /// token: the new sequence's slot and that token. `history` holds the
    /// prompt ids the repetition penalty sees, as in
    /// [`crate::generate_from_embeds`], whose checks and budget it shares.
    pub fn join(
        &mut self,
        model: &Llama,
        embeds: &Tensor,
        history: &[i64],
        config: GenerationConfig,
        tokenizer: Option<&Tokenizer>,
    ) -> Result<(Slot, i64), LlmError> {
        config.validate(tokenizer)?;
        let _guard = tch::no_grad_guard();
        let slot = self
            .sequences
            .iter()
            .position(Option::is_none)
            .ok_or_else(|| LlmError::InvalidRequest("the batch is full".into()))?;
        let (batch, prompt_len, _) = embeds.size3()?;
        if batch != 1 {
            return Err(LlmError::InvalidRequest(format!(
                "a sequence joins with one prompt, not {batch}"
            )));
        }
        let budget = config.budget(prompt_len as usize, model)?;
        let device = model.device();
        let seen = (config.repetition_penalty != 1.0)
            .then(|| seen_tokens(model, std::slice::from_ref(&history.to_vec()), device))
            .transpose()?;
        let mut prompt = model.new_cache(1, prompt_len);
        let mask = Tensor::ones([1, prompt_len], (Kind::Bool, device));
        let hidden = model.forward_embeds(embeds, Some(&mask), &mut prompt)?;
        let logits = model.logits(&hidden.select(1, -1));
        // The last generated token is fed but never written.
        self.cache.reserve(prompt_len + budget as i64 - 1);
        self.cache.load(slot, &prompt)?;
        let mut sequence = Sequence {
            rng: sequence_rngs(config.seed, 1).remove(0),
            config,
            seen,
            output: SequenceOutput::new(),
            budget,
            finished: false,
        };
        let id = sequence.choose(&logits, tokenizer)?;
        self.sequences[slot] = Some(sequence);
        Ok((slot, id))
    }

    /// One decode step for every unfinished sequence: each is fed its last
    /// token and chooses its next. Returns the slots that stepped and
    /// their new tokens.
    pub fn step(
        &mut self,
        model: &Llama,
        tokenizer: Option<&Tokenizer>,
    ) -> Result<Vec<(Slot, i64)>, LlmError> {
        let _guard = tch::no_grad_guard();
        let (slots, fed): (Vec<Slot>, Vec<i64>) = self
            .sequences
            .iter()
            .enumerate()
            .filter_map(|(slot, s)| {
                let s = s.as_ref().filter(|s| !s.finished)?;
                Some((slot, *s.output.token_ids.last()?))
            })
            .unzip();
        if slots.is_empty() {
            return Ok(Vec::new());
        }
        let logits = {
            let _span = tracing::trace_span!("decode_step", rows = slots.len()).entered();
            model.forward_slots(&fed, &slots, &mut self.cache)?
        };
        let mut next = Vec::with_capacity(slots.len());
        for (row, &slot) in slots.iter().enumerate() {
            let sequence = self.sequences[slot]
                .as_mut()
                .expect("a stepped slot is taken");
            let id = sequence.choose(&logits.narrow(0, row as i64, 1), tokenizer)?;
            next.push((slot, id));
        }
        Ok(next)
    }

    /// What the sequence in `slot` has generated so far, and why it
    /// stopped once finished.
    pub fn output(&self, slot: Slot) -> Option<&SequenceOutput> {
        Some(&self.sequences.get(slot)?.as_ref()?.output)
    }

    pub fn is_finished(&self, slot: Slot) -> bool {
        self.sequences
            .get(slot)
            .and_then(Option::as_ref)
            .is_some_and(|s| s.finished)
    }

    /// Ends the sequence in `slot` now ([`FinishReason::Cancelled`]), e.g.
    /// because its client has gone; it stays until it leaves.
    pub fn cancel(&mut self, slot: Slot) {
        if let Some(sequence) = self.sequences.get_mut(slot).and_then(Option::as_mut) {
            sequence.cancel();
        }
    }

    /// Takes the sequence in `slot` out of the batch, freeing the slot.
    pub fn leave(&mut self, slot: Slot) -> Option<SequenceOutput> {
        let sequence = self.sequences.get_mut(slot)?.take()?;
        self.cache.release(slot);
        Some(sequence.output)
    }

    /// Takes every sequence out (after a failed step).
    pub fn clear(&mut self) -> Vec<Slot> {
        let slots: Vec<Slot> = (0..self.sequences.len())
            .filter(|&s| self.sequences[s].is_some())
            .collect();
        for &slot in &slots {
            self.leave(slot);
        }
        slots
    }
}

impl Sequence {
    fn cancel(&mut self) {
        if !self.finished {
            self.output.finish_reason = FinishReason::Cancelled;
            self.finished = true;
        }
    }

    /// Chooses the next token from this sequence's `logits` [1, vocab].
    fn choose(&mut self, logits: &Tensor, tokenizer: Option<&Tokenizer>) -> Result<i64, LlmError> {
        let next = next_tokens(
            logits,
            self.seen.as_ref(),
            &self.config,
            std::slice::from_mut(&mut self.rng),
        )?;
        let id = next.ids[0];
        let top = next.top.and_then(|mut t| t.pop());
        let logprob = next.chosen.map(|c| c[0]);
        self.finished = self
            .output
            .accept(id, top, logprob, &self.config, tokenizer)?
            || self.output.token_ids.len() >= self.budget;
        if self.config.is_cancelled() {
            self.cancel();
        }
        if let Some(seen) = &mut self.seen {
            let index = Tensor::from_slice(&[id]).to_device(seen.device());
            let _ = seen.f_index_fill_(1, &index, 1)?;
        }
        Ok(id)
    }
}
