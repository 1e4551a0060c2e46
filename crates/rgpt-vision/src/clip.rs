//! The CLIP vision tower, after transformers' `CLIPVisionModel`
//! (`models/clip/modeling_clip.py`, v5.23): patch embedding (a bias-free
//! conv) plus a class token and learned position embeddings, `pre_layrnorm`,
//! pre-norm encoder layers (multi-head attention with q/k/v/out biases, an
//! fc1/act/fc2 MLP, `quick_gelu` for OpenAI's checkpoints), and
//! `post_layernorm` on the pooled class token only. RegionGPT uses the
//! penultimate layer's patch features of CLIP ViT-L/14-336 (paper Sec. 3.1),
//! which [`select_features`] picks as LLaVA does.
//!
//! Differences from the reference: `forward` always behaves as HF's
//! `interpolate_pos_encoding=True` (identical to the default at the
//! configured image size; at any other size HF would raise instead), and it
//! always returns every hidden state.
//!
//! Variable paths are the HF names below the vision model (`embeddings.*`,
//! `pre_layrnorm.*`, `encoder.layers.{i}.*`, `post_layernorm.*`). The
//! encoder building blocks (`encoder.rs`) and the config readers
//! (`hf_config.rs`) are shared with SigLIP, whose HF code copies them from
//! CLIP.
use std::path::Path;

use serde::Deserialize;
use tch::nn::Init;
use tch::{nn, Device, Kind, Tensor};

use crate::encoder::{
    check_pixels, interpolate_positions, Activation, Encoder, EncoderDims, LayerNorm,
};
use crate::error::VisionError;
use crate::hf_config::{read_json, validate_common, vision_model_path, vision_section};

type Result<T> = std::result::Result<T, VisionError>;

/// HF `CLIPVisionConfig` (the `vision_config` of a `CLIPConfig`), with HF's
/// defaults (those of `openai/clip-vit-base-patch32`).
#[derive(Debug, Clone, Deserialize)]
pub struct ClipVisionConfig {
    #[serde(default)]
    pub model_type: Option<String>,
    #[serde(default = "default_hidden_size")]
    pub hidden_size: usize,
    #[serde(default = "default_intermediate_size")]
    pub intermediate_size: usize,
    #[serde(default = "default_projection_dim")]
    pub projection_dim: usize,
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
    #[serde(default = "default_initializer_range")]
    pub initializer_range: f64,
    #[serde(default = "default_initializer_factor")]
    pub initializer_factor: f64,
    /// Not in HF's config: channels of a convolutional stem that replaces
    /// the patch projection (3x3 stride-2 convs with GELU, one per halving
    /// of the patch size, then the 1x1 `patch_embedding`), after Xiao et
    /// al., "Early Convolutions Help Transformers See Better" (2021). Only
    /// towers trained from scratch here use it (`rgpt demo`): a stem learns
    /// local shape in far fewer steps than a patch projection. Empty (every
    /// HF checkpoint) is CLIP's patch projection.
    #[serde(default)]
    pub conv_stem: Vec<usize>,
}

fn default_hidden_size() -> usize {
    768
}
fn default_intermediate_size() -> usize {
    3072
}
fn default_projection_dim() -> usize {
    512
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
    32
}
pub(crate) fn default_hidden_act() -> String {
    "quick_gelu".into()
}
pub(crate) fn default_layer_norm_eps() -> f64 {
    1e-5
}
fn default_initializer_range() -> f64 {
    0.02
}
fn default_initializer_factor() -> f64 {
    1.0
}

impl Default for ClipVisionConfig {
    fn default() -> Self {
        ClipVisionConfig {
            model_type: Some("clip_vision_model".into()),
            hidden_size: default_hidden_size(),
            intermediate_size: default_intermediate_size(),
            projection_dim: default_projection_dim(),
            num_hidden_layers: default_num_layers(),
            num_attention_heads: default_num_heads(),
            num_channels: default_num_channels(),
            image_size: default_image_size(),
            patch_size: default_patch_size(),
            hidden_act: default_hidden_act(),
            layer_norm_eps: default_layer_norm_eps(),
            attention_dropout: 0.0,
            initializer_range: default_initializer_range(),
            initializer_factor: default_initializer_factor(),
            conv_stem: Vec::new(),
        }
    }
}

impl ClipVisionConfig {
    /// `openai/clip-vit-large-patch14-336`, RegionGPT's vision encoder.
    pub fn clip_vit_large_patch14_336() -> Self {
        ClipVisionConfig {
            hidden_size: 1024,
            intermediate_size: 4096,
            projection_dim: 768,
            num_hidden_layers: 24,
            num_attention_heads: 16,
            image_size: 336,
            patch_size: 14,
            ..Self::default()
        }
    }

    /// Reads a `config.json`: either a `CLIPVisionConfig` (model_type
    /// `clip_vision_model`) or a full `CLIPConfig` (model_type `clip`) whose
    /// `vision_config` (or legacy `vision_config_dict`, which HF prefers) is
    /// taken.
    pub fn from_file(path: &Path) -> Result<Self> {
        let value = read_json(path)?;
        let section = vision_section(
            path,
            &value,
            "clip",
            "clip_vision_model",
            Some("vision_config_dict"),
        )?;
        let config: ClipVisionConfig =
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
        )?;
        let stride = 1usize.checked_shl(self.conv_stem.len() as u32);
        if !self.conv_stem.is_empty() && stride != Some(self.patch_size) {
            return Err(format!(
                "a conv_stem of {} stride-2 convs downsamples by {}, not by patch_size {}",
                self.conv_stem.len(),
                stride.map_or("too much".into(), |s| s.to_string()),
                self.patch_size
            ));
        }
        if self.conv_stem.contains(&0) {
            return Err("conv_stem channels must be at least 1".into());
        }
        Ok(())
    }

    /// Tokens per image at the configured size, class token included.
    pub fn num_positions(&self) -> usize {
        (self.image_size / self.patch_size).pow(2) + 1
    }
}

/// Which tokens [`select_features`] keeps (LLaVA's `mm_vision_select_feature`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FeatureSelect {
    /// LLaVA's `patch`: drop the leading CLS token (CLIP).
    #[default]
    Default,
    /// LLaVA's `cls_patch`: keep every token (also right for SigLIP, which
    /// has no CLS token).
    Full,
}

impl std::str::FromStr for FeatureSelect {
    type Err = VisionError;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "patch" | "default" => Ok(FeatureSelect::Default),
            "cls_patch" | "full" => Ok(FeatureSelect::Full),
            other => Err(VisionError::InvalidInput(format!(
                "unknown feature selection `{other}` (expected patch or cls_patch)"
            ))),
        }
    }
}

/// LLaVA's `feature_select`: the hidden state of `layer` (negative counts
/// from the end, so -2 is the penultimate layer's output, LLaVA's and
/// RegionGPT's default), with or without the CLS token. Returns
/// [batch, tokens, hidden].
pub fn select_features(
    hidden_states: &[Tensor],
    layer: i64,
    strategy: FeatureSelect,
) -> Result<Tensor> {
    let n = hidden_states.len() as i64;
    let index = if layer < 0 { n + layer } else { layer };
    if !(0..n).contains(&index) {
        return Err(VisionError::InvalidInput(format!(
            "feature layer {layer} is out of range for {n} hidden states"
        )));
    }
    let states = &hidden_states[index as usize];
    let size = states.size();
    let &[_, tokens, _] = size.as_slice() else {
        return Err(VisionError::InvalidInput(format!(
            "hidden states must be [batch, tokens, hidden], got shape {size:?}"
        )));
    };
    match strategy {
        FeatureSelect::Full => Ok(states.shallow_clone()),
        FeatureSelect::Default if tokens >= 1 => Ok(states.narrow(1, 1, tokens - 1)),
        FeatureSelect::Default => Err(VisionError::InvalidInput(
            "hidden states have no CLS token to drop".into(),
        )),
    }
}

/// One 3x3 stride-2 convolution of the optional stem (see
/// [`ClipVisionConfig::conv_stem`]).
#[derive(Debug)]
struct StemConv {
    weight: Tensor, // [out, in, 3, 3]
    bias: Tensor,
}

impl StemConv {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(
            x.f_conv2d(&self.weight, Some(&self.bias), [2, 2], [1, 1], [1, 1], 1)?
                .gelu("none"),
        )
    }
}

/// `CLIPVisionEmbeddings`.
#[derive(Debug)]
struct Embeddings {
    class_embedding: Tensor, // [hidden]
    /// Empty for HF CLIP.
    conv_stem: Vec<StemConv>,
    /// [hidden, channels, patch, patch], or [hidden, stem channels, 1, 1]
    /// after a stem.
    patch_embedding: Tensor,
    position_embedding: Tensor, // [patches + 1, hidden]
    patch_size: i64,
}

impl Embeddings {
    fn new(vs: nn::Path, config: &ClipVisionConfig) -> Self {
        let (h, p) = (config.hidden_size as i64, config.patch_size as i64);
        let mut channels = config.num_channels as i64;
        let mut conv_stem = Vec::with_capacity(config.conv_stem.len());
        for (i, &out) in config.conv_stem.iter().enumerate() {
            let conv = &vs / "conv_stem" / i;
            let out = out as i64;
            conv_stem.push(StemConv {
                weight: conv.var("weight", &[out, channels, 3, 3], Init::Const(0.0)),
                bias: conv.var("bias", &[out], Init::Const(0.0)),
            });
            channels = out;
        }
        let kernel = if conv_stem.is_empty() { p } else { 1 };
        Embeddings {
            class_embedding: vs.var("class_embedding", &[h], Init::Const(0.0)),
            conv_stem,
            patch_embedding: (&vs / "patch_embedding").var(
                "weight",
                &[h, channels, kernel, kernel],
                Init::Const(0.0),
            ),
            position_embedding: (&vs / "position_embedding").var(
                "weight",
                &[config.num_positions() as i64, h],
                Init::Const(0.0),
            ),
            patch_size: p,
        }
    }

    /// `forward(pixel_values, interpolate_pos_encoding=True)`:
    /// [batch, 3, H, W] -> [batch, 1 + (H/p)(W/p), hidden].
    fn forward(&self, pixel_values: &Tensor) -> Result<Tensor> {
        let size = pixel_values.size();
        let (b, height, width) = (size[0], size[2], size[3]);
        let mut p = self.patch_size;
        let mut x = pixel_values.shallow_clone();
        for conv in &self.conv_stem {
            x = conv.forward(&x)?;
        }
        if !self.conv_stem.is_empty() {
            p = 1;
        }
        let patches = x
            .f_conv2d::<&Tensor>(&self.patch_embedding, None, [p, p], [0, 0], [1, 1], 1)?
            .flatten(2, -1)
            .transpose(1, 2); // [batch, patches, hidden]
        let dim = self.class_embedding.size()[0];
        let class = self
            .class_embedding
            .view([1, 1, dim])
            .expand([b, 1, dim], false);
        let embeddings = Tensor::cat(&[class, patches], 1);
        let num_patches = embeddings.size()[1] - 1;
        Ok(embeddings + self.positions(num_patches, height, width)?)
    }

    /// HF's `interpolate_pos_encoding`, including its shortcut: the table is
    /// used as is when the patch count matches and the image is square.
    fn positions(&self, num_patches: i64, height: i64, width: i64) -> Result<Tensor> {
        let num_positions = self.position_embedding.size()[0] - 1;
        if num_patches == num_positions && height == width {
            return Ok(self.position_embedding.unsqueeze(0));
        }
        let class_pos = self.position_embedding.narrow(0, 0, 1);
        let patch_pos = interpolate_positions(
            &self.position_embedding.narrow(0, 1, num_positions),
            height / self.patch_size,
            width / self.patch_size,
        )?;
        Ok(Tensor::cat(&[class_pos, patch_pos], 0).unsqueeze(0))
    }
}

/// What [`ClipVisionModel::forward`] returns (HF's
/// `BaseModelOutputWithPooling` with `output_hidden_states=True`).
#[derive(Debug)]
pub struct ClipOutput {
    /// `num_hidden_layers + 1` tensors [batch, tokens, hidden]: the
    /// embeddings after `pre_layrnorm`, then each layer's output.
    pub hidden_states: Vec<Tensor>,
    /// The last layer's output (no final norm in CLIP): [batch, tokens, hidden].
    pub last_hidden_state: Tensor,
    /// `post_layernorm` of the CLS token: [batch, hidden].
    pub pooler_output: Tensor,
}

impl ClipOutput {
    /// [`select_features`] over these hidden states.
    pub fn select_features(&self, layer: i64, strategy: FeatureSelect) -> Result<Tensor> {
        select_features(&self.hidden_states, layer, strategy)
    }
}

/// HF `CLIPVisionModel`.
#[derive(Debug)]
pub struct ClipVisionModel {
    embeddings: Embeddings,
    pre_layrnorm: LayerNorm,
    encoder: Encoder,
    post_layernorm: LayerNorm,
    config: ClipVisionConfig,
}

impl ClipVisionModel {
    /// Activation checkpointing of the encoder layers (see
    /// `rgpt_llm::Llama::set_activation_checkpointing`).
    pub fn set_activation_checkpointing(&mut self, on: bool) {
        self.encoder.activation_checkpointing = on;
    }

    /// Declares the variables under `vs`, which must be the path of the
    /// vision model itself: `vs.root()` for a checkpoint saved by
    /// transformers 5 (`embeddings.patch_embedding.weight`, ...), or
    /// `vs.root() / "vision_model"` for a transformers-4 `CLIPVisionModel` or
    /// a full `CLIPModel` (`vision_model.embeddings...`). `from_pretrained`
    /// picks the right one. Weights are zeros until a checkpoint is loaded.
    pub fn new(vs: &nn::Path, config: &ClipVisionConfig) -> Result<Self> {
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
        Ok(ClipVisionModel {
            embeddings: Embeddings::new(vs / "embeddings", config),
            pre_layrnorm: LayerNorm::new(
                vs / "pre_layrnorm",
                config.hidden_size,
                config.layer_norm_eps,
            ),
            encoder: Encoder::new(vs / "encoder", &dims),
            post_layernorm: LayerNorm::new(
                vs / "post_layernorm",
                config.hidden_size,
                config.layer_norm_eps,
            ),
            config: config.clone(),
        })
    }

    /// Loads `config.json` and the weights of an HF model directory
    /// (`CLIPVisionModel` or `CLIPModel`, either weight layout), casting them
    /// once to `kind` on `device`. The returned VarStore is frozen.
    pub fn from_pretrained(dir: &Path, device: Device, kind: Kind) -> Result<(Self, nn::VarStore)> {
        let _span = tracing::info_span!("load_clip_vision", dir = %dir.display()).entered();
        let config = ClipVisionConfig::from_file(&dir.join("config.json"))?;
        let checkpoint = rgpt_weights::Checkpoint::open(dir)?;
        rgpt_weights::load_frozen(
            &checkpoint,
            device,
            kind,
            |vs| ClipVisionModel::new(&vision_model_path(&checkpoint, vs.root()), &config),
            &mut |_| {},
        )
    }

    pub fn config(&self) -> &ClipVisionConfig {
        &self.config
    }

    pub fn device(&self) -> Device {
        self.embeddings.patch_embedding.device()
    }

    pub fn kind(&self) -> Kind {
        self.embeddings.patch_embedding.kind()
    }

    /// Encodes `pixel_values` [batch, channels, H, W] (cast to the model's
    /// kind; any size of at least one patch, position embeddings being
    /// interpolated as HF's `interpolate_pos_encoding=True` when it is not
    /// the configured square size).
    pub fn forward(&self, pixel_values: &Tensor) -> Result<ClipOutput> {
        let _span = tracing::debug_span!("clip_vision_forward").entered();
        let pixels = check_pixels(
            pixel_values,
            self.config.num_channels as i64,
            self.config.patch_size as i64,
            self.device(),
            self.kind(),
        )?;
        let embeddings = self.embeddings.forward(&pixels)?;
        let hidden_states = self.encoder.forward(self.pre_layrnorm.forward(&embeddings));
        let last_hidden_state = hidden_states[hidden_states.len() - 1].shallow_clone();
        let pooler_output = self.post_layernorm.forward(&last_hidden_state.select(1, 0));
        Ok(ClipOutput {
            hidden_states,
            last_hidden_state,
            pooler_output,
        })
    }
}
