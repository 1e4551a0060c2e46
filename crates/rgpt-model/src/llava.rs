//! LLaVA-1.5, the model RegionGPT starts from (paper Sec. 4), after
//! transformers' `LlavaForConditionalGeneration` (`models/llava/
//! modeling_llava.py`, v5.23): CLIP (or SigLIP) vision tower -> hidden state of
//! `vision_feature_layer` (CLS dropped for `default`) -> the shared
//! connector -> image tokens spliced at `<image>` into the LLaMA decoder.
//!
//! Variable paths follow the layout transformers 5 writes (`vision_tower.*`,
//! `multi_modal_projector.*`, `language_model.model.*`,
//! `language_model.lm_head.*`); the hub's llava-hf layout
//! (`vision_tower.vision_model.*`) and the original LLaVA repository's
//! (`model.mm_projector.0/2`, `model.layers.*`, `lm_head`) are renamed onto
//! it at load time, in [`LAYOUTS`].
use std::path::Path;

use rgpt_connector::{Connector, ConnectorConfig};
use rgpt_llm::generation::{generate_from_embeds, GenerationConfig, GenerationOutput};
use rgpt_llm::{Llama, LlamaConfig};
use rgpt_vision::clip::FeatureSelect;
use rgpt_vision::tower::{VisionTower, VisionTowerConfig};
use rgpt_weights::Checkpoint;
use serde::{Deserialize, Serialize};
use tch::{nn, Device, Kind, Tensor};

use crate::splice::{pad_batch, segments_from_ids, splice, PaddedBatch, Segment, SplicedPrompt};
use crate::ModelError;

/// HF `LlavaConfig` fields the model needs.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct LlavaConfig {
    pub model_type: Option<String>,
    pub vision_config: serde_json::Value,
    pub text_config: serde_json::Value,
    /// transformers 5 writes `image_token_index`; newer code reads `image_token_id`.
    #[serde(alias = "image_token_id", default = "default_image_token")]
    pub image_token_index: i64,
    #[serde(default = "default_feature_layer")]
    pub vision_feature_layer: i64,
    #[serde(default = "default_select_strategy")]
    pub vision_feature_select_strategy: String,
    #[serde(default = "default_act")]
    pub projector_hidden_act: String,
    #[serde(default = "default_true")]
    pub multimodal_projector_bias: bool,
}

fn default_image_token() -> i64 {
    32000
}
fn default_feature_layer() -> i64 {
    -2
}
fn default_select_strategy() -> String {
    "default".into()
}
fn default_act() -> String {
    "gelu".into()
}
fn default_true() -> bool {
    true
}

/// Checkpoint layouts as (a tensor that identifies it, prefix renames onto
/// the transformers 5 layout).
pub const LAYOUTS: [(&str, &[(&str, &str)]); 2] = [
    (
        "vision_tower.vision_model.embeddings.patch_embedding.weight",
        &[("vision_tower.vision_model.", "vision_tower.")],
    ),
    (
        "model.mm_projector.0.weight",
        &[
            ("model.mm_projector.0.", "multi_modal_projector.linear_1."),
            ("model.mm_projector.2.", "multi_modal_projector.linear_2."),
            (
                "model.vision_tower.vision_tower.vision_model.",
                "vision_tower.",
            ),
            ("model.", "language_model.model."),
            ("lm_head.", "language_model.lm_head."),
        ],
    ),
];

/// Reads a `config.json` into `T`, naming the file in errors.
pub(crate) fn read_config<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, ModelError> {
    Ok(rgpt_weights::read_json(path)?)
}

/// Opens a checkpoint and renames any known layout onto ours.
pub(crate) fn open_checkpoint(dir: &Path) -> Result<Checkpoint, ModelError> {
    let mut checkpoint = Checkpoint::open(dir)?;
    if let Some((_, renames)) = LAYOUTS
        .iter()
        .find(|(marker, _)| checkpoint.contains(marker))
    {
        checkpoint.rename_prefixes(renames)?;
    }
    Ok(checkpoint)
}

/// A prompt with its image tokens and region embeddings, ready to splice.
pub struct SplicedRequest<'a> {
    pub prompt_ids: &'a [i64],
    pub region_token_id: Option<i64>,
    /// Per image, [tokens, text_hidden].
    pub images: &'a [Tensor],
    /// [regions, text_hidden].
    pub regions: &'a Tensor,
}

/// The shared loading path of the LLaVA-family models: read `config.json`
/// as `C`, declare the model in a VarStore of `kind` on `device`, fill it
/// from the checkpoint (any known layout) and freeze it.
pub(crate) fn load_frozen<M, C: serde::de::DeserializeOwned>(
    dir: &Path,
    device: Device,
    kind: Kind,
    build: impl FnOnce(&nn::Path, &C, &Path) -> Result<M, ModelError>,
) -> Result<(M, nn::VarStore), ModelError> {
    let config_path = dir.join("config.json");
    let config: C = read_config(&config_path)?;
    let checkpoint = open_checkpoint(dir)?;
    rgpt_weights::load_frozen(
        &checkpoint,
        device,
        kind,
        |vs| build(&vs.root(), &config, &config_path),
        &mut |_| {},
    )
}

#[derive(Debug)]
pub struct Llava {
    pub vision: VisionTower,
    pub connector: Connector,
    pub llm: Llama,
    pub config: LlavaConfig,
    feature_select: FeatureSelect,
}

impl Llava {
    /// Activation checkpointing of the vision tower's and the LLM's
    /// layers for training: each layer's activations are recomputed in the
    /// backward pass instead of kept (`rgpt_autograd::checkpoint`).
    pub fn set_activation_checkpointing(&mut self, on: bool) {
        self.vision.set_activation_checkpointing(on);
        self.llm.set_activation_checkpointing(on);
    }

    pub fn new(vs: &nn::Path, config: &LlavaConfig, path: &Path) -> Result<Self, ModelError> {
        let invalid = |message: String| ModelError::Config {
            path: path.to_path_buf(),
            message,
        };
        let vision_config = VisionTowerConfig::from_value(&config.vision_config)
            .map_err(|e| invalid(e.to_string()))?;
        let text_config = LlamaConfig::from_value(config.text_config.clone(), path)?;
        let feature_select: FeatureSelect = config.vision_feature_select_strategy.parse()?;
        let connector_config = ConnectorConfig {
            vision_hidden_size: vision_config.hidden_size(),
            text_hidden_size: text_config.hidden_size,
            projector_hidden_act: config.projector_hidden_act.clone(),
            multimodal_projector_bias: config.multimodal_projector_bias,
        };
        Ok(Llava {
            vision: VisionTower::new(&(vs / "vision_tower"), &vision_config)?,
            connector: Connector::new(&(vs / "multi_modal_projector"), &connector_config)
                .map_err(|e| invalid(e.to_string()))?,
            llm: Llama::new(&(vs / "language_model"), &text_config)?,
            config: config.clone(),
            feature_select,
        })
    }

    /// Loads a LLaVA checkpoint directory in any of [`LAYOUTS`] or the
    /// transformers 5 layout, casting once to `kind` on `device`.
    pub fn from_pretrained(
        dir: &Path,
        device: Device,
        kind: Kind,
    ) -> Result<(Self, nn::VarStore), ModelError> {
        let _span = tracing::info_span!("load_llava", dir = %dir.display()).entered();
        load_frozen(dir, device, kind, Llava::new)
    }

    /// The vision tower's selected hidden state: [batch, tokens, vision_hidden].
    pub fn vision_features(&self, pixel_values: &Tensor) -> Result<Tensor, ModelError> {
        Ok(self.vision.features(
            pixel_values,
            self.config.vision_feature_layer,
            self.feature_select,
        )?)
    }

    /// Image tokens in the decoder's space: [batch, tokens, text_hidden].
    pub fn image_features(&self, pixel_values: &Tensor) -> Result<Tensor, ModelError> {
        Ok(self.connector.forward(&self.vision_features(pixel_values)?))
    }

    /// Generates after `prompt_ids`, where each `image_token_index` stands
    /// for one image of `pixel_values` [images, 3, H, W] (one id per image;
    /// transformers' processor repeats it per image token, which is
    /// accepted too: a run of ids is one image).
    pub fn generate(
        &self,
        prompt_ids: &[i64],
        pixel_values: &Tensor,
        config: &GenerationConfig,
        tokenizer: Option<&rgpt_llm::Tokenizer>,
        on_token: &mut dyn FnMut(usize, i64),
    ) -> Result<GenerationOutput, ModelError> {
        let _guard = tch::no_grad_guard();
        let features = self.image_features(pixel_values)?;
        let images: Vec<Tensor> = (0..features.size()[0]).map(|i| features.get(i)).collect();
        let no_regions = Tensor::zeros(
            [0, self.llm.config().hidden_size as i64],
            (self.llm.kind(), self.llm.device()),
        );
        let request = SplicedRequest {
            prompt_ids,
            region_token_id: None,
            images: &images,
            regions: &no_regions,
        };
        self.generate_spliced(&request, config, tokenizer, on_token)
    }

    /// The spliced prompt of a request, and the text ids the repetition
    /// penalty should see (transformers sees the prompt ids it was given).
    pub fn splice_request(
        &self,
        request: &SplicedRequest<'_>,
    ) -> Result<(SplicedPrompt, Vec<i64>), ModelError> {
        let image_id = self.config.image_token_index;
        let mut collapsed: Vec<i64> = Vec::with_capacity(request.prompt_ids.len());
        for &id in request.prompt_ids {
            if !(id == image_id && collapsed.last() == Some(&image_id)) {
                collapsed.push(id);
            }
        }
        // No id is i64::MIN, so without a region token nothing splits there.
        let region_id = request.region_token_id.unwrap_or(i64::MIN);
        let segments = segments_from_ids(&collapsed, image_id, region_id);
        let embed = |ids: &Tensor| self.llm.embed(ids);
        let spliced = splice(&segments, &embed, request.images, request.regions)?;
        let history: Vec<i64> = segments
            .iter()
            .flat_map(|s| match s {
                Segment::Text { ids, .. } => ids.clone(),
                _ => Vec::new(),
            })
            .collect();
        Ok((spliced, history))
    }

    /// Splices image tokens and region embeddings (already in the decoder's
    /// space) into the prompt at their placeholder ids, and generates.
    pub fn generate_spliced(
        &self,
        request: &SplicedRequest<'_>,
        config: &GenerationConfig,
        tokenizer: Option<&rgpt_llm::Tokenizer>,
        on_token: &mut dyn FnMut(usize, i64),
    ) -> Result<GenerationOutput, ModelError> {
        self.generate_spliced_batch(std::slice::from_ref(request), config, tokenizer, on_token)
    }

    /// [`Llava::generate_spliced`] for several requests at once: the
    /// prompts are left-padded into one batch.
    pub fn generate_spliced_batch(
        &self,
        requests: &[SplicedRequest<'_>],
        config: &GenerationConfig,
        tokenizer: Option<&rgpt_llm::Tokenizer>,
        on_token: &mut dyn FnMut(usize, i64),
    ) -> Result<GenerationOutput, ModelError> {
        let batch = self.splice_batch(requests)?;
        self.generate_prepared(&batch, config, tokenizer, on_token)
    }

    /// Splices each request and left-pads them into one batch, ready for
    /// generation or answer scoring (either, or both, without redoing it).
    pub fn splice_batch(
        &self,
        requests: &[SplicedRequest<'_>],
    ) -> Result<PreparedBatch, ModelError> {
        let _guard = tch::no_grad_guard();
        let mut prompts = Vec::with_capacity(requests.len());
        let mut histories = Vec::with_capacity(requests.len());
        for request in requests {
            let (spliced, history) = self.splice_request(request)?;
            prompts.push(spliced);
            histories.push(history);
        }
        Ok(PreparedBatch {
            padded: pad_batch(&prompts, true)?,
            histories,
        })
    }

    /// Generates after a prepared batch.
    pub fn generate_prepared(
        &self,
        batch: &PreparedBatch,
        config: &GenerationConfig,
        tokenizer: Option<&rgpt_llm::Tokenizer>,
        on_token: &mut dyn FnMut(usize, i64),
    ) -> Result<GenerationOutput, ModelError> {
        Ok(generate_from_embeds(
            &self.llm,
            &batch.padded.embeds,
            &batch.padded.mask,
            &batch.histories,
            config,
            tokenizer,
            on_token,
        )?)
    }

    /// Log-likelihood of each candidate answer after each prompt of a
    /// prepared batch: one prefill, every (prompt, candidate) pair in one
    /// forward.
    pub fn score_prepared(
        &self,
        batch: &PreparedBatch,
        candidates: &[Vec<i64>],
    ) -> Result<Vec<Vec<f64>>, ModelError> {
        Ok(rgpt_llm::scoring::score_continuations_batch(
            &self.llm,
            &batch.padded.embeds,
            &batch.padded.mask,
            candidates,
        )?)
    }
}

/// Spliced prompts, left-padded into one batch, with the text ids the
/// repetition penalty sees for each.
pub struct PreparedBatch {
    pub padded: PaddedBatch,
    pub histories: Vec<Vec<i64>>,
}
