//! ZeRO stage 1 (Rajbhandari et al., "ZeRO: Memory Optimizations Toward
//! Training Trillion Parameter Models", SC 2020): AdamW with its state
//! sharded across the ranks of a data-parallel run. The trainable
//! variables are laid end to end as one vector, cut into buckets of the
//! run's bucket size, and each bucket into one equal chunk per rank; a rank
//! owns its chunk of every bucket. Each step the gradients are
//! reduce-scattered bucket by bucket (each rank receives the sum of its
//! chunks), each rank updates its chunks' f32 weights and moments, and the
//! updated chunks are all-gathered bucket by bucket into every rank's
//! variables. Per rank, the optimiser holds 12 bytes (f32 weights and two
//! moments) plus 4 (the summed gradient) per trained weight divided by the
//! world size, and one bucket at a time in flight, instead of 8 (f32
//! weights) or 12 (bf16 weights, with their f32 master copy).
//!
//! The update is `optimizer::AdamW`'s, operation for operation, so a
//! sharded run takes the steps a replicated one takes (to the rounding of
//! the summed gradient and its norm). Checkpoints hold the whole state in
//! `AdamW::state`'s names (gathered at save), so any number of ranks, or
//! one process, can resume them.
use std::collections::BTreeMap;

use tch::{Device, Kind, Tensor};

use crate::data_parallel::DataParallel;
use crate::optimizer::{update, zero_grads, AdamW, AdamWConfig};
use crate::TrainError;

/// Part of a variable inside a bucket.
#[derive(Debug, Clone, Copy)]
struct Piece {
    param: usize,
    /// Where the piece starts in the variable (flattened) and in the bucket.
    in_param: i64,
    in_bucket: i64,
    len: i64,
}

/// A stretch of the flat vector, its length a multiple of the world size.
#[derive(Debug)]
struct Bucket {
    len: i64,
    pieces: Vec<Piece>,
    /// Where this rank's chunk of the bucket sits in the rank's shard.
    in_shard: i64,
}

pub struct ShardedAdamW {
    config: AdamWConfig,
    /// The trained variables, in name order.
    params: Vec<(String, Tensor)>,
    buckets: Vec<Bucket>,
    rank: i64,
    world: i64,
    /// This rank's chunks end to end, on the group's device.
    device: Device,
    master: Tensor,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    step: u64,
}

impl ShardedAdamW {
    /// Takes this rank's shard of the variables' current values (the same
    /// on every rank: rank 0's, broadcast at the start).
    pub fn new(params: Vec<(String, Tensor)>, config: AdamWConfig, dist: &DataParallel) -> Self {
        let world = dist.world_size() as i64;
        let per_bucket = ((dist.bucket_bytes() / 4) as i64 / world).max(1) * world;
        let total: i64 = params.iter().map(|(_, p)| p.numel() as i64).sum();
        let padded = (total + world - 1) / world * world;
        let mut buckets = Vec::new();
        let (mut start, mut in_shard) = (0, 0);
        let (mut param, mut in_param) = (0, 0);
        while start < padded {
            let len = per_bucket.min(padded - start);
            let mut pieces = Vec::new();
            let mut filled = 0;
            while filled < len && param < params.len() {
                let left = params[param].1.numel() as i64 - in_param;
                let take = left.min(len - filled);
                pieces.push(Piece {
                    param,
                    in_param,
                    in_bucket: filled,
                    len: take,
                });
                filled += take;
                in_param += take;
                if in_param == params[param].1.numel() as i64 {
                    (param, in_param) = (param + 1, 0);
                }
            }
            buckets.push(Bucket {
                len,
                pieces,
                in_shard,
            });
            start += len;
            in_shard += len / world;
        }
        let device = dist.device();
        let zeros = || Tensor::zeros([in_shard], (Kind::Float, device));
        let mut optimizer = ShardedAdamW {
            config,
            params,
            buckets,
            rank: dist.rank() as i64,
            world,
            device,
            master: zeros(),
            exp_avg: zeros(),
            exp_avg_sq: zeros(),
            step: 0,
        };
        optimizer.master = optimizer.my_chunks(|_, p| p.detach());
        optimizer
    }

    /// Optimiser steps taken.
    pub fn steps(&self) -> u64 {
        self.step
    }

    pub fn zero_grad(&mut self) {
        zero_grads(self.params.iter().map(|(_, p)| p));
    }

    /// One step at `lr`, gradients summed over the ranks and clipped to
    /// `max_norm` (0: no clipping) first; returns their norm (0 without
    /// clipping). Every rank must call it.
    pub fn step(&mut self, dist: &DataParallel, lr: f64, max_norm: f64) -> Result<f64, TrainError> {
        let _guard = tch::no_grad_guard();
        // A variable no rank used this step is left alone, as AdamW skips
        // a variable without a gradient.
        let used = dist.used_by_any_rank(&self.params())?;
        let mut grad = Tensor::zeros_like(&self.master);
        for bucket in &self.buckets {
            let flat = self.bucket_of(bucket, |_, p| {
                let g = p.grad();
                if g.defined() {
                    g
                } else {
                    p.zeros_like()
                }
            });
            let mine = dist.reduce_scatter_sum(&flat)?;
            grad.narrow(0, bucket.in_shard, bucket.len / self.world)
                .copy_(&mine);
        }
        let mut norm = 0.0;
        if max_norm > 0.0 {
            let square = f64::try_from(grad.square().sum(Kind::Double))?;
            norm = dist.sum(&[square])?[0].sqrt();
            let coef = max_norm / (norm + 1e-6);
            if coef < 1.0 {
                grad *= coef;
            }
        }

        self.step += 1;
        let c = self.config;
        let bias1 = 1.0 - c.beta1.powi(self.step as i32);
        let bias2 = 1.0 - c.beta2.powi(self.step as i32);
        let mut weights = self.master.copy();
        let (mut exp_avg, mut exp_avg_sq) = (self.exp_avg.copy(), self.exp_avg_sq.copy());
        let moments = (&mut exp_avg, &mut exp_avg_sq);
        update(&c, lr, (bias1, bias2), &mut weights, moments, &grad);
        if used.iter().all(|&u| u) {
            (self.master, self.exp_avg, self.exp_avg_sq) = (weights, exp_avg, exp_avg_sq);
        } else {
            let mask = self
                .my_chunks(|i, p| {
                    Tensor::full(
                        p.size().as_slice(),
                        f64::from(u8::from(used[i])),
                        (Kind::Float, p.device()),
                    )
                })
                .to_kind(Kind::Bool);
            self.master = weights.where_self(&mask, &self.master);
            self.exp_avg = exp_avg.where_self(&mask, &self.exp_avg);
            self.exp_avg_sq = exp_avg_sq.where_self(&mask, &self.exp_avg_sq);
        }
        for bucket in &self.buckets {
            let chunk = self
                .master
                .narrow(0, bucket.in_shard, bucket.len / self.world);
            let whole = dist.all_gather_flat(&chunk.contiguous())?;
            for piece in &bucket.pieces {
                let param = &self.params[piece.param].1;
                let values = whole.narrow(0, piece.in_bucket, piece.len);
                param
                    .view([-1])
                    .narrow(0, piece.in_param, piece.len)
                    .copy_(&values);
            }
        }
        Ok(norm)
    }

    /// The whole state in `AdamW::state`'s names, gathered from every rank
    /// bucket by bucket (every rank must call it), on the CPU of rank 0,
    /// which writes checkpoints; the others get no tensors. And the step
    /// count.
    pub fn state(&self, dist: &DataParallel) -> Result<(Vec<(String, Tensor)>, u64), TrainError> {
        let keep = self.rank == 0;
        let gather = |shard: &Tensor| -> Result<Vec<Tensor>, TrainError> {
            let whole: Vec<Tensor> = self
                .params
                .iter()
                .filter(|_| keep)
                .map(|(_, p)| Tensor::zeros(p.size().as_slice(), (Kind::Float, Device::Cpu)))
                .collect();
            for bucket in &self.buckets {
                let chunk = shard.narrow(0, bucket.in_shard, bucket.len / self.world);
                let values = dist.all_gather_flat(&chunk.contiguous())?;
                if !keep {
                    continue;
                }
                let values = values.to_device(Device::Cpu);
                for piece in &bucket.pieces {
                    whole[piece.param]
                        .view([-1])
                        .narrow(0, piece.in_param, piece.len)
                        .copy_(&values.narrow(0, piece.in_bucket, piece.len));
                }
            }
            Ok(whole)
        };
        let (exp_avg, exp_avg_sq, master) = (
            gather(&self.exp_avg)?,
            gather(&self.exp_avg_sq)?,
            gather(&self.master)?,
        );
        let mut tensors = Vec::with_capacity(self.params.len() * 3);
        for (i, ((name, param), (m, v))) in self
            .params
            .iter()
            .zip(exp_avg.into_iter().zip(exp_avg_sq))
            .enumerate()
        {
            tensors.push((format!("exp_avg.{name}"), m));
            tensors.push((format!("exp_avg_sq.{name}"), v));
            if param.kind() != Kind::Float {
                tensors.push((format!("master.{name}"), master[i].shallow_clone()));
            }
        }
        Ok((tensors, self.step))
    }

    /// Restores this rank's shard of a state saved by [`ShardedAdamW::state`]
    /// or `AdamW::state`, on any number of ranks. The variables must hold
    /// the checkpoint's weights already (an f32 variable is its own master).
    pub fn load_state(
        &mut self,
        tensors: &BTreeMap<String, Tensor>,
        step: u64,
    ) -> Result<(), TrainError> {
        let _guard = tch::no_grad_guard();
        let get = |key: String, message: String| {
            tensors
                .get(&key)
                .map(Tensor::shallow_clone)
                .ok_or(TrainError::Checkpoint {
                    path: Default::default(),
                    message,
                })
        };
        let mut saved: BTreeMap<String, Tensor> = BTreeMap::new();
        for (name, param) in &self.params {
            for prefix in ["exp_avg", "exp_avg_sq"] {
                let key = format!("{prefix}.{name}");
                let value = get(key.clone(), format!("optimizer state has no `{key}`"))?;
                saved.insert(key, value);
            }
            let key = format!("master.{name}");
            let master = match param.kind() {
                Kind::Float => param.detach(),
                _ => get(key.clone(), AdamW::missing_master(&key))?,
            };
            saved.insert(key, master);
        }
        let shard = |prefix: &str| {
            self.my_chunks(|i, _| saved[&format!("{prefix}.{}", self.params[i].0)].shallow_clone())
        };
        let (exp_avg, exp_avg_sq, master) =
            (shard("exp_avg"), shard("exp_avg_sq"), shard("master"));
        (self.exp_avg, self.exp_avg_sq, self.master) = (exp_avg, exp_avg_sq, master);
        self.step = step;
        Ok(())
    }

    /// The variables it updates, in name order.
    pub fn params(&self) -> Vec<Tensor> {
        self.params.iter().map(|(_, p)| p.shallow_clone()).collect()
    }

    /// A bucket of `f` of the variables, in f32: `[bucket.len]` on the
    /// group's device, zero past the last variable.
    fn bucket_of(&self, bucket: &Bucket, f: impl Fn(usize, &Tensor) -> Tensor) -> Tensor {
        let mut parts: Vec<Tensor> = bucket
            .pieces
            .iter()
            .map(|piece| {
                f(piece.param, &self.params[piece.param].1)
                    .to_kind(Kind::Float)
                    .reshape([-1])
                    .narrow(0, piece.in_param, piece.len)
                    .to_device(self.device)
            })
            .collect();
        let filled: i64 = bucket.pieces.iter().map(|p| p.len).sum();
        if filled < bucket.len {
            parts.push(Tensor::zeros(
                [bucket.len - filled],
                (Kind::Float, self.device),
            ));
        }
        Tensor::cat(&parts, 0)
    }

    /// This rank's chunks of `f` of the variables, end to end (its shard).
    fn my_chunks(&self, f: impl Fn(usize, &Tensor) -> Tensor) -> Tensor {
        let chunks: Vec<Tensor> = self
            .buckets
            .iter()
            .map(|bucket| {
                let size = bucket.len / self.world;
                self.bucket_of(bucket, &f).narrow(0, self.rank * size, size)
            })
            .collect();
        Tensor::cat(&chunks, 0).contiguous()
    }
}
