//! Sequence packing for a training forward without padding work: several
//! sequences share a row, each attending only to its own earlier
//! positions, with RoPE positions counted from its own start. The result
//! at every real position is the one a padded batch gives (up to the float
//! rounding of other matrix shapes); what it saves is the padding, which
//! costs as much as real tokens in every matrix product. transformers'
//! packed training (`DataCollatorWithFlattening`, restarting `position_ids`)
//! does the same with one row and a variable-length attention kernel; here
//! the rows stay as long as the longest sequence, so the attention mask is
//! a dense block-diagonal one SDPA takes as it is.
use tch::{Device, Kind, Tensor};

use crate::{LlamaConfig, LlmError};

/// Where each sequence of a batch sits once packed: rows of one length,
/// filled first-fit in order of decreasing length (ties in batch order), so
/// a plan depends only on the lengths and the model's shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packing {
    /// Per sequence, in batch order: (row, first position in the row).
    pub placements: Vec<(usize, usize)>,
    pub lengths: Vec<usize>,
    pub rows: usize,
    /// Positions per row: a multiple of the longest sequence's length.
    pub row_len: usize,
}

impl Packing {
    /// The cheapest plan for sequences of `lengths` tokens, none empty,
    /// through `config`'s decoder. Rows are one to eight times as long as
    /// the longest sequence: longer rows waste fewer positions, but each
    /// position attends over a longer row, so the length with the least
    /// work (matrix products per position, plus attention over the row)
    /// wins, the shortest on a tie.
    pub fn plan(lengths: &[usize], config: &LlamaConfig) -> Result<Self, LlmError> {
        let (hidden, intermediate) = (config.hidden_size as f64, config.intermediate_size as f64);
        let kv = (config.num_key_value_heads() * config.head_dim()) as f64;
        // Multiply-adds per position and layer: the projections and the
        // MLP, and per attended position: scores and values.
        let per_position = hidden * (2.0 * hidden + 2.0 * kv) + 3.0 * hidden * intermediate;
        let per_attended = 2.0 * hidden;
        let longest = lengths.iter().copied().max().unwrap_or(0);
        let total: usize = lengths.iter().sum();
        let mut best: Option<(f64, Packing)> = None;
        for k in 1..=8 {
            let row_len = k * longest;
            if k > 1 && row_len > total {
                break;
            }
            let plan = Self::first_fit(lengths, row_len)?;
            let positions = (plan.rows * row_len) as f64;
            // A causal position needs half the row on average. (SDPA's CPU
            // kernel computes the whole row under a dense mask; counting it
            // so picks other rows, and the demo was measured with these.)
            let work = positions * (per_position + per_attended * row_len as f64 / 2.0);
            if best.as_ref().is_none_or(|(least, _)| work < *least) {
                best = Some((work, plan));
            }
        }
        best.map(|(_, plan)| plan)
            .ok_or_else(|| LlmError::InvalidRequest("packing needs at least one sequence".into()))
    }

    /// First-fit decreasing into rows of `row_len` positions.
    pub fn first_fit(lengths: &[usize], row_len: usize) -> Result<Self, LlmError> {
        if lengths.is_empty() || lengths.contains(&0) {
            return Err(LlmError::InvalidRequest(
                "packing needs at least one sequence, each with at least one token".into(),
            ));
        }
        if let Some(&long) = lengths.iter().find(|&&n| n > row_len) {
            return Err(LlmError::InvalidRequest(format!(
                "a sequence of {long} tokens does not fit rows of {row_len}"
            )));
        }
        let mut order: Vec<usize> = (0..lengths.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(lengths[i]));
        let mut filled: Vec<usize> = Vec::new();
        let mut placements = vec![(0, 0); lengths.len()];
        for i in order {
            let row = match filled.iter().position(|&used| used + lengths[i] <= row_len) {
                Some(row) => row,
                None => {
                    filled.push(0);
                    filled.len() - 1
                }
            };
            placements[i] = (row, filled[row]);
            filled[row] += lengths[i];
        }
        Ok(Packing {
            placements,
            lengths: lengths.to_vec(),
            rows: filled.len(),
            row_len,
        })
    }

    /// The packed rows [rows, row_len, hidden] of `sequences`, each
    /// [length, hidden] in batch order; zeros where no sequence sits.
    pub fn pack(&self, sequences: &[Tensor]) -> Result<Tensor, LlmError> {
        let first = sequences.first().ok_or_else(|| {
            LlmError::InvalidRequest("packing needs at least one sequence".into())
        })?;
        let hidden = first.size().get(1).copied().unwrap_or(0);
        let (kind, device) = (first.kind(), first.device());
        let mut rows: Vec<Vec<(usize, usize)>> = vec![Vec::new(); self.rows];
        for (i, &(row, offset)) in self.placements.iter().enumerate() {
            rows[row].push((offset, i));
        }
        let mut packed = Vec::with_capacity(self.rows);
        for mut members in rows {
            members.sort_unstable();
            let mut pieces: Vec<Tensor> = members
                .iter()
                .map(|&(_, i)| sequences[i].shallow_clone())
                .collect();
            let used: usize = members.iter().map(|&(_, i)| self.lengths[i]).sum();
            if used < self.row_len {
                pieces.push(Tensor::f_zeros(
                    [(self.row_len - used) as i64, hidden],
                    (kind, device),
                )?);
            }
            packed.push(Tensor::f_cat(&pieces, 0)?);
        }
        Ok(Tensor::f_stack(&packed, 0)?)
    }

    /// Per sequence, its positions' flat indices into the packed rows
    /// (`row * row_len + position`), in batch order.
    fn flat_positions(&self) -> impl Iterator<Item = (usize, std::ops::Range<usize>)> + '_ {
        self.placements
            .iter()
            .zip(&self.lengths)
            .enumerate()
            .map(|(i, (&(row, offset), &len))| {
                let start = row * self.row_len + offset;
                (i, start..start + len)
            })
    }

    /// [rows, row_len] RoPE positions: each sequence counts from 0, as it
    /// would alone; 0 where no sequence sits.
    pub fn position_ids(&self, device: Device) -> Tensor {
        let mut ids = vec![0i64; self.rows * self.row_len];
        for (_, range) in self.flat_positions() {
            for (position, flat) in range.enumerate() {
                ids[flat] = position as i64;
            }
        }
        Tensor::from_slice(&ids)
            .view([self.rows as i64, self.row_len as i64])
            .to_device(device)
    }

    /// [rows, 1, row_len, row_len] bool: a position attends to the
    /// positions of its own sequence up to itself. A position where no
    /// sequence sits attends to itself only (a fully masked row would make
    /// SDPA's softmax NaN).
    pub fn attention_mask(&self, device: Device) -> Tensor {
        // Each position's sequence; unused positions get ids of their own.
        let total = self.rows * self.row_len;
        let mut owner: Vec<i64> = (0..total as i64).map(|flat| -1 - flat).collect();
        for (i, range) in self.flat_positions() {
            for flat in range {
                owner[flat] = i as i64;
            }
        }
        let owner = Tensor::from_slice(&owner)
            .view([self.rows as i64, self.row_len as i64])
            .to_device(device);
        let same = owner.unsqueeze(2).eq_tensor(&owner.unsqueeze(1));
        let positions = Tensor::arange(self.row_len as i64, (Kind::Int64, device));
        let causal = positions.unsqueeze(0).le_tensor(&positions.unsqueeze(1));
        same.logical_and(&causal.unsqueeze(0)).unsqueeze(1)
    }

    /// Back from packed rows [rows, row_len, hidden] to one right-padded
    /// row per sequence [batch, longest, hidden], zeros after each end.
    pub fn unpack(&self, packed: &Tensor) -> Result<Tensor, LlmError> {
        let (rows, row_len, hidden) = packed.size3()?;
        if rows != self.rows as i64 || row_len != self.row_len as i64 {
            return Err(LlmError::InvalidRequest(format!(
                "packed states of shape [{rows}, {row_len}, {hidden}] do not match a packing \
                 of {} rows of {}",
                self.rows, self.row_len
            )));
        }
        // Flat index of each padded position; padding reads an appended zero row.
        let zero_row = (self.rows * self.row_len) as i64;
        let (batch, longest) = (self.lengths.len(), self.longest());
        let mut index = vec![zero_row; batch * longest];
        for (i, range) in self.flat_positions() {
            for (position, flat) in range.enumerate() {
                index[i * longest + position] = flat as i64;
            }
        }
        let flat = Tensor::f_cat(
            &[
                packed.f_reshape([rows * row_len, hidden])?,
                Tensor::f_zeros([1, hidden], (packed.kind(), packed.device()))?,
            ],
            0,
        )?;
        let index = Tensor::from_slice(&index).to_device(packed.device());
        Ok(flat
            .f_index_select(0, &index)?
            .f_view([batch as i64, longest as i64, hidden])?)
    }

    /// The longest sequence's length.
    pub fn longest(&self) -> usize {
        self.lengths.iter().copied().max().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(hidden: usize) -> LlamaConfig {
        serde_json::from_value(serde_json::json!({
            "hidden_size": hidden, "intermediate_size": hidden * 11 / 4,
            "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 100,
        }))
        .unwrap()
    }

    #[test]
    fn first_fit_decreasing_fills_rows_in_order_of_length() {
        let plan = Packing::first_fit(&[3, 8, 5, 2, 4], 8).unwrap();
        assert_eq!(plan.row_len, 8);
        // 8 alone; 5 + 3; 4 + 2.
        assert_eq!(plan.rows, 3);
        assert_eq!(
            plan.placements,
            vec![(1, 5), (0, 0), (1, 0), (2, 4), (2, 0)]
        );
    }

    #[test]
    fn the_plan_takes_longer_rows_where_they_save_padding() {
        // The demo's batches: most sequences a little over half the longest.
        let mut lengths = vec![43; 28];
        lengths.extend([52, 60, 81, 38]);
        let plan = Packing::plan(&lengths, &config(256)).unwrap();
        let padded = 32 * 81;
        assert!(plan.row_len > 81, "rows of the longest hold one 43 each");
        assert!(plan.rows * plan.row_len < padded * 2 / 3, "{plan:?}");
        // Equal lengths need no longer rows.
        let plan = Packing::plan(&[10; 6], &config(256)).unwrap();
        assert_eq!((plan.rows, plan.row_len), (6, 10));
        // Attention over very long rows costs more than the padding saved.
        let plan = Packing::plan(&[4000, 2100, 2100], &config(64)).unwrap();
        assert_eq!(plan.row_len, 4000);
    }

    #[test]
    fn positions_restart_and_attention_stays_inside_each_sequence() {
        let plan = Packing::first_fit(&[2, 3, 1], 3).unwrap();
        // Row 0: sequence 1 (3 tokens); row 1: sequence 0 (2) then 2 (1).
        assert_eq!(plan.placements, vec![(1, 0), (0, 0), (1, 2)]);
        let ids = Vec::<i64>::try_from(plan.position_ids(Device::Cpu).view([-1])).unwrap();
        assert_eq!(ids, vec![0, 1, 2, 0, 1, 0]);
        let mask = plan.attention_mask(Device::Cpu);
        assert_eq!(mask.size(), vec![2, 1, 3, 3]);
        let row1 = Vec::<Vec<bool>>::try_from(mask.get(1).get(0)).unwrap();
        assert_eq!(
            row1,
            vec![
                vec![true, false, false],
                vec![true, true, false],
                vec![false, false, true],
            ]
        );
    }

    #[test]
    fn pack_then_unpack_gives_right_padded_rows() {
        let plan = Packing::first_fit(&[2, 3, 1], 3).unwrap();
        let seqs: Vec<Tensor> = [2i64, 3, 1]
            .iter()
            .enumerate()
            .map(|(i, &n)| Tensor::full([n, 2], (i + 1) as f64, (Kind::Float, Device::Cpu)))
            .collect();
        let packed = plan.pack(&seqs).unwrap();
        assert_eq!(packed.size(), vec![2, 3, 2]);
        let padded = plan.unpack(&packed).unwrap();
        let first = |t: Tensor| Vec::<f32>::try_from(t.select(1, 0)).unwrap();
        assert_eq!(first(padded.get(0)), vec![1.0, 1.0, 0.0]);
        assert_eq!(first(padded.get(1)), vec![2.0, 2.0, 2.0]);
        assert_eq!(first(padded.get(2)), vec![3.0, 0.0, 0.0]);
    }

    #[test]
    fn unpack_pads_to_the_longest_sequence_not_the_row() {
        let plan = Packing::first_fit(&[2, 1], 4).unwrap();
        assert_eq!((plan.rows, plan.row_len), (1, 4));
        let seqs = [
            Tensor::from_slice(&[1.0f32, 2.0]).view([2, 1]),
            Tensor::from_slice(&[3.0f32]).view([1, 1]),
        ];
        let padded = plan.unpack(&plan.pack(&seqs).unwrap()).unwrap();
        assert_eq!(padded.size(), vec![2, 2, 1]);
        let values = Vec::<f32>::try_from(padded.view([-1])).unwrap();
        assert_eq!(values, vec![1.0, 2.0, 3.0, 0.0]);
    }

    #[test]
    fn an_empty_sequence_is_refused() {
        assert!(Packing::plan(&[], &config(64)).is_err());
        assert!(Packing::plan(&[3, 0], &config(64)).is_err());
        assert!(Packing::first_fit(&[3, 5], 4).is_err());
    }
}
