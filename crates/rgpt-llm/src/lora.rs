//! LoRA (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language
//! Models") on the decoder's linear layers, as PEFT's `LoraLayer` builds it
//! (peft 0.17, `tuners/lora/layer.py`): a frozen base `W` [out, in] gains
//! `lora_A` [r, in] (kaiming-uniform with a = sqrt(5), nn.Linear's default;
//! drawn from a generator seeded by the caller, not libtorch's global one,
//! so a seed gives the same adapters whatever else the process builds)
//! and `lora_B` [out, r] (zeros, so a fresh adapter changes nothing), and
//! the layer computes `x W^T + (x A^T B^T) * alpha / r`. The variables sit
//! under the adapted module with PEFT's names
//! (`model.layers.{i}.self_attn.q_proj.lora_A.weight`). Merging folds
//! `B A * alpha / r` into `W`, as PEFT's `merge_and_unload`, so a merged model
//! is a plain LLaMA checkpoint. Deliberate differences: no adapter dropout
//! (PEFT's default `lora_dropout` is 0) and no rsLoRA / DoRA variants.
use rand::Rng;
use serde::{Deserialize, Serialize};
use tch::nn::{self, Init};
use tch::Tensor;

use crate::LlmError;

/// The decoder modules an adapter can sit on (PEFT's `target_modules` names
/// for LLaMA).
pub const TARGET_MODULES: [&str; 7] = [
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
];

/// PEFT's `LoraConfig`, with the fields RGPT uses. `r` and `lora_alpha`
/// (PEFT's names) are accepted for `rank` and `alpha`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoraConfig {
    /// Rank of the update (PEFT's `r`), e.g. 8.
    #[serde(alias = "r")]
    pub rank: usize,
    /// The update is scaled by `alpha / rank` (PEFT's `lora_alpha`), e.g. 16.
    #[serde(alias = "lora_alpha")]
    pub alpha: f64,
    /// Which linear layers of every decoder block get an adapter, e.g.
    /// `[q_proj, v_proj]` (see [`TARGET_MODULES`]).
    pub target_modules: Vec<String>,
}

impl LoraConfig {
    /// `alpha / rank`, the factor of the low-rank update.
    pub fn scaling(&self) -> f64 {
        self.alpha / self.rank as f64
    }

    /// Rank at least 1, a positive alpha, and known, distinct target modules.
    pub fn validate(&self) -> Result<(), LlmError> {
        let invalid = |field, message: String| Err(LlmError::Lora { field, message });
        if self.rank == 0 {
            return invalid("rank", "must be at least 1".into());
        }
        if !(self.alpha.is_finite() && self.alpha > 0.0) {
            return invalid("alpha", format!("{} must be a positive number", self.alpha));
        }
        if self.target_modules.is_empty() {
            return invalid(
                "target_modules",
                format!("list at least one of {}", TARGET_MODULES.join(", ")),
            );
        }
        for (i, module) in self.target_modules.iter().enumerate() {
            if !TARGET_MODULES.contains(&module.as_str()) {
                return invalid(
                    "target_modules",
                    format!(
                        "unknown module `{module}`: use {}",
                        TARGET_MODULES.join(", ")
                    ),
                );
            }
            if self.target_modules[..i].contains(module) {
                return invalid("target_modules", format!("`{module}` is listed twice"));
            }
        }
        Ok(())
    }
}

/// Whether a variable name is a LoRA adapter's (`...lora_A.weight` or
/// `...lora_B.weight`).
pub fn is_adapter_variable(name: &str) -> bool {
    name.ends_with(".lora_A.weight") || name.ends_with(".lora_B.weight")
}

/// The adapter of one linear layer.
#[derive(Debug)]
pub(crate) struct LoraAdapter {
    a: Tensor, // [rank, in]
    b: Tensor, // [out, rank]
    scaling: f64,
    /// Variable names of the base weight, `lora_A` and `lora_B`.
    pub(crate) base_name: String,
    pub(crate) a_name: String,
    pub(crate) b_name: String,
}

impl LoraAdapter {
    pub(crate) fn trains(&self) -> bool {
        self.a.requires_grad() || self.b.requires_grad()
    }

    /// The same adapter, sharing its tensors.
    pub(crate) fn shallow_clone(&self) -> Self {
        LoraAdapter {
            a: self.a.shallow_clone(),
            b: self.b.shallow_clone(),
            scaling: self.scaling,
            base_name: self.base_name.clone(),
            a_name: self.a_name.clone(),
            b_name: self.b_name.clone(),
        }
    }

    /// Declares `lora_A` and `lora_B` under `vs`, the adapted layer's path,
    /// in the VarStore's kind and device, as trainable variables; `lora_A`'s
    /// values come from `rng`.
    pub(crate) fn new<R: Rng>(
        vs: &nn::Path,
        in_dim: i64,
        out_dim: i64,
        config: &LoraConfig,
        rng: &mut R,
    ) -> Self {
        let rank = config.rank as i64;
        // kaiming_uniform_(a = sqrt(5)) on [rank, in]: gain sqrt(2 / 6), so
        // the bound gain * sqrt(3 / fan_in) is 1 / sqrt(in).
        let bound = 1.0 / (in_dim as f64).sqrt();
        let a_path = vs / "lora_A";
        let b_path = vs / "lora_B";
        let mut a = a_path.var("weight", &[rank, in_dim], Init::Const(0.0));
        let values: Vec<f32> = (0..rank * in_dim)
            .map(|_| rng.random_range(-bound..bound) as f32)
            .collect();
        tch::no_grad(|| {
            let drawn = Tensor::from_slice(&values).view([rank, in_dim]);
            a.copy_(&drawn.to_kind(a.kind()).to_device(a.device()))
        });
        let b = b_path.var("weight", &[out_dim, rank], Init::Const(0.0));
        LoraAdapter {
            a,
            b,
            scaling: config.scaling(),
            base_name: vs.path("weight"),
            a_name: a_path.path("weight"),
            b_name: b_path.path("weight"),
        }
    }

    /// The update to the base layer's output: `(x A^T B^T) * scaling`.
    pub(crate) fn forward(&self, x: &Tensor) -> Tensor {
        x.linear::<&Tensor>(&self.a, None)
            .linear::<&Tensor>(&self.b, None)
            * self.scaling
    }

    /// `B A * scaling` [out, in], in the kind of `like`, without gradient.
    pub(crate) fn delta_weight(&self, like: &Tensor) -> Tensor {
        let _guard = tch::no_grad_guard();
        (self.b.matmul(&self.a) * self.scaling).to_kind(like.kind())
    }

    /// Whether `tensor` is one of this adapter's variables.
    pub(crate) fn owns(&self, tensor: &Tensor) -> bool {
        let ptr = tensor.data_ptr();
        ptr == self.a.data_ptr() || ptr == self.b.data_ptr()
    }
}
