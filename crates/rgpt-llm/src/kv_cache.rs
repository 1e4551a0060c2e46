//! A preallocated key/value cache. Each step writes its keys and values in
//! place (no `cat` per token) and attention reads a view of the filled
//! prefix. Sequences of different lengths share one cache through left
//! padding: the cache keeps which slots hold real tokens, from which it
//! derives position ids and the attention mask exactly as transformers'
//! `generate` does (`cumsum(mask) - 1`).
use tch::{Device, Kind, Tensor};

use crate::config::LlamaConfig;
use crate::LlmError;

#[derive(Debug)]
pub struct KvCache {
    layers: Vec<(Tensor, Tensor)>, // each [batch, kv_heads, capacity, head_dim]
    mask: Tensor,                  // [batch, capacity] bool: slot holds a real token
    seen: Tensor,                  // [batch] i64: real tokens written per sequence
    len: i64,
    capacity: i64,
    padded: bool,
}

/// What one forward pass needs from the cache to attend correctly.
#[derive(Debug)]
pub struct StepLayout {
    pub start: i64,
    pub position_ids: Tensor,      // [batch, seq]
    pub attn_mask: Option<Tensor>, // [batch, 1, seq, start + seq] bool, None when plain causal
    pub is_causal: bool,
}

impl StepLayout {
    pub fn shallow_clone(&self) -> Self {
        StepLayout {
            start: self.start,
            position_ids: self.position_ids.shallow_clone(),
            attn_mask: self.attn_mask.as_ref().map(Tensor::shallow_clone),
            is_causal: self.is_causal,
        }
    }
}

impl KvCache {
    pub fn new(
        config: &LlamaConfig,
        batch: i64,
        capacity: i64,
        kind: Kind,
        device: Device,
    ) -> Self {
        let shape = [
            batch,
            config.num_key_value_heads() as i64,
            capacity,
            config.head_dim() as i64,
        ];
        let layers = (0..config.num_hidden_layers)
            .map(|_| {
                (
                    Tensor::zeros(shape, (kind, device)),
                    Tensor::zeros(shape, (kind, device)),
                )
            })
            .collect();
        KvCache {
            layers,
            mask: Tensor::zeros([batch, capacity], (Kind::Bool, device)),
            seen: Tensor::zeros([batch], (Kind::Int64, device)),
            len: 0,
            capacity,
            padded: false,
        }
    }

    /// Tokens (padding included) written so far.
    pub fn len(&self) -> i64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn capacity(&self) -> i64 {
        self.capacity
    }

    pub fn batch_size(&self) -> i64 {
        self.mask.size()[0]
    }

    /// Forgets every token; the buffers are kept for reuse.
    pub fn reset(&mut self) {
        let _ = self.mask.zero_();
        let _ = self.seen.zero_();
        self.len = 0;
        self.padded = false;
    }

    /// A deep copy, e.g. to branch several continuations off one prefix.
    pub fn try_clone(&self) -> Self {
        KvCache {
            layers: self
                .layers
                .iter()
                .map(|(k, v)| (k.copy(), v.copy()))
                .collect(),
            mask: self.mask.copy(),
            seen: self.seen.copy(),
            len: self.len,
            capacity: self.capacity,
            padded: self.padded,
        }
    }

    /// Every sequence's cache repeated `n` times in a row (sequence `i`
    /// becomes rows `i*n .. (i+1)*n`), to branch several continuations off
    /// each prefix in a single batch.
    pub fn expand_batch(&self, n: i64) -> Result<Self, LlmError> {
        if n < 1 {
            return Err(LlmError::InvalidRequest(
                "a cache expands to at least one copy per sequence".into(),
            ));
        }
        Ok(KvCache {
            layers: self
                .layers
                .iter()
                .map(|(k, v)| {
                    (
                        k.repeat_interleave_self_int(n, 0, None),
                        v.repeat_interleave_self_int(n, 0, None),
                    )
                })
                .collect(),
            mask: self.mask.repeat_interleave_self_int(n, 0, None),
            seen: self.seen.repeat_interleave_self_int(n, 0, None),
            len: self.len,
            capacity: self.capacity,
            padded: self.padded,
        })
    }

    /// Registers `seq` new slots whose validity is `mask` ([batch, seq] bool;
    /// None = all real) and returns their positions and attention mask. Call
    /// once per forward pass, before the layers write; `commit` afterwards.
    pub fn begin_step(&mut self, seq: i64, mask: Option<&Tensor>) -> Result<StepLayout, LlmError> {
        if self.len + seq > self.capacity {
            return Err(LlmError::InvalidRequest(format!(
                "the KV cache holds {} tokens; {} more do not fit after {}",
                self.capacity, seq, self.len
            )));
        }
        let batch = self.batch_size();
        let device = self.mask.device();
        let start = self.len;
        let position_ids = if mask.is_none() && !self.padded {
            // Every sequence has seen exactly `start` real tokens: positions
            // are a plain range, at a fraction of the ops (decode hot path).
            let _ = self.mask.narrow(1, start, seq).fill_(1);
            self.seen += seq;
            Tensor::arange_start(start, start + seq, (Kind::Int64, device))
                .unsqueeze(0)
                .expand([batch, seq], false)
        } else {
            let new_mask = match mask {
                Some(m) => m.to_kind(Kind::Bool),
                None => Tensor::ones([batch, seq], (Kind::Bool, device)),
            };
            if !bool::try_from(new_mask.all()).unwrap_or(false) {
                self.padded = true;
            }
            self.mask.narrow(1, start, seq).copy_(&new_mask);
            let counts = new_mask.to_kind(Kind::Int64).cumsum(1, Kind::Int64);
            let position_ids =
                (&counts + self.seen.unsqueeze(1) - 1).masked_fill(&new_mask.logical_not(), 1);
            self.seen += counts.select(1, seq - 1);
            position_ids
        };

        let total = start + seq;
        let (attn_mask, is_causal) = if !self.padded && (seq == 1 || start == 0) {
            // Without padding, SDPA's own causal masking (or none for a single
            // query) is exact and lets it pick its fastest kernel.
            (None, seq > 1)
        } else {
            let keys = Tensor::arange(total, (Kind::Int64, device));
            let queries = Tensor::arange_start(start, total, (Kind::Int64, device));
            // causal: [seq, total]; valid: [batch, 1, total]
            let causal = keys.unsqueeze(0).le_tensor(&queries.unsqueeze(1));
            let valid = self.mask.narrow(1, 0, total).unsqueeze(1);
            // A padding query attends to itself only: its output is unused,
            // but a fully masked row would make SDPA produce NaNs that then
            // leak into real rows through the values.
            let diagonal = keys.unsqueeze(0).eq_tensor(&queries.unsqueeze(1));
            let allowed = causal
                .unsqueeze(0)
                .logical_and(&valid)
                .logical_or(&diagonal.unsqueeze(0));
            (Some(allowed.unsqueeze(1)), false)
        };
        Ok(StepLayout {
            start,
            position_ids,
            attn_mask,
            is_causal,
        })
    }

    /// Writes one layer's new keys/values ([batch, kv_heads, seq, head_dim])
    /// at `start` and returns views of everything cached for that layer.
    pub fn update(&mut self, layer: usize, start: i64, k: &Tensor, v: &Tensor) -> (Tensor, Tensor) {
        let seq = k.size()[2];
        let (keys, values) = &mut self.layers[layer];
        keys.narrow(2, start, seq).copy_(k);
        values.narrow(2, start, seq).copy_(v);
        (
            keys.narrow(2, 0, start + seq),
            values.narrow(2, 0, start + seq),
        )
    }

    /// Ends the forward pass begun by `begin_step`.
    pub fn commit(&mut self, seq: i64) {
        self.len += seq;
    }
}

/// The cache of a continuous batch ([`crate::batching`]): one slot per
/// sequence, each with its own length, in one tensor per layer, so a
/// decode step writes every sequence's new key and value and attends over
/// all of them in one operation each. A slot's prompt is read on its own
/// (a [`KvCache`] of one sequence, exactly as alone) and copied in; its
/// tokens are never padded, so positions are plain counts. The length
/// axis grows (by doubling) when a sequence needs more.
#[derive(Debug)]
pub struct SlotCache {
    layers: Vec<(Tensor, Tensor)>, // each [slots, kv_heads, capacity, head_dim]
    lens: Vec<i64>,                // tokens held per slot
}

/// Where one decode step of some slots reads and writes.
#[derive(Debug)]
pub struct SlotStep {
    slots: Tensor,            // [rows] i64
    positions: Tensor,        // [rows] i64: where each new token goes
    pub position_ids: Tensor, // [rows, 1]
    pub attn_mask: Tensor,    // [rows, 1, 1, span] bool
    span: i64,
}

impl SlotCache {
    pub fn new(config: &LlamaConfig, slots: i64, kind: Kind, device: Device) -> Self {
        // Empty along the length axis until `reserve`.
        let shape = [
            slots,
            config.num_key_value_heads() as i64,
            0,
            config.head_dim() as i64,
        ];
        SlotCache {
            layers: (0..config.num_hidden_layers)
                .map(|_| {
                    (
                        Tensor::zeros(shape, (kind, device)),
                        Tensor::zeros(shape, (kind, device)),
                    )
                })
                .collect(),
            lens: vec![0; slots as usize],
        }
    }

    pub fn slots(&self) -> usize {
        self.lens.len()
    }

    /// Tokens held in `slot`.
    pub fn len(&self, slot: usize) -> i64 {
        self.lens[slot]
    }

    fn capacity(&self) -> i64 {
        self.layers.first().map_or(0, |(k, _)| k.size()[2])
    }

    /// Makes room for `tokens` in every slot.
    pub fn reserve(&mut self, tokens: i64) {
        let capacity = self.capacity();
        if tokens <= capacity {
            return;
        }
        let grown = tokens.max(2 * capacity);
        for (k, v) in &mut self.layers {
            let mut shape = k.size();
            shape[2] = grown;
            let (kk, vv) = (
                Tensor::zeros(&shape, (k.kind(), k.device())),
                Tensor::zeros(&shape, (v.kind(), v.device())),
            );
            kk.narrow(2, 0, capacity).copy_(k);
            vv.narrow(2, 0, capacity).copy_(v);
            *k = kk;
            *v = vv;
        }
    }

    /// Puts the prompt of row `row` of `prefix` into `slot`, which must
    /// have room for it ([`SlotCache::reserve`]): its real tokens only,
    /// packed from the slot's start (their keys were rotated by their
    /// positions among the real tokens, which are the same).
    pub fn load(&mut self, slot: usize, prefix: &KvCache, row: i64) -> Result<(), LlmError> {
        let real: Vec<bool> = Vec::try_from(&prefix.mask.get(row).narrow(0, 0, prefix.len))?;
        let first = real.iter().position(|&r| r).unwrap_or(real.len()) as i64;
        let tokens = prefix.len - first;
        if real[first as usize..].iter().any(|&r| !r) || tokens > self.capacity() {
            return Err(LlmError::InvalidRequest(format!(
                "a slot takes one left-padded sequence of at most {} tokens",
                self.capacity()
            )));
        }
        for ((k, v), (pk, pv)) in self.layers.iter_mut().zip(&prefix.layers) {
            k.get(slot as i64)
                .narrow(1, 0, tokens)
                .copy_(&pk.get(row).narrow(1, first, tokens));
            v.get(slot as i64)
                .narrow(1, 0, tokens)
                .copy_(&pv.get(row).narrow(1, first, tokens));
        }
        self.lens[slot] = tokens;
        Ok(())
    }

    /// Frees `slot` for another sequence.
    pub fn release(&mut self, slot: usize) {
        self.lens[slot] = 0;
    }

    /// Lays out a step that adds one token to each of `slots`.
    pub fn begin_step(&self, slots: &[usize]) -> Result<SlotStep, LlmError> {
        let device = self.layers[0].0.device();
        let lens: Vec<i64> = slots.iter().map(|&s| self.lens[s]).collect();
        let span = lens.iter().max().map_or(0, |&l| l + 1);
        if span > self.capacity() {
            return Err(LlmError::InvalidRequest(format!(
                "the batch cache holds {} tokens per sequence; reserve {span}",
                self.capacity()
            )));
        }
        let positions = Tensor::from_slice(&lens).to_device(device);
        let keys = Tensor::arange(span, (Kind::Int64, device));
        // Each row attends to its own tokens and the new one.
        let attn_mask = keys
            .unsqueeze(0)
            .le_tensor(&positions.unsqueeze(1))
            .view([-1, 1, 1, span]);
        let slots: Vec<i64> = slots.iter().map(|&s| s as i64).collect();
        Ok(SlotStep {
            slots: Tensor::from_slice(&slots).to_device(device),
            position_ids: positions.unsqueeze(1),
            positions,
            attn_mask,
            span,
        })
    }

    /// Writes one layer's new keys/values ([rows, kv_heads, 1, head_dim])
    /// and returns the rows' keys and values [rows, kv_heads, span, head_dim].
    pub fn update(
        &mut self,
        layer: usize,
        step: &SlotStep,
        k: &Tensor,
        v: &Tensor,
    ) -> (Tensor, Tensor) {
        let (keys, values) = &mut self.layers[layer];
        let index = [
            Some(step.slots.shallow_clone()),
            None,
            Some(step.positions.shallow_clone()),
        ];
        let _ = keys.index_put_(&index, &k.squeeze_dim(2), false);
        let _ = values.index_put_(&index, &v.squeeze_dim(2), false);
        (
            keys.narrow(2, 0, step.span).index_select(0, &step.slots),
            values.narrow(2, 0, step.span).index_select(0, &step.slots),
        )
    }

    /// Ends a step begun by `begin_step` over `slots`.
    pub fn commit(&mut self, slots: &[usize]) {
        for &slot in slots {
            self.lens[slot] += 1;
        }
    }
}
