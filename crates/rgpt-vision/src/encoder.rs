//! The transformer encoder blocks CLIP and SigLIP share (transformers'
//! `modeling_clip.py`, which `modeling_siglip.py` copies): pixel checks and
//! position-embedding interpolation for the embeddings, linear and
//! LayerNorm layers, multi-head attention, the fc1/act/fc2 MLP, and the
//! pre-norm encoder stack that returns every hidden state.
use tch::nn::Init;
use tch::{nn, Device, Kind, Tensor};

use crate::error::VisionError;

type Result<T> = std::result::Result<T, VisionError>;

/// Checks `pixel_values` is [batch, channels, height, width] on `device`,
/// with at least one patch each way, and casts it to `kind`.
pub(crate) fn check_pixels(
    pixel_values: &Tensor,
    channels: i64,
    patch_size: i64,
    device: Device,
    kind: Kind,
) -> Result<Tensor> {
    let size = pixel_values.size();
    let &[batch, c, h, w] = size.as_slice() else {
        return Err(VisionError::InvalidInput(format!(
            "pixel_values must be [batch, {channels}, height, width], got shape {size:?}"
        )));
    };
    if batch < 1 || c != channels || h < patch_size || w < patch_size {
        return Err(VisionError::InvalidInput(format!(
            "pixel_values of shape {size:?} do not fit the model: expected [batch >= 1, \
             {channels}, height >= {patch_size}, width >= {patch_size}]"
        )));
    }
    if pixel_values.device() != device {
        return Err(VisionError::InvalidInput(format!(
            "pixel_values are on {:?} but the model is on {device:?}",
            pixel_values.device()
        )));
    }
    Ok(pixel_values.f_to_kind(kind)?)
}

/// Resizes a square grid of position embeddings [n, dim] to
/// [new_h * new_w, dim] as HF's `interpolate_pos_encoding` does: bicubic,
/// `align_corners=False`, output size given (no scale factor).
pub(crate) fn interpolate_positions(table: &Tensor, new_h: i64, new_w: i64) -> Result<Tensor> {
    let size = table.size();
    let (n, dim) = (size[0], size[1]);
    // HF: `torch_int(num_positions**0.5)`.
    let side = (n as f64).sqrt() as i64;
    if side * side != n {
        return Err(VisionError::InvalidInput(format!(
            "cannot interpolate {n} position embeddings to a {new_h}x{new_w} grid: \
             they do not form a square grid"
        )));
    }
    let grid = table
        .reshape([1, side, side, dim])
        .permute([0, 3, 1, 2])
        .f_upsample_bicubic2d([new_h, new_w], false, None, None)?;
    Ok(grid.permute([0, 2, 3, 1]).reshape([new_h * new_w, dim]))
}

/// The MLP activations HF vision towers use (`ACT2FN` names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Activation {
    /// `x * sigmoid(1.702 x)`, OpenAI CLIP.
    QuickGelu,
    /// Exact (erf) GELU.
    Gelu,
    /// Tanh-approximated GELU (`gelu_pytorch_tanh`, `gelu_new`), SigLIP.
    GeluTanh,
}

impl Activation {
    pub(crate) fn from_name(name: &str) -> std::result::Result<Self, String> {
        match name {
            "quick_gelu" => Ok(Activation::QuickGelu),
            "gelu" => Ok(Activation::Gelu),
            "gelu_pytorch_tanh" | "gelu_new" => Ok(Activation::GeluTanh),
            other => Err(format!(
                "hidden_act `{other}` is not supported \
                 (supported: quick_gelu, gelu, gelu_pytorch_tanh, gelu_new)"
            )),
        }
    }

    fn forward(self, x: &Tensor) -> Tensor {
        match self {
            Activation::QuickGelu => x * (x * 1.702).sigmoid(),
            Activation::Gelu => x.gelu("none"),
            Activation::GeluTanh => x.gelu("tanh"),
        }
    }
}

#[derive(Debug)]
pub(crate) struct Linear {
    weight: Tensor, // [out, in]
    bias: Tensor,   // [out]
}

impl Linear {
    pub(crate) fn new(vs: nn::Path, in_dim: usize, out_dim: usize) -> Self {
        Linear {
            weight: vs.var("weight", &[out_dim as i64, in_dim as i64], Init::Const(0.0)),
            bias: vs.var("bias", &[out_dim as i64], Init::Const(0.0)),
        }
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Tensor {
        x.linear(&self.weight, Some(&self.bias))
    }

    fn shallow_clone(&self) -> Self {
        Linear {
            weight: self.weight.shallow_clone(),
            bias: self.bias.shallow_clone(),
        }
    }
}

#[derive(Debug)]
pub(crate) struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
    dim: i64,
}

impl LayerNorm {
    pub(crate) fn new(vs: nn::Path, dim: usize, eps: f64) -> Self {
        LayerNorm {
            weight: vs.var("weight", &[dim as i64], Init::Const(1.0)),
            bias: vs.var("bias", &[dim as i64], Init::Const(0.0)),
            eps,
            dim: dim as i64,
        }
    }

    fn shallow_clone(&self) -> Self {
        LayerNorm {
            weight: self.weight.shallow_clone(),
            bias: self.bias.shallow_clone(),
            ..*self
        }
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Tensor {
        x.layer_norm(
            [self.dim],
            Some(&self.weight),
            Some(&self.bias),
            self.eps,
            true,
        )
    }
}

/// `CLIPAttention` / `SiglipAttention`: multi-head attention, bidirectional
/// unless a mask says otherwise (CLIP's text tower is causal).
#[derive(Debug)]
struct Attention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    out_proj: Linear,
    num_heads: i64,
    head_dim: i64,
}

impl Attention {
    fn new(vs: nn::Path, hidden: usize, num_heads: usize) -> Self {
        Attention {
            q_proj: Linear::new(&vs / "q_proj", hidden, hidden),
            k_proj: Linear::new(&vs / "k_proj", hidden, hidden),
            v_proj: Linear::new(&vs / "v_proj", hidden, hidden),
            out_proj: Linear::new(&vs / "out_proj", hidden, hidden),
            num_heads: num_heads as i64,
            head_dim: (hidden / num_heads) as i64,
        }
    }

    /// `mask` [batch, 1, seq, seq] bool: which keys each query may see.
    fn forward(&self, x: &Tensor, mask: Option<&Tensor>) -> Tensor {
        let size = x.size(); // [batch, seq, hidden]
        let (b, t) = (size[0], size[1]);
        // [batch, heads, seq, head_dim]
        let heads = |y: Tensor| {
            y.view([b, t, self.num_heads, self.head_dim])
                .transpose(1, 2)
        };
        let q = heads(self.q_proj.forward(x));
        let k = heads(self.k_proj.forward(x));
        let v = heads(self.v_proj.forward(x));
        // Default scale 1/sqrt(head_dim), as HF's `self.scale`.
        let out = Tensor::scaled_dot_product_attention(&q, &k, &v, mask, 0.0, false, None, false);
        let out = out
            .transpose(1, 2)
            .reshape([b, t, self.num_heads * self.head_dim]);
        self.out_proj.forward(&out)
    }
}

/// `CLIPMLP` / `SiglipMLP`: fc1, activation, fc2.
#[derive(Debug)]
pub(crate) struct Mlp {
    fc1: Linear,
    fc2: Linear,
    act: Activation,
}

impl Mlp {
    pub(crate) fn new(vs: nn::Path, hidden: usize, intermediate: usize, act: Activation) -> Self {
        Mlp {
            fc1: Linear::new(&vs / "fc1", hidden, intermediate),
            fc2: Linear::new(&vs / "fc2", intermediate, hidden),
            act,
        }
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Tensor {
        self.fc2.forward(&self.act.forward(&self.fc1.forward(x)))
    }
}

/// `CLIPEncoderLayer` / `SiglipEncoderLayer`: pre-norm attention and MLP.
#[derive(Debug)]
struct EncoderLayer {
    self_attn: Attention,
    layer_norm1: LayerNorm,
    mlp: Mlp,
    layer_norm2: LayerNorm,
}

impl EncoderLayer {
    /// Whether any of the layer's variables is trained.
    fn trains(&self) -> bool {
        let (attn, mlp) = (&self.self_attn, &self.mlp);
        let linears = [
            &attn.q_proj,
            &attn.k_proj,
            &attn.v_proj,
            &attn.out_proj,
            &mlp.fc1,
            &mlp.fc2,
        ];
        let norms = [&self.layer_norm1, &self.layer_norm2];
        linears
            .iter()
            .any(|l| l.weight.requires_grad() || l.bias.requires_grad())
            || norms
                .iter()
                .any(|n| n.weight.requires_grad() || n.bias.requires_grad())
    }

    /// The same layer, sharing its tensors: what a checkpointed segment
    /// owns to run the layer again in the backward pass.
    fn shallow_clone(&self) -> Self {
        let (attn, mlp) = (&self.self_attn, &self.mlp);
        EncoderLayer {
            self_attn: Attention {
                q_proj: attn.q_proj.shallow_clone(),
                k_proj: attn.k_proj.shallow_clone(),
                v_proj: attn.v_proj.shallow_clone(),
                out_proj: attn.out_proj.shallow_clone(),
                ..*attn
            },
            layer_norm1: self.layer_norm1.shallow_clone(),
            mlp: Mlp {
                fc1: mlp.fc1.shallow_clone(),
                fc2: mlp.fc2.shallow_clone(),
                act: mlp.act,
            },
            layer_norm2: self.layer_norm2.shallow_clone(),
        }
    }

    fn forward(&self, x: &Tensor, mask: Option<&Tensor>) -> Tensor {
        let h = x + self.self_attn.forward(&self.layer_norm1.forward(x), mask);
        &h + self.mlp.forward(&self.layer_norm2.forward(&h))
    }
}

/// `CLIPEncoder` / `SiglipEncoder` (`encoder.layers.{i}`).
#[derive(Debug)]
pub(crate) struct Encoder {
    layers: Vec<EncoderLayer>,
    /// Recompute each layer in the backward pass instead of keeping its
    /// activations (`rgpt_autograd::checkpoint`).
    pub(crate) activation_checkpointing: bool,
}

/// The encoder sizes CLIP and SigLIP configs share.
pub(crate) struct EncoderDims {
    pub hidden: usize,
    pub intermediate: usize,
    pub num_heads: usize,
    pub num_layers: usize,
    pub eps: f64,
    pub act: Activation,
}

impl Encoder {
    pub(crate) fn new(vs: nn::Path, dims: &EncoderDims) -> Self {
        let layers = (0..dims.num_layers)
            .map(|i| {
                let vs = &vs / "layers" / i;
                EncoderLayer {
                    self_attn: Attention::new(&vs / "self_attn", dims.hidden, dims.num_heads),
                    layer_norm1: LayerNorm::new(&vs / "layer_norm1", dims.hidden, dims.eps),
                    mlp: Mlp::new(&vs / "mlp", dims.hidden, dims.intermediate, dims.act),
                    layer_norm2: LayerNorm::new(&vs / "layer_norm2", dims.hidden, dims.eps),
                }
            })
            .collect();
        Encoder {
            layers,
            activation_checkpointing: false,
        }
    }

    /// Runs every layer over `x`; returns `x` followed by each layer's
    /// output, as HF's `output_hidden_states`.
    pub(crate) fn forward(&self, x: Tensor) -> Vec<Tensor> {
        self.forward_masked(x, None)
    }

    /// [`Encoder::forward`] with attention limited by `mask` [batch, 1,
    /// seq, seq] (bool, true where a query may see a key).
    pub(crate) fn forward_masked(&self, x: Tensor, mask: Option<&Tensor>) -> Vec<Tensor> {
        let mut states = Vec::with_capacity(self.layers.len() + 1);
        states.push(x);
        for layer in &self.layers {
            let x = &states[states.len() - 1];
            // A frozen layer over an input that needs no gradient has no
            // backward to save memory for.
            let next = if self.activation_checkpointing && (x.requires_grad() || layer.trains()) {
                let layer = layer.shallow_clone();
                let mask = mask.map(Tensor::shallow_clone);
                rgpt_autograd::checkpoint(x, move |x| layer.forward(x, mask.as_ref()))
            } else {
                layer.forward(x, mask)
            };
            states.push(next);
        }
        states
    }
}
