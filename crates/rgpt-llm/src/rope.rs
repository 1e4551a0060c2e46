//! Rotary position embeddings as transformers computes them
//! (`modeling_rope_utils.py`: default, `linear` and `llama3` inverse
//! frequencies; `LlamaRotaryEmbedding.forward` for cos/sin). The frequencies
//! are computed in f32 exactly as there, so positions far into a long context
//! round the same way they do in the reference.
use std::f64::consts::PI;

use tch::{Device, Kind, Tensor};

use crate::config::{LlamaConfig, RopeScaling};

#[derive(Debug)]
pub struct RotaryEmbedding {
    inv_freq: Tensor, // [head_dim / 2], f32
}

impl RotaryEmbedding {
    pub fn new(config: &LlamaConfig, scaling: &RopeScaling, device: Device) -> Self {
        let dim = config.head_dim() as i64;
        let exponent = Tensor::arange_start_step(0, dim, 2, (Kind::Int64, device))
            .to_kind(Kind::Float)
            / dim as f64;
        let inv_freq = Tensor::pow_scalar(config.rope_theta(), &exponent).reciprocal();
        let inv_freq = match *scaling {
            RopeScaling::Default => inv_freq,
            RopeScaling::Linear { factor } => inv_freq / factor,
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            } => {
                let old_context_len = original_max_position_embeddings as f64;
                let low_freq_wavelen = old_context_len / low_freq_factor;
                let high_freq_wavelen = old_context_len / high_freq_factor;
                let wavelen = inv_freq.reciprocal() * (2.0 * PI);
                let scaled =
                    inv_freq.where_self(&wavelen.le(low_freq_wavelen), &(&inv_freq / factor));
                let smooth = (old_context_len / &wavelen - low_freq_factor)
                    / (high_freq_factor - low_freq_factor);
                let smoothed = (smooth.neg() + 1.0) * &scaled / factor + &smooth * &scaled;
                let is_medium = wavelen
                    .ge(high_freq_wavelen)
                    .logical_and(&wavelen.le(low_freq_wavelen));
                smoothed.where_self(&is_medium, &scaled)
            }
        };
        RotaryEmbedding { inv_freq }
    }

    /// cos and sin for `position_ids` [batch, seq], each [batch, seq, head_dim]
    /// in `kind`.
    pub fn cos_sin(&self, position_ids: &Tensor, kind: Kind) -> (Tensor, Tensor) {
        let freqs = position_ids.to_kind(Kind::Float).unsqueeze(-1) * &self.inv_freq;
        let emb = Tensor::cat(&[&freqs, &freqs], -1);
        (emb.cos().to_kind(kind), emb.sin().to_kind(kind))
    }
}

/// `q * cos + rotate_half(q) * sin` on [batch, heads, seq, head_dim] with
/// cos/sin [batch, seq, head_dim].
pub fn apply_rotary(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Tensor {
    let half = x.size()[3] / 2;
    let x1 = x.narrow(3, 0, half);
    let x2 = x.narrow(3, half, half);
    let rotated = Tensor::cat(&[&x2.neg(), &x1], 3);
    x * cos.unsqueeze(1) + rotated * sin.unsqueeze(1)
}
