//! ZeRO stage 1 (Rajbhandari et al., "ZeRO: Memory Optimizations Toward
//! Training Trillion Parameter Models", SC 2020): AdamW with its state
//! sharded across the ranks of a data-parallel run. The trainable
//! variables are laid end to end as one f32 vector, cut into one equal
//! shard per rank; each step the gradients are reduce-scattered (each
//! rank receives the sum of its shard), each rank updates its shard's f32
//! weights and moments, and the updated shards are all-gathered into every
//! rank's variables. Per rank, the optimiser holds 12 bytes per trained
//! weight divided by the world size, instead of 8 (f32) or 12 (bf16, with
//! its master copy).
//!
//! The update is `optimizer::AdamW`'s, operation for operation, so a
//! sharded run takes the steps a replicated one takes (to the rounding of
//! the summed gradient and its norm). Checkpoints hold the whole state in
//! `AdamW::state`'s names (gathered at save), so any number of ranks, or
//! one process, can resume them.
use std::collections::BTreeMap;

use tch::{Device, Kind, Tensor};

use crate::data_parallel::DataParallel;
use crate::optimizer::AdamWConfig;
use crate::TrainError;

pub struct ShardedAdamW {
    config: AdamWConfig,
    /// The trained variables, in name order, and where each starts in the
    /// flat vector.
    params: Vec<(String, Tensor)>,
    offsets: Vec<i64>,
    /// Weights in all variables, and the flat length (a multiple of the
    /// world size).
    total: i64,
    padded: i64,
    /// This rank's shard: `[start, start + shard)` of the flat vector, on
    /// the group's device.
    start: i64,
    shard: i64,
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
        let mut offsets = Vec::with_capacity(params.len());
        let mut total = 0;
        for (_, param) in &params {
            offsets.push(total);
            total += param.numel() as i64;
        }
        let world = dist.world_size() as i64;
        let padded = (total + world - 1) / world * world;
        let shard = padded / world;
        let device = dist.device();
        let mut optimizer = ShardedAdamW {
            config,
            offsets,
            total,
            padded,
            start: dist.rank() as i64 * shard,
            shard,
            device,
            master: Tensor::zeros([shard], (Kind::Float, device)),
            exp_avg: Tensor::zeros([shard], (Kind::Float, device)),
            exp_avg_sq: Tensor::zeros([shard], (Kind::Float, device)),
            params,
            step: 0,
        };
        optimizer.master = optimizer.my_shard(&optimizer.flat(|p| p.detach()));
        optimizer
    }

    /// Optimiser steps taken.
    pub fn steps(&self) -> u64 {
        self.step
    }

    pub fn zero_grad(&mut self) {
        for (_, param) in &self.params {
            let mut grad = param.grad();
            if grad.defined() {
                let _ = grad.zero_();
            }
        }
    }

    /// One step at `lr`, gradients summed over the ranks and clipped to
    /// `max_norm` (0: no clipping) first; returns their norm (0 without
    /// clipping, as `AdamW::clip_grad_norm` is not called then). Every
    /// rank must call it.
    pub fn step(&mut self, dist: &DataParallel, lr: f64, max_norm: f64) -> Result<f64, TrainError> {
        let _guard = tch::no_grad_guard();
        // A variable no rank used this step is left alone, as AdamW skips
        // a variable without a gradient.
        let defined: Vec<f64> = self
            .params
            .iter()
            .map(|(_, p)| f64::from(u8::from(p.grad().defined())))
            .collect();
        let used = dist.sum(&defined)?;
        let grads = self.flat(|p| {
            let grad = p.grad();
            if grad.defined() {
                grad
            } else {
                p.zeros_like()
            }
        });
        let mut grad = dist.reduce_scatter_sum(&grads)?;
        let mut norm = 0.0;
        if max_norm > 0.0 {
            let square = f64::try_from(grad.square().sum(Kind::Double))?;
            norm = dist.sum(&[square])?[0].sqrt();
            let coef = max_norm / (norm + 1e-6);
            if coef < 1.0 {
                grad *= coef;
            }
        }
        let mask = self.my_shard(&Tensor::cat(
            &self
                .params
                .iter()
                .zip(&used)
                .map(|((_, p), &used)| {
                    Tensor::full(
                        [p.numel() as i64],
                        i64::from(used > 0.0),
                        (Kind::Bool, Device::Cpu),
                    )
                })
                .collect::<Vec<_>>(),
            0,
        ));

        self.step += 1;
        let c = self.config;
        let bias1 = 1.0 - c.beta1.powi(self.step as i32);
        let bias2 = 1.0 - c.beta2.powi(self.step as i32);
        let mut weights = self.master.copy();
        if c.weight_decay != 0.0 {
            let _ = weights.g_mul_scalar_(1.0 - lr * c.weight_decay);
        }
        let mut exp_avg = self.exp_avg.copy();
        let _ = exp_avg.g_mul_scalar_(c.beta1);
        let _ = exp_avg.g_add_(&(&grad * (1.0 - c.beta1)));
        let mut exp_avg_sq = self.exp_avg_sq.copy();
        let _ = exp_avg_sq.g_mul_scalar_(c.beta2);
        let _ = exp_avg_sq.g_add_(&(&grad * &grad * (1.0 - c.beta2)));
        let denom = exp_avg_sq.sqrt() / bias2.sqrt() + c.eps;
        let update = (&exp_avg / denom) * (lr / bias1);
        let _ = weights.g_sub_(&update);
        self.master = weights.where_self(&mask, &self.master);
        self.exp_avg = exp_avg.where_self(&mask, &self.exp_avg);
        self.exp_avg_sq = exp_avg_sq.where_self(&mask, &self.exp_avg_sq);

        let whole = dist.all_gather_flat(&self.master)?;
        for ((_, param), &offset) in self.params.iter().zip(&self.offsets) {
            let values = whole
                .narrow(0, offset, param.numel() as i64)
                .view(param.size().as_slice());
            param.shallow_clone().copy_(&values);
        }
        Ok(norm)
    }

    /// The whole state in `AdamW::state`'s names (gathered from every
    /// rank; every rank must call it) and the step count.
    pub fn state(&self, dist: &DataParallel) -> Result<(Vec<(String, Tensor)>, u64), TrainError> {
        let exp_avg = dist.all_gather_flat(&self.exp_avg)?.to_device(Device::Cpu);
        let exp_avg_sq = dist
            .all_gather_flat(&self.exp_avg_sq)?
            .to_device(Device::Cpu);
        let master = dist.all_gather_flat(&self.master)?.to_device(Device::Cpu);
        let mut tensors = Vec::with_capacity(self.params.len() * 2);
        for ((name, param), &offset) in self.params.iter().zip(&self.offsets) {
            let piece = |flat: &Tensor| {
                flat.narrow(0, offset, param.numel() as i64)
                    .view(param.size().as_slice())
                    .copy()
            };
            tensors.push((format!("exp_avg.{name}"), piece(&exp_avg)));
            tensors.push((format!("exp_avg_sq.{name}"), piece(&exp_avg_sq)));
            if param.kind() != Kind::Float {
                tensors.push((format!("master.{name}"), piece(&master)));
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
        let get = |key: String| {
            tensors.get(&key).ok_or_else(|| TrainError::Checkpoint {
                path: Default::default(),
                message: format!("optimizer state has no `{key}`"),
            })
        };
        let mut moments = Vec::new();
        let mut squares = Vec::new();
        let mut masters = Vec::new();
        for (name, param) in &self.params {
            moments.push(
                get(format!("exp_avg.{name}"))?
                    .to_kind(Kind::Float)
                    .flatten(0, -1),
            );
            squares.push(
                get(format!("exp_avg_sq.{name}"))?
                    .to_kind(Kind::Float)
                    .flatten(0, -1),
            );
            let master = match param.kind() {
                Kind::Float => param.detach().to_device(Device::Cpu),
                _ => get(format!("master.{name}"))
                    .map_err(|_| TrainError::Checkpoint {
                        path: Default::default(),
                        message: format!(
                            "optimizer state has no `master.{name}`: it was saved by an f32 \
                             run; resume with dtype f32"
                        ),
                    })?
                    .shallow_clone(),
            };
            masters.push(master.to_kind(Kind::Float).flatten(0, -1));
        }
        let shard = |pieces: Vec<Tensor>| self.my_shard(&Tensor::cat(&pieces, 0));
        let (exp_avg, exp_avg_sq, master) = (shard(moments), shard(squares), shard(masters));
        (self.exp_avg, self.exp_avg_sq, self.master) = (exp_avg, exp_avg_sq, master);
        self.step = step;
        Ok(())
    }

    /// The variables it updates, in name order.
    pub fn params(&self) -> Vec<Tensor> {
        self.params.iter().map(|(_, p)| p.shallow_clone()).collect()
    }

    /// `f` of every variable, in f32, end to end and padded: `[padded]` on
    /// the group's device.
    fn flat(&self, f: impl Fn(&Tensor) -> Tensor) -> Tensor {
        let mut pieces: Vec<Tensor> = self
            .params
            .iter()
            .map(|(_, p)| {
                f(p).to_kind(Kind::Float)
                    .flatten(0, -1)
                    .to_device(self.device)
            })
            .collect();
        pieces.push(Tensor::zeros(
            [self.padded - self.total],
            (Kind::Float, self.device),
        ));
        Tensor::cat(&pieces, 0)
    }

    /// This rank's part of a flat vector of `total` (or `padded`) entries.
    fn my_shard(&self, flat: &Tensor) -> Tensor {
        let flat = flat.to_device(self.device);
        let have = flat.size()[0];
        let flat = if have < self.padded {
            let pad = Tensor::zeros([self.padded - have], (flat.kind(), self.device));
            Tensor::cat(&[flat, pad], 0)
        } else {
            flat
        };
        flat.narrow(0, self.start, self.shard).contiguous()
    }
}
