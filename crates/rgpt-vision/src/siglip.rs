//! The SigLIP vision tower, after transformers' `SiglipVisionModel`
//! (`models/siglip/modeling_siglip.py`, v5.23): a patch conv with bias and
//! learned position embeddings (no class token), the CLIP encoder layers
//! (shared with [`crate::clip`], as HF copies them) with a
//! `gelu_pytorch_tanh` MLP, `post_layernorm` on every token, and the
//! optional multi-head attention pooling head (`head.*`, on when
//! `vision_use_head`, HF's default).
//!
//! Differences from the reference: `forward` always behaves as HF's
//! `interpolate_pos_encoding=True` (identical to the default at the
//! configured image size) and always returns every hidden state. As in HF,
//! `hidden_states` are the un-normed layer outputs and `last_hidden_state`
//! is `post_layernorm` of the last one.
use std::path::Path;

use serde::Deserialize;
use tch::nn::Init;
use tch::{nn, Device, Kind, Tensor};

use crate::clip::{select_features, FeatureSelect};
use crate::encoder::{
    check_pixels, interpolate_positions, Activation, Encoder, EncoderDims, LayerNorm, Mlp,
};
use crate::error::VisionError;
use crate::hf_config::{read_json, validate_common, vision_model_path, vision_section};

type Result<T> = std::result::Result<T, VisionError>;

/// HF `SiglipVisionConfig` (the `vision_config` of a `SiglipConfig`), with
/// HF's defaults.
#[derive(Debug, Clone, Deserialize)]
pub struct SiglipVisionConfig {
    #[serde(default)]
    pub model_type: Option<String>,
    #[serde(default = "default_hidden_size")]
    pub hidden_size: usize,
    #[serde(default = "default_intermediate_size")]
    pub intermediate_size: usize,
    #[serde(default = "default_num_layers")]
    pub num_hidden_layers: usize,
    #[serde(default = "default_num_heads")]
    pub num_attention_heads: usize,
    #[serde(default = "default_num_channels")]
    pub num_channels: usize,
    #[serde(default = "default_image_size")]
    pub image_size: usize,
    #[serde(default = "default_patch_size")]
    pub patch_size: usize,
    #[serde(default = "default_hidden_act")]
    pub hidden_act: String,
    #[serde(default = "default_layer_norm_eps")]
    pub layer_norm_eps: f64,
    #[serde(default)]
    pub attention_dropout: f64,
    #[serde(default = "default_vision_use_head")]
    pub vision_use_head: bool,
}

fn default_hidden_size() -> usize {
    768
}
fn default_intermediate_size() -> usize {
    3072
}
fn default_num_layers() -> usize {
    12
}
fn default_num_heads() -> usize {
    12
}
fn default_num_channels() -> usize {
    3
}
fn default_image_size() -> usize {
    224
}
fn default_patch_size() -> usize {
    16
}
fn default_hidden_act() -> String {
    "gelu_pytorch_tanh".into()
}
fn default_layer_norm_eps() -> f64 {
    1e-6
}
fn default_vision_use_head() -> bool {
    true
}

impl Default for SiglipVisionConfig {
    fn default() -> Self {
        SiglipVisionConfig {
            model_type: Some("siglip_vision_model".into()),
            hidden_size: default_hidden_size(),
            intermediate_size: default_intermediate_size(),
            num_hidden_layers: default_num_layers(),
            num_attention_heads: default_num_heads(),
            num_channels: default_num_channels(),
            image_size: default_image_size(),
            patch_size: default_patch_size(),
            hidden_act: default_hidden_act(),
            layer_norm_eps: default_layer_norm_eps(),
            attention_dropout: 0.0,
            vision_use_head: default_vision_use_head(),
        }
    }
}

impl SiglipVisionConfig {
    /// `google/siglip-so400m-patch14-384`.
    pub fn siglip_so400m_patch14_384() -> Self {
        SiglipVisionConfig {
            hidden_size: 1152,
            intermediate_size: 4304,
            num_hidden_layers: 27,
            num_attention_heads: 16,
            image_size: 384,
            patch_size: 14,
            ..Self::default()
        }
    }

    /// Reads a `config.json`: either a `SiglipVisionConfig` (model_type
    /// `siglip_vision_model`) or a full `SiglipConfig` (model_type `siglip`)
    /// whose `vision_config` is taken.
    pub fn from_file(path: &Path) -> Result<Self> {
        let value = read_json(path)?;
        let section = vision_section(path, &value, "siglip", "siglip_vision_model", None)?;
        let config: SiglipVisionConfig =
            serde_json::from_value(section).map_err(|e| VisionError::Config {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
        config.validate().map_err(|message| VisionError::Config {
            path: path.to_path_buf(),
            message,
        })?;
        Ok(config)
    }

    /// Checks that the config describes a model this crate can run.
    pub fn validate(&self) -> std::result::Result<(), String> {
        validate_common(
            self.hidden_size,
            self.num_attention_heads,
            self.image_size,
            self.patch_size,
            &self.hidden_act,
        )
    }

    /// Tokens per image at the configured size.
    pub fn num_positions(&self) -> usize {
        (self.image_size / self.patch_size).pow(2)
    }
}

/// `SiglipVisionEmbeddings`.
#[derive(Debug)]
struct Embeddings {
    patch_weight: Tensor,       // [hidden, channels, patch, patch]
    patch_bias: Tensor,         // [hidden]
    position_embedding: Tensor, // [patches, hidden]
    patch_size: i64,
}

impl Embeddings {
    fn new(vs: nn::Path, config: &SiglipVisionConfig) -> Self {
        let (h, p) = (config.hidden_size as i64, config.patch_size as i64);
        let patch = &vs / "patch_embedding";
        Embeddings {
            patch_weight: patch.var(
                "weight",
                &[h, config.num_channels as i64, p, p],
                Init::Const(0.0),
            ),
            patch_bias: patch.var("bias", &[h], Init::Const(0.0)),
            position_embedding: (&vs / "position_embedding").var(
                "weight",
                &[config.num_positions() as i64, h],
                Init::Const(0.0),
            ),
            patch_size: p,
        }
    }

    /// `forward(pixel_values, interpolate_pos_encoding=True)`:
    /// [batch, 3, H, W] -> [batch, (H/p)(W/p), hidden].
    fn forward(&self, pixel_values: &Tensor) -> Result<Tensor> {
        let size = pixel_values.size();
        let (height, width) = (size[2], size[3]);
        let p = self.patch_size;
        let patches = pixel_values
            .f_conv2d(
                &self.patch_weight,
                Some(&self.patch_bias),
                [p, p],
                [0, 0],
                [1, 1],
                1,
            )?
            .flatten(2, -1)
            .transpose(1, 2); // [batch, patches, hidden]
        let num_patches = patches.size()[1];
        Ok(patches + self.positions(num_patches, height, width)?)
    }

    /// HF's `interpolate_pos_encoding`, including its shortcut: the table is
    /// used as is when the patch count matches and the image is square.
    fn positions(&self, num_patches: i64, height: i64, width: i64) -> Result<Tensor> {
        let num_positions = self.position_embedding.size()[0];
        if num_patches == num_positions && height == width {
            return Ok(self.position_embedding.unsqueeze(0));
        }
        let grid = interpolate_positions(
            &self.position_embedding,
            height / self.patch_size,
            width / self.patch_size,
        )?;
        Ok(grid.unsqueeze(0))
    }
}

/// `SiglipMultiheadAttentionPoolingHead`: a learned probe attends over the
/// tokens through `torch.nn.MultiheadAttention` (packed `in_proj`), then a
/// residual LayerNorm + MLP.
#[derive(Debug)]
struct PoolingHead {
    probe: Tensor,           // [1, 1, hidden]
    in_proj_weight: Tensor,  // [3 hidden, hidden]: q, k, v stacked
    in_proj_bias: Tensor,    // [3 hidden]
    out_proj_weight: Tensor, // [hidden, hidden]
    out_proj_bias: Tensor,   // [hidden]
    layernorm: LayerNorm,
    mlp: Mlp,
    num_heads: i64,
}

impl PoolingHead {
    fn new(vs: nn::Path, config: &SiglipVisionConfig, act: Activation) -> Self {
        let h = config.hidden_size as i64;
        let attention = &vs / "attention";
        let out_proj = &attention / "out_proj";
        PoolingHead {
            probe: vs.var("probe", &[1, 1, h], Init::Const(0.0)),
            in_proj_weight: attention.var("in_proj_weight", &[3 * h, h], Init::Const(0.0)),
            in_proj_bias: attention.var("in_proj_bias", &[3 * h], Init::Const(0.0)),
            out_proj_weight: out_proj.var("weight", &[h, h], Init::Const(0.0)),
            out_proj_bias: out_proj.var("bias", &[h], Init::Const(0.0)),
            layernorm: LayerNorm::new(&vs / "layernorm", config.hidden_size, config.layer_norm_eps),
            mlp: Mlp::new(
                &vs / "mlp",
                config.hidden_size,
                config.intermediate_size,
                act,
            ),
            num_heads: config.num_attention_heads as i64,
        }
    }

    /// [batch, tokens, hidden] -> [batch, hidden].
    fn forward(&self, x: &Tensor) -> Tensor {
        let size = x.size();
        let (b, t, h) = (size[0], size[1], size[2]);
        let head_dim = h / self.num_heads;
        let w = self.in_proj_weight.chunk(3, 0);
        let bias = self.in_proj_bias.chunk(3, 0);
        let probe = self.probe.expand([b, 1, h], false);
        // [batch, heads, len, head_dim]
        let heads =
            |y: Tensor, len: i64| y.view([b, len, self.num_heads, head_dim]).transpose(1, 2);
        let q = heads(probe.linear(&w[0], Some(&bias[0])), 1);
        let k = heads(x.linear(&w[1], Some(&bias[1])), t);
        let v = heads(x.linear(&w[2], Some(&bias[2])), t);
        let out = Tensor::scaled_dot_product_attention(
            &q,
            &k,
            &v,
            None::<&Tensor>,
            0.0,
            false,
            None,
            false,
        )
        .transpose(1, 2)
        .reshape([b, 1, h])
        .linear(&self.out_proj_weight, Some(&self.out_proj_bias));
        let out = &out + self.mlp.forward(&self.layernorm.forward(&out));
        out.select(1, 0)
    }
}

/// What [`SiglipVisionModel::forward`] returns (HF's
/// `BaseModelOutputWithPooling` with `output_hidden_states=True`).
#[derive(Debug)]
pub struct SiglipOutput {
    /// `num_hidden_layers + 1` tensors [batch, tokens, hidden]: the
    /// embeddings, then each layer's output (before `post_layernorm`).
    pub hidden_states: Vec<Tensor>,
    /// `post_layernorm` of the last layer's output: [batch, tokens, hidden].
    pub last_hidden_state: Tensor,
    /// The attention-pooling head's output [batch, hidden], when the model
    /// has one (`vision_use_head`).
    pub pooler_output: Option<Tensor>,
}

impl SiglipOutput {
    /// [`select_features`] over these hidden states; SigLIP has no CLS
    /// token, so use [`FeatureSelect::Full`] to keep every patch.
    pub fn select_features(&self, layer: i64, strategy: FeatureSelect) -> Result<Tensor> {
        select_features(&self.hidden_states, layer, strategy)
    }
}

/// HF `SiglipVisionModel`.
#[derive(Debug)]
pub struct SiglipVisionModel {
    embeddings: Embeddings,
    encoder: Encoder,
    post_layernorm: LayerNorm,
    head: Option<PoolingHead>,
    config: SiglipVisionConfig,
}

impl SiglipVisionModel {
    /// Activation checkpointing of the encoder layers (see
    /// `rgpt_llm::Llama::set_activation_checkpointing`).
    pub fn set_activation_checkpointing(&mut self, on: bool) {
        self.encoder.activation_checkpointing = on;
    }

    /// Declares the variables under `vs`, which must be the path of the
    /// vision model itself: `vs.root()` for a checkpoint saved by
    /// transformers 5 (`embeddings.patch_embedding.weight`, ...), or
    /// `vs.root() / "vision_model"` for a transformers-4 `SiglipVisionModel`
    /// or a full `SiglipModel`. `from_pretrained` picks the right one.
    /// Weights are zeros until a checkpoint is loaded.
    pub fn new(vs: &nn::Path, config: &SiglipVisionConfig) -> Result<Self> {
        config.validate().map_err(VisionError::InvalidInput)?;
        let act = Activation::from_name(&config.hidden_act).map_err(VisionError::InvalidInput)?;
        let dims = EncoderDims {
            hidden: config.hidden_size,
            intermediate: config.intermediate_size,
            num_heads: config.num_attention_heads,
            num_layers: config.num_hidden_layers,
            eps: config.layer_norm_eps,
            act,
        };
        Ok(SiglipVisionModel {
            embeddings: Embeddings::new(vs / "embeddings", config),
            encoder: Encoder::new(vs / "encoder", &dims),
            post_layernorm: LayerNorm::new(
                vs / "post_layernorm",
                config.hidden_size,
                config.layer_norm_eps,
            ),
            head: config
                .vision_use_head
                .then(|| PoolingHead::new(vs / "head", config, act)),
            config: config.clone(),
        })
    }

    /// Loads `config.json` and the weights of an HF model directory
    /// (`SiglipVisionModel` or `SiglipModel`, either weight layout), casting
    /// them once to `kind` on `device`. The returned VarStore is frozen.
    pub fn from_pretrained(dir: &Path, device: Device, kind: Kind) -> Result<(Self, nn::VarStore)> {
        let _span = tracing::info_span!("load_siglip_vision", dir = %dir.display()).entered();
        let config = SiglipVisionConfig::from_file(&dir.join("config.json"))?;
        let checkpoint = rgpt_weights::Checkpoint::open(dir)?;
        rgpt_weights::load_frozen(
            &checkpoint,
            device,
            kind,
            |vs| SiglipVisionModel::new(&vision_model_path(&checkpoint, vs.root()), &config),
            &mut |_| {},
        )
    }

    pub fn config(&self) -> &SiglipVisionConfig {
        &self.config
    }

    pub fn device(&self) -> Device {
        self.embeddings.patch_weight.device()
    }

    pub fn kind(&self) -> Kind {
        self.embeddings.patch_weight.kind()
    }

    /// Encodes `pixel_values` [batch, channels, H, W] (cast to the model's
    /// kind; any size of at least one patch, position embeddings being
    /// interpolated as HF's `interpolate_pos_encoding=True` when it is not
    /// the configured square size).
    pub fn forward(&self, pixel_values: &Tensor) -> Result<SiglipOutput> {
        let _span = tracing::debug_span!("siglip_vision_forward").entered();
        let pixels = check_pixels(
            pixel_values,
            self.config.num_channels as i64,
            self.config.patch_size as i64,
            self.device(),
            self.kind(),
        )?;
        let hidden_states = self.encoder.forward(self.embeddings.forward(&pixels)?);
        let last_hidden_state = self
            .post_layernorm
            .forward(&hidden_states[hidden_states.len() - 1]);
        let pooler_output = self.head.as_ref().map(|h| h.forward(&last_hidden_state));
        Ok(SiglipOutput {
            hidden_states,
            last_hidden_state,
            pooler_output,
        })
    }
}
