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
    TokenLogprob,
};
use crate::kv_cache::SlotCache;
use crate::{Llama, LlmError, Tokenizer};

/// A sequence's place in a [`DecodeBatch`].
pub type Slot = usize;

/// A prompt joining the batch: its embeddings [1, seq, hidden], the ids
/// the repetition penalty sees, and its generation settings.
pub struct Prompt {
    pub embeds: Tensor,
    pub history: Vec<i64>,
    pub config: GenerationConfig,
}

impl Prompt {
    /// Its length and token budget, once its settings pass
    /// [`crate::generate_from_embeds`]'s checks.
    fn check(
        &self,
        model: &Llama,
        tokenizer: Option<&Tokenizer>,
    ) -> Result<(i64, usize), LlmError> {
        self.config.validate(tokenizer)?;
        let (batch, len, hidden) = self.embeds.size3()?;
        if batch != 1 || hidden != model.config().hidden_size as i64 || len == 0 {
            return Err(LlmError::InvalidRequest(format!(
                "a prompt joins as [1, seq, {}] embeddings, not [{batch}, {len}, {hidden}]",
                model.config().hidden_size
            )));
        }
        Ok((len, self.config.budget(len as usize, model)?))
    }
}

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

    /// Whether a sequence is in `slot`.
    pub fn is_taken(&self, slot: Slot) -> bool {
        self.sequences.get(slot).is_some_and(Option::is_some)
    }

    /// How many sequences the batch holds at most.
    pub fn slots(&self) -> usize {
        self.sequences.len()
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
        let prompt = Prompt {
            embeds: embeds.shallow_clone(),
            history: history.to_vec(),
            config,
        };
        self.join_all(model, vec![prompt], tokenizer).remove(0)
    }

    /// Several sequences join at once: their prompts are read in one
    /// left-padded forward pass (as [`crate::generate_from_embeds`] reads a
    /// batch), then each goes to a slot of its own. Each prompt's result
    /// is its own: one that fails its checks, or finds no free slot, does
    /// not keep the others out.
    pub fn join_all(
        &mut self,
        model: &Llama,
        prompts: Vec<Prompt>,
        tokenizer: Option<&Tokenizer>,
    ) -> Vec<Result<(Slot, i64), LlmError>> {
        let _guard = tch::no_grad_guard();
        let mut results: Vec<Option<Result<(Slot, i64), LlmError>>> =
            (0..prompts.len()).map(|_| None).collect();
        // Checked, each with a budget and a free slot.
        let mut free = (0..self.sequences.len()).filter(|&s| self.sequences[s].is_none());
        let mut admitted = Vec::new();
        for (i, prompt) in prompts.into_iter().enumerate() {
            let checked = prompt.check(model, tokenizer).and_then(|(len, budget)| {
                let slot = free
                    .next()
                    .ok_or_else(|| LlmError::InvalidRequest("the batch is full".into()))?;
                Ok((len, budget, slot))
            });
            match checked {
                Ok((len, budget, slot)) => admitted.push((i, prompt, len, budget, slot)),
                Err(e) => results[i] = Some(Err(e)),
            }
        }
        if !admitted.is_empty() {
            if let Err(e) = self.prefill(model, &mut admitted, &mut results, tokenizer) {
                let message = e.to_string();
                for (i, ..) in &admitted {
                    results[*i] = Some(Err(LlmError::InvalidRequest(message.clone())));
                }
            }
        }
        results
            .into_iter()
            .map(|r| r.expect("every prompt has a result"))
            .collect()
    }

    /// Reads the admitted prompts in one left-padded batch and puts each
    /// in its slot with its first token.
    fn prefill(
        &mut self,
        model: &Llama,
        admitted: &mut [(usize, Prompt, i64, usize, Slot)],
        results: &mut [Option<Result<(Slot, i64), LlmError>>],
        tokenizer: Option<&Tokenizer>,
    ) -> Result<(), LlmError> {
        let device = model.device();
        let rows = admitted.len() as i64;
        let longest = admitted.iter().map(|a| a.2).max().unwrap_or(0);
        let hidden_size = model.config().hidden_size as i64;
        let embeds = Tensor::zeros([rows, longest, hidden_size], (model.kind(), device));
        let mask = Tensor::zeros([rows, longest], (Kind::Bool, device));
        for (row, (_, prompt, len, ..)) in admitted.iter().enumerate() {
            let pad = longest - len;
            embeds
                .get(row as i64)
                .narrow(0, pad, *len)
                .copy_(&prompt.embeds.get(0).to_kind(model.kind()));
            let _ = mask.get(row as i64).narrow(0, pad, *len).fill_(1);
        }
        let mut cache = model.new_cache(rows, longest);
        let hidden = model.forward_embeds(&embeds, Some(&mask), &mut cache)?;
        let logits = model.logits(&hidden.select(1, -1));
        for (row, (i, prompt, len, budget, slot)) in admitted.iter_mut().enumerate() {
            // The last generated token is fed but never written.
            self.cache.reserve(*len + *budget as i64 - 1);
            self.cache.load(*slot, &cache, row as i64)?;
            let seen = (prompt.config.repetition_penalty != 1.0)
                .then(|| seen_tokens(model, std::slice::from_ref(&prompt.history), device))
                .transpose()?;
            let mut sequence = Sequence {
                rng: sequence_rngs(prompt.config.seed, 1).remove(0),
                config: std::mem::take(&mut prompt.config),
                seen,
                output: SequenceOutput::new(),
                budget: *budget,
                finished: false,
            };
            results[*i] = Some(
                sequence
                    .choose(&logits.narrow(0, row as i64, 1), tokenizer)
                    .map(|id| (*slot, id)),
            );
            self.sequences[*slot] = Some(sequence);
        }
        Ok(())
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
        // Rows that choose alike choose together, each with its own
        // generator.
        let config = |row: usize| {
            &self.sequences[slots[row]]
                .as_ref()
                .expect("a stepped slot is taken")
                .config
        };
        let mut groups: Vec<Vec<usize>> = Vec::new();
        for row in 0..slots.len() {
            match groups
                .iter_mut()
                .find(|rows| config(rows[0]).chooses_like(config(row)))
            {
                Some(rows) => rows.push(row),
                None => groups.push(vec![row]),
            }
        }
        let mut next = vec![(0, 0); slots.len()];
        for rows in groups {
            let group_logits = if rows.len() == slots.len() {
                logits.shallow_clone()
            } else {
                let index: Vec<i64> = rows.iter().map(|&r| r as i64).collect();
                logits.index_select(0, &Tensor::from_slice(&index).to_device(logits.device()))
            };
            // The group's sequences in row order (rows, like slots, ascend).
            let group_slots: Vec<Slot> = rows.iter().map(|&r| slots[r]).collect();
            let mut group: Vec<&mut Sequence> = self
                .sequences
                .iter_mut()
                .enumerate()
                .filter(|(slot, _)| group_slots.contains(slot))
                .map(|(_, s)| s.as_mut().expect("a stepped slot is taken"))
                .collect();
            let chosen = choose_together(&mut group, &group_logits, tokenizer)?;
            for ((&row, &slot), id) in rows.iter().zip(&group_slots).zip(chosen) {
                next[row] = (slot, id);
            }
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
    pub fn clear(&mut self) {
        for slot in 0..self.sequences.len() {
            self.leave(slot);
        }
    }
}

/// The next token of each sequence of `group` (which choose alike: see
/// [`DecodeBatch::step`]) from its row of `logits`, in one pass.
fn choose_together(
    group: &mut [&mut Sequence],
    logits: &Tensor,
    tokenizer: Option<&Tokenizer>,
) -> Result<Vec<i64>, LlmError> {
    if let [sequence] = group {
        return Ok(vec![sequence.choose(logits, tokenizer)?]);
    }
    let mut rngs: Vec<ChaCha8Rng> = group.iter().map(|s| s.rng.clone()).collect();
    let next = next_tokens(logits, None, &group[0].config, &mut rngs)?;
    for (row, (sequence, rng)) in group.iter_mut().zip(rngs).enumerate() {
        sequence.rng = rng;
        let top = next.top.as_ref().map(|t| t[row].clone());
        let logprob = next.chosen.as_ref().map(|c| c[row]);
        sequence.accept(next.ids[row], top, logprob, tokenizer)?;
    }
    Ok(next.ids)
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
        self.accept(id, top, logprob, tokenizer)?;
        Ok(id)
    }

    /// Records the chosen token: finished or not, and the tokens seen.
    fn accept(
        &mut self,
        id: i64,
        top: Option<Vec<TokenLogprob>>,
        logprob: Option<f32>,
        tokenizer: Option<&Tokenizer>,
    ) -> Result<(), LlmError> {
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
        Ok(())
    }
}
