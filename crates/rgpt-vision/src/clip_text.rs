//! CLIP's text tower and the scores of a whole `CLIPModel`, as transformers
//! computes them (`modeling_clip.py`: `CLIPTextTransformer`, `CLIPModel`):
//! token plus position embeddings, the pre-norm encoder under a causal mask
//! (and the padding mask), a final LayerNorm, and the hidden state at the
//! end-of-text token as the pooled output; `text_projection` and
//! `visual_projection` map the two towers' pooled outputs into one space
//! where `logit_scale.exp()` times the cosine similarity scores an image
//! against a text. RecapD filters region captions with this score (paper
//! Sec. 3.3).
use std::path::Path;

use serde::Deserialize;
use tch::nn::Init;
use tch::{nn, Device, Kind, Tensor};

use crate::clip::{ClipVisionConfig, ClipVisionModel};
use crate::encoder::{Activation, Encoder, EncoderDims, LayerNorm};
use crate::error::VisionError;
use crate::hf_config::read_json;

type Result<T> = std::result::Result<T, VisionError>;

/// `CLIPTextConfig`, the `text_config` of a `CLIPConfig`.
#[derive(Debug, Clone, Deserialize)]
pub struct ClipTextConfig {
    #[serde(default = "default_vocab")]
    pub vocab_size: usize,
    #[serde(default = "default_hidden")]
    pub hidden_size: usize,
    #[serde(default = "default_intermediate")]
    pub intermediate_size: usize,
    #[serde(default = "default_layers")]
    pub num_hidden_layers: usize,
    #[serde(default = "default_heads")]
    pub num_attention_heads: usize,
    /// The context: 77 for OpenAI's CLIP.
    #[serde(default = "default_positions")]
    pub max_position_embeddings: usize,
    #[serde(default = "crate::clip::default_hidden_act")]
    pub hidden_act: String,
    #[serde(default = "crate::clip::default_layer_norm_eps")]
    pub layer_norm_eps: f64,
    /// The end-of-text id whose hidden state is pooled; 2 (the old
    /// default, kept by OpenAI's checkpoints) means "the largest id in the
    /// row", which is the end-of-text token of CLIP's vocabulary.
    #[serde(default = "default_eos")]
    pub eos_token_id: i64,
    /// Padding; CLIP pads with its end-of-text token.
    #[serde(default)]
    pub pad_token_id: Option<i64>,
}

fn default_vocab() -> usize {
    49408
}
fn default_hidden() -> usize {
    512
}
fn default_intermediate() -> usize {
    2048
}
fn default_layers() -> usize {
    12
}
fn default_heads() -> usize {
    8
}
fn default_positions() -> usize {
    77
}
fn default_eos() -> i64 {
    2
}

/// The text tower's outputs.
#[derive(Debug)]
pub struct ClipTextOutput {
    /// [batch, seq, hidden], after the final LayerNorm.
    pub last_hidden_state: Tensor,
    /// [batch, hidden]: the state at each row's end-of-text token.
    pub pooler_output: Tensor,
}

/// `CLIPTextTransformer` (`text_model.*`).
#[derive(Debug)]
pub struct ClipTextModel {
    token_embedding: Tensor,    // [vocab, hidden]
    position_embedding: Tensor, // [positions, hidden]
    encoder: Encoder,
    final_layer_norm: LayerNorm,
    config: ClipTextConfig,
}

impl ClipTextModel {
    /// Declares the variables under `vs` (the text model's path, e.g.
    /// `root / "text_model"`).
    pub fn new(vs: &nn::Path, config: &ClipTextConfig) -> Result<Self> {
        if config.num_attention_heads == 0 || config.hidden_size % config.num_attention_heads != 0 {
            return Err(VisionError::InvalidInput(format!(
                "text hidden size {} is not a multiple of {} heads",
                config.hidden_size, config.num_attention_heads
            )));
        }
        let act = Activation::from_name(&config.hidden_act).map_err(VisionError::InvalidInput)?;
        let dims = EncoderDims {
            hidden: config.hidden_size,
            intermediate: config.intermediate_size,
            num_heads: config.num_attention_heads,
            num_layers: config.num_hidden_layers,
            eps: config.layer_norm_eps,
            act,
        };
        let (hidden, embeddings) = (config.hidden_size as i64, vs / "embeddings");
        Ok(ClipTextModel {
            token_embedding: (&embeddings / "token_embedding").var(
                "weight",
                &[config.vocab_size as i64, hidden],
                Init::Const(0.0),
            ),
            position_embedding: (&embeddings / "position_embedding").var(
                "weight",
                &[config.max_position_embeddings as i64, hidden],
                Init::Const(0.0),
            ),
            encoder: Encoder::new(vs / "encoder", &dims),
            final_layer_norm: LayerNorm::new(
                vs / "final_layer_norm",
                config.hidden_size,
                config.layer_norm_eps,
            ),
            config: config.clone(),
        })
    }

    pub fn config(&self) -> &ClipTextConfig {
        &self.config
    }

    /// Encodes `input_ids` [batch, seq] (at most the context's length,
    /// each row with its end-of-text token) with `attention_mask` [batch,
    /// seq] (1 for real tokens; None: all real).
    pub fn forward(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
    ) -> Result<ClipTextOutput> {
        let device = self.token_embedding.device();
        let (batch, seq) = input_ids.size2().map_err(|_| {
            VisionError::InvalidInput(format!(
                "input_ids must be [batch, seq], got {:?}",
                input_ids.size()
            ))
        })?;
        let context = self.config.max_position_embeddings as i64;
        if seq < 1 || seq > context {
            return Err(VisionError::InvalidInput(format!(
                "{seq} tokens: CLIP's text tower reads 1 to {context}; truncate the text"
            )));
        }
        let ids = input_ids.f_to_device(device)?;
        let positions = Tensor::arange(seq, (Kind::Int64, device));
        let x = Tensor::embedding(&self.token_embedding, &ids, -1, false, false)
            + Tensor::embedding(&self.position_embedding, &positions, -1, false, false);
        // Causal, and no padded key: [batch, 1, seq, seq].
        let causal = positions
            .unsqueeze(0)
            .le_tensor(&positions.unsqueeze(1))
            .view([1, 1, seq, seq]);
        let mask = match attention_mask {
            Some(m) => {
                let keys = m.f_to_device(device)?.f_ne(0)?.view([batch, 1, 1, seq]);
                causal.logical_and(&keys)
            }
            None => causal,
        };
        let states = self.encoder.forward_masked(x, Some(&mask));
        let last = self.final_layer_norm.forward(&states[states.len() - 1]);
        let at = if self.config.eos_token_id == 2 {
            ids.argmax(-1, false)
        } else {
            ids.eq(self.config.eos_token_id)
                .to_kind(Kind::Int)
                .argmax(-1, false)
        };
        let rows = Tensor::arange(batch, (Kind::Int64, device));
        let pooler_output = last.index(&[Some(rows), Some(at)]);
        Ok(ClipTextOutput {
            last_hidden_state: last,
            pooler_output,
        })
    }
}

/// A whole `CLIPModel`: both towers, both projections and the logit scale.
#[derive(Debug)]
pub struct ClipModel {
    pub vision: ClipVisionModel,
    pub text: ClipTextModel,
    visual_projection: Tensor, // [projection, vision hidden]
    text_projection: Tensor,   // [projection, text hidden]
    logit_scale: Tensor,       // []
}

/// `CLIPConfig`'s parts this crate reads.
#[derive(Debug, Deserialize)]
struct ClipConfig {
    text_config: ClipTextConfig,
    #[serde(default = "default_projection")]
    projection_dim: usize,
}

fn default_projection() -> usize {
    512
}

impl ClipModel {
    /// Loads a `CLIPModel` directory (`config.json` with `model_type` `clip`,
    /// weights under `vision_model.`, `text_model.`, the two projections and
    /// `logit_scale`), frozen, in `kind` on `device`.
    pub fn from_pretrained(dir: &Path, device: Device, kind: Kind) -> Result<(Self, nn::VarStore)> {
        let path = dir.join("config.json");
        let value = read_json(&path)?;
        let config: ClipConfig =
            serde_json::from_value(value).map_err(|e| VisionError::Config {
                path: path.clone(),
                message: format!(
                    "not a CLIPModel config with a text tower ({e}); clip-score needs the whole \
                     CLIPModel, not a CLIPVisionModel"
                ),
            })?;
        let vision_config = ClipVisionConfig::from_file(&path)?;
        let checkpoint = rgpt_weights::Checkpoint::open(dir)?;
        rgpt_weights::load_frozen(
            &checkpoint,
            device,
            kind,
            |vs| {
                let root = vs.root();
                let vision = ClipVisionModel::new(&(&root / "vision_model"), &vision_config)?;
                let text = ClipTextModel::new(&(&root / "text_model"), &config.text_config)?;
                let projection = |name: &str, input: usize| {
                    (&root / name).var(
                        "weight",
                        &[config.projection_dim as i64, input as i64],
                        Init::Const(0.0),
                    )
                };
                Ok::<_, VisionError>(ClipModel {
                    visual_projection: projection("visual_projection", vision_config.hidden_size),
                    text_projection: projection("text_projection", config.text_config.hidden_size),
                    logit_scale: root.var("logit_scale", &[], Init::Const(0.0)),
                    vision,
                    text,
                })
            },
            &mut |_| {},
        )
    }

    /// `get_image_features`: the projected pooled image [batch, projection].
    pub fn image_features(&self, pixel_values: &Tensor) -> Result<Tensor> {
        let pooled = self.vision.forward(pixel_values)?.pooler_output;
        Ok(pooled.linear::<&Tensor>(&self.visual_projection, None))
    }

    /// `get_text_features`: the projected pooled text [batch, projection].
    pub fn text_features(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        let pooled = self.text.forward(input_ids, attention_mask)?.pooler_output;
        Ok(pooled.linear::<&Tensor>(&self.text_projection, None))
    }

    /// What `CLIPModel`'s forward returns: the normalised image and text
    /// embeddings and `logits_per_image` [images, texts] (`logit_scale.exp()`
    /// times the cosine similarity).
    pub fn scores(
        &self,
        pixel_values: &Tensor,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
    ) -> Result<ClipScores> {
        let normalise = |t: Tensor| {
            let norm = t.norm_scalaropt_dim(2, [-1], true);
            t / norm
        };
        let image_embeds = normalise(self.image_features(pixel_values)?);
        let text_embeds = normalise(self.text_features(input_ids, attention_mask)?);
        let logits_per_image = image_embeds.matmul(&text_embeds.tr()) * self.logit_scale.exp();
        Ok(ClipScores {
            image_embeds,
            text_embeds,
            logits_per_image,
        })
    }
}

/// [`ClipModel::scores`].
#[derive(Debug)]
pub struct ClipScores {
    pub image_embeds: Tensor,
    pub text_embeds: Tensor,
    pub logits_per_image: Tensor,
}
