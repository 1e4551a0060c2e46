//! AdamW as `torch.optim.AdamW` computes it (decoupled weight decay,
//! bias-corrected moments), over named variables, with its state as
//! tensors so a checkpoint can hold it and a resumed run continue exactly
//! (tch's optimisers keep their state out of reach). Gradient clipping by
//! global norm as `torch.nn.utils.clip_grad_norm_`. A variable kept in a
//! lower precision (bf16) gets an f32 master copy that the update works
//! on and that is rounded into the variable after each step, so updates
//! smaller than the variable's precision still add up (mixed precision).
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::TrainError;

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdamWConfig {
    #[serde(default = "default_beta1")]
    pub beta1: f64,
    #[serde(default = "default_beta2")]
    pub beta2: f64,
    #[serde(default = "default_eps")]
    pub eps: f64,
    /// The paper trains with 0.
    #[serde(default)]
    pub weight_decay: f64,
}

fn default_beta1() -> f64 {
    0.9
}
fn default_beta2() -> f64 {
    0.999
}
fn default_eps() -> f64 {
    1e-8
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig {
            beta1: default_beta1(),
            beta2: default_beta2(),
            eps: default_eps(),
            weight_decay: 0.0,
        }
    }
}

struct Slot {
    param: Tensor,
    /// The f32 weights when `param` is in a lower precision.
    master: Option<Tensor>,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
}

pub struct AdamW {
    config: AdamWConfig,
    slots: BTreeMap<String, Slot>,
    step: u64,
}

impl AdamW {
    /// An optimiser over the given (trainable) variables.
    pub fn new(params: Vec<(String, Tensor)>, config: AdamWConfig) -> Self {
        let slots = params
            .into_iter()
            .map(|(name, param)| {
                let zeros = || param.zeros_like().to_kind(Kind::Float);
                let master =
                    (param.kind() != Kind::Float).then(|| param.detach().to_kind(Kind::Float));
                let slot = Slot {
                    exp_avg: zeros(),
                    exp_avg_sq: zeros(),
                    master,
                    param,
                };
                (name, slot)
            })
            .collect();
        AdamW {
            config,
            slots,
            step: 0,
        }
    }

    /// Optimiser steps taken.
    pub fn steps(&self) -> u64 {
        self.step
    }

    /// Names of the variables it updates.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.slots.keys().map(String::as_str)
    }

    /// The variables it updates, in name order.
    pub fn params(&self) -> Vec<Tensor> {
        self.slots
            .values()
            .map(|s| s.param.shallow_clone())
            .collect()
    }

    pub fn zero_grad(&mut self) {
        zero_grads(self.slots.values().map(|s| &s.param));
    }

    /// Scales gradients so their global L2 norm is at most `max_norm`;
    /// returns the norm before clipping.
    pub fn clip_grad_norm(&mut self, max_norm: f64) -> f64 {
        let _guard = tch::no_grad_guard();
        let norms: Vec<Tensor> = self
            .slots
            .values()
            .map(|s| s.param.grad())
            .filter(Tensor::defined)
            .map(|g| g.to_kind(Kind::Float).norm())
            .collect();
        if norms.is_empty() {
            return 0.0;
        }
        let total = f64::try_from(Tensor::stack(&norms, 0).norm()).unwrap_or(f64::NAN);
        let coef = max_norm / (total + 1e-6);
        if coef < 1.0 {
            for slot in self.slots.values() {
                let mut grad = slot.param.grad();
                if grad.defined() {
                    let _ = grad.g_mul_scalar_(coef);
                }
            }
        }
        total
    }

    /// One update at learning rate `lr`. Variables without a gradient
    /// (unused this step) are left as they are.
    pub fn step(&mut self, lr: f64) {
        let _guard = tch::no_grad_guard();
        self.step += 1;
        let c = self.config;
        let bias1 = 1.0 - c.beta1.powi(self.step as i32);
        let bias2 = 1.0 - c.beta2.powi(self.step as i32);
        for slot in self.slots.values_mut() {
            let grad = slot.param.grad();
            if !grad.defined() {
                continue;
            }
            let grad = grad.to_kind(Kind::Float);
            let weights = slot.master.as_mut().unwrap_or(&mut slot.param);
            let moments = (&mut slot.exp_avg, &mut slot.exp_avg_sq);
            update(&c, lr, (bias1, bias2), weights, moments, &grad);
            if let Some(master) = &slot.master {
                slot.param.copy_(master);
            }
        }
    }

    /// The message for a bf16 variable whose saved state has no f32 master.
    pub(crate) fn missing_master(key: &str) -> String {
        format!("optimizer state has no `{key}`: it was saved by an f32 run; resume with dtype f32")
    }

    /// The state, as named tensors (`exp_avg.NAME`, `exp_avg_sq.NAME`, and
    /// `master.NAME` for a variable with an f32 master copy) and the step
    /// count.
    pub fn state(&self) -> (Vec<(String, Tensor)>, u64) {
        let mut tensors = Vec::with_capacity(self.slots.len() * 2);
        for (name, slot) in &self.slots {
            tensors.push((format!("exp_avg.{name}"), slot.exp_avg.shallow_clone()));
            tensors.push((
                format!("exp_avg_sq.{name}"),
                slot.exp_avg_sq.shallow_clone(),
            ));
            if let Some(master) = &slot.master {
                tensors.push((format!("master.{name}"), master.shallow_clone()));
            }
        }
        (tensors, self.step)
    }

    /// Restores a state saved by [`AdamW::state`].
    pub fn load_state(
        &mut self,
        tensors: &BTreeMap<String, Tensor>,
        step: u64,
    ) -> Result<(), TrainError> {
        let _guard = tch::no_grad_guard();
        for (name, slot) in &mut self.slots {
            for (key, target) in [
                (format!("exp_avg.{name}"), &mut slot.exp_avg),
                (format!("exp_avg_sq.{name}"), &mut slot.exp_avg_sq),
            ] {
                let saved = tensors.get(&key).ok_or_else(|| TrainError::Checkpoint {
                    path: Default::default(),
                    message: format!("optimizer state has no `{key}`"),
                })?;
                target.f_copy_(saved)?;
            }
            if let Some(master) = &mut slot.master {
                let key = format!("master.{name}");
                let saved = tensors.get(&key).ok_or_else(|| TrainError::Checkpoint {
                    path: Default::default(),
                    message: Self::missing_master(&key),
                })?;
                master.f_copy_(saved)?;
            }
        }
        self.step = step;
        Ok(())
    }
}

/// Zeroes the gradients the variables have (keeping them defined, as
/// `torch.optim`'s `zero_grad(set_to_none=False)`).
pub(crate) fn zero_grads<'a>(params: impl Iterator<Item = &'a Tensor>) {
    for param in params {
        let mut grad = param.grad();
        if grad.defined() {
            let _ = grad.zero_();
        }
    }
}

/// One AdamW update, in place, as `torch.optim.AdamW` computes it:
/// decoupled weight decay, then the moments, then the bias-corrected step
/// (`bias` is `(1 - beta1^t, 1 - beta2^t)`). `AdamW` runs it per variable,
/// `zero::ShardedAdamW` on its shard of all of them.
pub(crate) fn update(
    c: &AdamWConfig,
    lr: f64,
    (bias1, bias2): (f64, f64),
    weights: &mut Tensor,
    (exp_avg, exp_avg_sq): (&mut Tensor, &mut Tensor),
    grad: &Tensor,
) {
    if c.weight_decay != 0.0 {
        let _ = weights.g_mul_scalar_(1.0 - lr * c.weight_decay);
    }
    let _ = exp_avg.g_mul_scalar_(c.beta1);
    let _ = exp_avg.g_add_(&(grad * (1.0 - c.beta1)));
    let _ = exp_avg_sq.g_mul_scalar_(c.beta2);
    let _ = exp_avg_sq.g_add_(&(grad * grad * (1.0 - c.beta2)));
    let denom = exp_avg_sq.sqrt() / bias2.sqrt() + c.eps;
    let step = (&*exp_avg / denom) * (lr / bias1);
    let _ = weights.g_sub_(&step);
}
