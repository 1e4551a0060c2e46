//! The connector (paper Sec. 3.1): one two-layer MLP, shared by image tokens
//! and region features, that projects vision features into the word-embedding
//! space of the language decoder. It is LLaVA-1.5's `mlp2x_gelu` projector,
//! reproduced after transformers' `LlavaMultiModalProjector`
//! (`models/llava/modeling_llava.py`, v5.23): `linear_2(gelu(linear_1(x)))`,
//! with the HF tensor names `multi_modal_projector.linear_1/linear_2`.
//! Sharing one projector is what makes a region embedding live in the same
//! space as the image tokens the decoder was aligned on.

use serde::Deserialize;
use tch::nn::{self, Init};
use tch::Tensor;

/// The projector fields of a LLaVA / RGPT `config.json`.
#[derive(Debug, Clone, Deserialize)]
pub struct ConnectorConfig {
    /// Width of the vision features (times the number of selected layers).
    pub vision_hidden_size: usize,
    /// Width of the decoder's word embeddings.
    pub text_hidden_size: usize,
    #[serde(default = "default_act")]
    pub projector_hidden_act: String,
    #[serde(default = "default_bias")]
    pub multimodal_projector_bias: bool,
}

fn default_act() -> String {
    "gelu".into()
}

fn default_bias() -> bool {
    true
}

/// Activations transformers' `ACT2FN` names that LLaVA-style projectors use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// Exact (erf) GELU: HF's `gelu`.
    Gelu,
    /// HF's `gelu_pytorch_tanh` / `gelu_new`.
    GeluTanh,
}

impl Activation {
    pub fn from_hf_name(name: &str) -> Option<Self> {
        match name {
            "gelu" => Some(Activation::Gelu),
            "gelu_pytorch_tanh" | "gelu_new" => Some(Activation::GeluTanh),
            _ => None,
        }
    }

    fn apply(self, x: &Tensor) -> Tensor {
        match self {
            Activation::Gelu => x.gelu("none"),
            Activation::GeluTanh => x.gelu("tanh"),
        }
    }
}

#[derive(Debug)]
struct Linear {
    weight: Tensor, // [out, in]
    bias: Option<Tensor>,
}

impl Linear {
    fn new(vs: nn::Path, in_dim: usize, out_dim: usize, bias: bool) -> Self {
        // Kaiming-uniform like torch's nn.Linear, so a freshly composed RGPT
        // (connector not loaded from a checkpoint) trains from a sane start.
        let bound = 1.0 / (in_dim as f64).sqrt();
        let init = Init::Uniform {
            lo: -bound,
            up: bound,
        };
        Linear {
            weight: vs.var("weight", &[out_dim as i64, in_dim as i64], init),
            bias: bias.then(|| vs.var("bias", &[out_dim as i64], init)),
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        x.linear(&self.weight, self.bias.as_ref())
    }
}

/// `multi_modal_projector`: vision features [..., vision] -> [..., text].
#[derive(Debug)]
pub struct Connector {
    linear_1: Linear,
    linear_2: Linear,
    activation: Activation,
}

/// A projector activation this crate does not implement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsupportedActivation(pub String);

impl std::fmt::Display for UnsupportedActivation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "projector_hidden_act `{}` is not supported (use gelu or gelu_pytorch_tanh)",
            self.0
        )
    }
}

impl std::error::Error for UnsupportedActivation {}

impl Connector {
    /// Declares the projector under `vs` (e.g. `root / "multi_modal_projector"`).
    pub fn new(vs: &nn::Path, config: &ConnectorConfig) -> Result<Self, UnsupportedActivation> {
        let activation = Activation::from_hf_name(&config.projector_hidden_act)
            .ok_or_else(|| UnsupportedActivation(config.projector_hidden_act.clone()))?;
        let (vision, text, bias) = (
            config.vision_hidden_size,
            config.text_hidden_size,
            config.multimodal_projector_bias,
        );
        Ok(Connector {
            linear_1: Linear::new(vs / "linear_1", vision, text, bias),
            linear_2: Linear::new(vs / "linear_2", text, text, bias),
            activation,
        })
    }

    /// Projects image tokens or pooled region features alike.
    pub fn forward(&self, features: &Tensor) -> Tensor {
        let hidden = self.activation.apply(&self.linear_1.forward(features));
        self.linear_2.forward(&hidden)
    }
}
