//! RegionGPT (paper Sec. 3.1, Fig. 2) on top of LLaVA-1.5: the vision
//! tower's patch features go through the feature refinement module to a
//! high-resolution map; image tokens are that map adaptively pooled back to
//! the backbone grid; each region (box, polygon, mask, ...) is rasterised in
//! original-image pixels, preprocessed as the image is and mask-pooled on the
//! refined grid as RegionGPT's reference does (SpatialRGPT's `regiongpt`
//! extractor; `rgpt.mask_pool`); the one shared connector maps
//! both into the decoder, where `<image>` and each `<region>` are spliced.
//!
//! Checkpoints: RGPT's own format is the transformers 5 LLaVA layout plus
//! `feature_refiner.*`, with `"model_type": "rgpt"` and an `rgpt` section in
//! `config.json`. A plain LLaVA checkpoint (no section, no refiner weights)
//! runs with refiner `none`: its region tokens come from pooling the
//! un-refined 24x24 map, as a LLaVA model would see it.
use std::path::Path;

use rgpt_llm::generation::{GenerationConfig, GenerationOutput};
use rgpt_llm::Template;
use rgpt_region::{
    mask_pool, mask_pool_reference, project_bitmap, rasterize, GridGeometry, MaskPoolKind,
    PoolStrategy, RegionSpec,
};
use rgpt_vision::clip::FeatureSelect;
use rgpt_vision::preprocess::ImageTransform;
use rgpt_vision::refiner::{image_tokens, FeatureRefiner, RefinerKind};
use rgpt_vision::tower::VisionTowerConfig;
use serde::{Deserialize, Serialize};
use tch::{nn, Device, Kind, Tensor};

use crate::llava::{load_frozen, read_config, Llava, LlavaConfig, PreparedBatch, SplicedRequest};
use crate::loss::causal_lm_loss_from_hidden;
use crate::splice::{pad_batch, splice, Segment};
use crate::ModelError;

/// The `rgpt` section of an RGPT `config.json`.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct RgptSection {
    #[serde(default)]
    pub refiner: RefinerKind,
    /// How a region's mask weighs the refined grid: `reference` (default),
    /// RegionGPT's reference (SpatialRGPT's `regiongpt` extractor: the mask
    /// preprocessed as the image is, resized bilinearly, normalised by its
    /// sum + 1e-8), or `area`, the covered fraction of each cell (this
    /// project's own, which the demo's model is trained with). See
    /// rgpt-region's `pool.rs`.
    #[serde(default)]
    pub mask_pool: MaskPoolKind,
    /// (height, width) of the image-token grid; default the backbone's.
    #[serde(default)]
    pub image_token_grid: Option<(i64, i64)>,
    /// The placeholder token of a region in prompts.
    #[serde(default = "default_region_token")]
    pub region_token: String,
    /// The conversation template the model was trained with (rgpt-llm's
    /// `Template` names): `vicuna_v1`, LLaVA's and the paper's, unless the
    /// model was trained from nothing on another.
    #[serde(default = "default_conversation")]
    pub conversation: String,
    /// Token ids whose word embeddings are added to a prompt's 1st, 2nd, ...
    /// region, so that each region carries its number as the REC answers write
    /// it (`Region [k]`). Empty, as in the paper's model: a region is its
    /// pooled feature alone. Vicuna finds the k-th region by counting; for a
    /// decoder trained from nothing, the number inside the region is a shortcut
    /// (docs/experiments/demo-journal.md, eighth round).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub region_index_tokens: Vec<i64>,
    /// How large a region's number is beside the region.
    #[serde(default, skip_serializing_if = "RegionIndexScale::is_default")]
    pub region_index_scale: RegionIndexScale,
}

/// The scale of the number embedding added to each region
/// (`rgpt.region_index_scale`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RegionIndexScale {
    /// The word embedding as it is.
    #[default]
    Embedding,
    /// The word embedding rescaled to the region embedding's own norm: a
    /// connector's output can grow several times larger than a word embedding
    /// and drown the number in it (docs/experiments/demo-journal.md, tenth
    /// round).
    Region,
}

impl RegionIndexScale {
    fn is_default(&self) -> bool {
        *self == RegionIndexScale::Embedding
    }
}

fn default_region_token() -> String {
    "<region>".into()
}

fn default_conversation() -> String {
    Template::VicunaV1.name().into()
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct RgptConfig {
    #[serde(flatten)]
    pub llava: LlavaConfig,
    #[serde(default)]
    pub rgpt: Option<RgptSection>,
}

impl RgptConfig {
    fn section(&self) -> RgptSection {
        self.rgpt.clone().unwrap_or(RgptSection {
            refiner: RefinerKind::None,
            mask_pool: MaskPoolKind::default(),
            image_token_grid: None,
            region_token: default_region_token(),
            conversation: default_conversation(),
            region_index_tokens: Vec::new(),
            region_index_scale: RegionIndexScale::Embedding,
        })
    }
}

/// Files a checkpoint carries besides weights, config and the tokenizer
/// (which is written from the tokenizer in use: it may have gained tokens).
const COPIED_FILES: [&str; 5] = [
    "tokenizer.model",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "preprocessor_config.json",
    "generation_config.json",
];

#[derive(Debug)]
pub struct RegionGpt {
    pub llava: Llava,
    pub refiner: FeatureRefiner,
    pub section: RgptSection,
    /// `section.conversation`, checked at load.
    template: Template,
}

/// One training example: a conversation split into labelled segments
/// (see [`crate::prompt::conversation_segments`]), its image if it has one,
/// and its regions in `<region>` order.
#[derive(Clone, Copy)]
pub struct TrainingExample<'a> {
    pub segments: &'a [Segment],
    pub image: Option<ExampleImage<'a>>,
    pub regions: &'a [RegionSpec],
    /// Without an image: the token ids of each region's name, in `<region>`
    /// order. Each such region is read as the mean of its name's word
    /// embeddings, the form a from-scratch decoder can learn to look regions up
    /// in before any comes from an image (docs/experiments/demo-journal.md).
    pub region_names: &'a [Vec<i64>],
    /// With an image: the token ids of the name each region should read
    /// as, in `<region>` order, or none. Given, the forward also measures
    /// how far each region's embedding is from that name's code
    /// ([`TrainingOutput::alignment`]).
    pub region_targets: &'a [Vec<i64>],
}

/// A preprocessed image of a training example.
#[derive(Clone, Copy)]
pub struct ExampleImage<'a> {
    /// [3, H, W]; every image of a batch has the same size.
    pub pixel_values: &'a Tensor,
    pub transform: &'a ImageTransform,
}

/// What one training forward gives back.
#[derive(Debug)]
pub struct TrainingOutput {
    /// Scalar f32: mean cross-entropy over the target tokens.
    pub loss: Tensor,
    /// [batch, seq, hidden]: the LLM's final-normed hidden states. The
    /// loss runs the LM head only where it is taken; `llm.logits(&hidden)`
    /// gives every position's logits.
    pub hidden: Tensor,
    /// [batch, seq]: the token where the loss is taken, else IGNORE_INDEX.
    pub labels: Tensor,
    /// How many tokens the loss averaged over.
    pub target_tokens: i64,
    /// Over the regions with `region_targets`: the mean of
    /// `|r - c|^2 / |c|^2`, `r` the connector's output for the region and
    /// `c` its target name's code (the mean of the name's word embeddings,
    /// as a region given by name is read), held fixed; and how many regions
    /// it averaged over. None when no region has a target.
    pub alignment: Option<(Tensor, i64)>,
}

/// Regions as the LLM reads them ([`RegionGpt::embed_regions`]).
#[derive(Debug)]
pub struct RegionEmbeddings {
    /// [regions, hidden]: the connector's output, every prompt's regions in
    /// order (what the region alignment of training measures).
    pub projected: Tensor,
    /// Per prompt, [its regions, hidden]: what takes each `<region>`'s place.
    pub per_prompt: Vec<Tensor>,
}

/// How original-image pixels land on a `grid_w` x `grid_h` feature grid.
fn grid_geometry(transform: &ImageTransform, grid_w: i64, grid_h: i64) -> GridGeometry {
    let (scale_x, scale_y) = transform.scale();
    let (offset_x, offset_y) = transform.map_point(0.0, 0.0);
    GridGeometry {
        scale_x,
        scale_y,
        offset_x,
        offset_y,
        processed_width: f64::from(transform.output_size.0),
        processed_height: f64::from(transform.output_size.1),
        grid_width: grid_w as usize,
        grid_height: grid_h as usize,
    }
}

/// One image with its regions, as a user gives them.
pub struct RegionPrompt<'a> {
    /// Token ids with one `<image>` and one `<region>` id per region.
    pub prompt_ids: &'a [i64],
    /// [1, 3, H, W] preprocessed pixels.
    pub pixel_values: &'a Tensor,
    /// How original-image pixels map onto `pixel_values`.
    pub transform: &'a ImageTransform,
    pub regions: &'a [RegionSpec],
}

impl RegionGpt {
    pub fn new(vs: &nn::Path, config: &RgptConfig, path: &Path) -> Result<Self, ModelError> {
        let llava = Llava::new(vs, &config.llava, path)?;
        let section = config.section();
        let template =
            Template::from_name(&section.conversation).map_err(|e| ModelError::Config {
                path: path.join("config.json"),
                message: format!("`rgpt.conversation`: {e}"),
            })?;
        let vocab = llava.llm.config().vocab_size as i64;
        if let Some(id) = section
            .region_index_tokens
            .iter()
            .find(|&&id| !(0..vocab).contains(&id))
        {
            return Err(ModelError::Config {
                path: path.join("config.json"),
                message: format!(
                    "`rgpt.region_index_tokens` holds token {id}, outside the vocabulary of \
                     {vocab}: list ids of the model's own tokenizer"
                ),
            });
        }
        let channels = llava.vision.hidden_size() as i64;
        let refiner = FeatureRefiner::new(vs, section.refiner, channels);
        Ok(RegionGpt {
            llava,
            refiner,
            section,
            template,
        })
    }

    /// The id of this model's region placeholder (`rgpt.region_token`) in
    /// `tokenizer`; an error when the tokenizer lacks it.
    pub fn region_token_id(&self, tokenizer: &rgpt_llm::Tokenizer) -> Result<i64, ModelError> {
        let token = &self.section.region_token;
        tokenizer.token_to_id(token).ok_or_else(|| {
            rgpt_llm::LlmError::InvalidRequest(format!(
                "the tokenizer has no `{token}` token for region placeholders: add it \
                 (`rgpt compose` does) or set `rgpt.region_token` to the one it has"
            ))
            .into()
        })
    }

    /// The conversation template prompts to this model are rendered in.
    pub fn template(&self) -> Template {
        self.template
    }

    /// Loads an RGPT or LLaVA checkpoint directory.
    pub fn from_pretrained(
        dir: &Path,
        device: Device,
        kind: Kind,
    ) -> Result<(Self, nn::VarStore), ModelError> {
        let _span = tracing::info_span!("load_rgpt", dir = %dir.display()).entered();
        load_frozen(dir, device, kind, RegionGpt::new)
    }

    /// Saves in RGPT's format: safetensors (sharded above
    /// `max_shard_bytes`, 4 GB by default) of every variable in `vs`, a
    /// `config.json` with `"model_type": "rgpt"` and the `rgpt` section,
    /// the tokenizer in use (`Tokenizer::save_pretrained`), and the other
    /// tokenizer / preprocessing / generation files copied from the first of
    /// `source_dirs` that has each. Each file lands atomically.
    pub fn save_pretrained(
        &self,
        vs: &nn::VarStore,
        tokenizer: &rgpt_llm::Tokenizer,
        source_dirs: &[&Path],
        out_dir: &Path,
        max_shard_bytes: Option<u64>,
    ) -> Result<(), ModelError> {
        let _span = tracing::info_span!("save_rgpt", dir = %out_dir.display()).entered();
        let tensors: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
        let max = max_shard_bytes.unwrap_or(rgpt_weights::save::DEFAULT_MAX_SHARD_BYTES);
        rgpt_weights::save::save_safetensors(&tensors, out_dir, max)?;
        let mut llava = self.llava.config.clone();
        llava.model_type = Some("rgpt".into());
        let config = RgptConfig {
            llava,
            rgpt: Some(self.section.clone()),
        };
        let mut json = serde_json::to_value(&config).map_err(|e| ModelError::Config {
            path: out_dir.join("config.json"),
            message: e.to_string(),
        })?;
        json["architectures"] = serde_json::json!(["RegionGptForConditionalGeneration"]);
        let text = serde_json::to_string_pretty(&json).unwrap_or_default() + "\n";
        rgpt_weights::save::write_atomic(&out_dir.join("config.json"), text.as_bytes())?;
        // `tokenizer.json`, or a slow tokenizer's `tokenizer.model` and
        // `added_tokens.json`: what reloads as the same tokenizer.
        tokenizer.save_pretrained(out_dir)?;
        for file in COPIED_FILES {
            if let Some(from) = source_dirs
                .iter()
                .map(|d| d.join(file))
                .find(|p| p.is_file())
            {
                let bytes =
                    std::fs::read(&from).map_err(|source| ModelError::Io { path: from, source })?;
                rgpt_weights::save::write_atomic(&out_dir.join(file), &bytes)?;
            }
        }
        Ok(())
    }

    /// A fresh RGPT from a CLIP or SigLIP directory (`CLIPVisionModel`,
    /// `CLIPModel`, `SiglipVisionModel` or `SiglipModel`) and a LLaMA
    /// directory, as training starts (paper Sec. 4): tower and
    /// decoder load their weights, the refiner and connector keep their fresh
    /// initialisation, and the tokenizer gains the `<image>` and `<region>`
    /// placeholders. Nothing is frozen; training decides what trains.
    pub fn compose(
        vision_dir: &Path,
        llm_dir: &Path,
        refiner: RefinerKind,
        device: Device,
        kind: Kind,
    ) -> Result<(Self, nn::VarStore, rgpt_llm::Tokenizer), ModelError> {
        let _span = tracing::info_span!("compose_rgpt").entered();
        let vision_path = vision_dir.join("config.json");
        let vision_json: serde_json::Value = read_config(&vision_path)?;
        let vision_config = vision_json
            .get("vision_config")
            .cloned()
            .unwrap_or(vision_json);
        let tower =
            VisionTowerConfig::from_value(&vision_config).map_err(|e| ModelError::Config {
                path: vision_path.clone(),
                message: e.to_string(),
            })?;
        let feature_select = match tower.patch_select() {
            FeatureSelect::Default => "default",
            FeatureSelect::Full => "full",
        };
        let llm_config_path = llm_dir.join("config.json");
        let text_config: serde_json::Value = read_config(&llm_config_path)?;
        let mut tokenizer = rgpt_llm::Tokenizer::from_dir(llm_dir)?;
        let ids = tokenizer.add_special_tokens(&["<image>", "<region>"])?;
        let image_token_index = ids.first().copied().ok_or_else(|| ModelError::Config {
            path: llm_dir.to_path_buf(),
            message: "could not add the <image> token to the tokenizer".into(),
        })?;
        let config = RgptConfig {
            llava: LlavaConfig {
                model_type: Some("rgpt".into()),
                vision_config,
                text_config,
                image_token_index,
                vision_feature_layer: -2,
                vision_feature_select_strategy: feature_select.into(),
                projector_hidden_act: "gelu".into(),
                multimodal_projector_bias: true,
            },
            rgpt: Some(RgptSection {
                refiner,
                mask_pool: MaskPoolKind::default(),
                image_token_grid: None,
                region_token: default_region_token(),
                conversation: default_conversation(),
                region_index_tokens: Vec::new(),
                region_index_scale: RegionIndexScale::Embedding,
            }),
        };
        let mut vs = nn::VarStore::new(device);
        vs.set_kind(kind);
        let model = RegionGpt::new(&vs.root(), &config, &llm_config_path)?;
        let mut vision = rgpt_weights::Checkpoint::open(vision_dir)?;
        // CLIPModel / SiglipModel nest the tower under `vision_model.`; a
        // vision model saved by transformers 5 has no prefix.
        vision.rename_prefixes(&[("vision_model.", "vision_tower."), ("", "vision_tower.")])?;
        vision.load_under(&vs, "vision_tower.", &mut |_| {})?;
        let mut llm = rgpt_weights::Checkpoint::open(llm_dir)?;
        llm.rename_prefixes(&[("", "language_model.")])?;
        llm.load_under(&vs, "language_model.", &mut |_| {})?;
        Ok((model, vs, tokenizer))
    }

    /// The refined map [1, C, H', W'] and the image tokens [1, h*w, C].
    pub fn encode_image(&self, pixel_values: &Tensor) -> Result<(Tensor, Tensor), ModelError> {
        let features = self.llava.vision_features(pixel_values)?;
        let refined = self.refiner.forward(&features)?;
        let grid = match self.section.image_token_grid {
            Some(grid) => grid,
            None => self.refiner.backbone_grid(&refined)?,
        };
        let tokens = image_tokens(&refined, grid)?;
        Ok((refined, tokens))
    }

    /// What `<image>` becomes [images, tokens, hidden]: the image tokens
    /// [images, tokens, C] of [`RegionGpt::encode_image`] through the shared
    /// connector.
    pub fn embed_image_tokens(&self, tokens: &Tensor) -> Tensor {
        self.llava.connector.forward(tokens)
    }

    /// The device the model runs on.
    pub fn device(&self) -> Device {
        self.llava.llm.device()
    }

    /// Splices image tokens and region embeddings (from
    /// [`RegionGpt::embed_image_tokens`] and [`RegionGpt::embed_regions`])
    /// into the prompt and generates.
    pub fn generate_spliced(
        &self,
        request: &SplicedRequest<'_>,
        config: &GenerationConfig,
        tokenizer: Option<&rgpt_llm::Tokenizer>,
        on_token: &mut dyn FnMut(usize, i64),
    ) -> Result<GenerationOutput, ModelError> {
        self.llava
            .generate_spliced(request, config, tokenizer, on_token)
    }

    /// Region features [regions, C]: each region rasterised on the original
    /// image and mask-pooled on `refined`'s grid as `rgpt.mask_pool` says.
    pub fn region_features(
        &self,
        refined: &Tensor,
        transform: &ImageTransform,
        regions: &[RegionSpec],
    ) -> Result<Tensor, ModelError> {
        self.batch_region_features(refined, &[(transform, regions)])
    }

    /// Region features of a batch: `images[b]` holds image `b`'s transform
    /// and regions, `refined` [B, C, H', W'] its refined maps. Returns
    /// [total regions, C] in `refined`'s dtype, image by image, each image's
    /// regions in order. Each region is rasterised on its original image
    /// (an error if it covers no pixel there), then, by `rgpt.mask_pool`:
    /// - `reference`: put through the image's preprocessing as a one-channel
    ///   image ([`ImageTransform::preprocess_mask`]), resized to the grid
    ///   and pooled as SpatialRGPT's `MaskPooling` does
    ///   ([`mask_pool_reference`]); a region that misses every sampled point
    ///   of the resize pools to a zero vector, as there.
    /// - `area`: projected onto the grid by covered area
    ///   ([`project_bitmap`]) and pooled ([`mask_pool`]); a region that
    ///   covers no cell is an error.
    pub fn batch_region_features(
        &self,
        refined: &Tensor,
        images: &[(&ImageTransform, &[RegionSpec])],
    ) -> Result<Tensor, ModelError> {
        let (_, channels, grid_h, grid_w) = refined.size4()?;
        let mut masks = Vec::new();
        let mut image_index = Vec::new();
        let mut index = 0;
        for (image, (transform, regions)) in images.iter().enumerate() {
            let geometry = grid_geometry(transform, grid_w, grid_h);
            let (width, height) = transform.original_size;
            for spec in regions.iter() {
                let bitmap = rasterize(spec, height, width)
                    .map_err(|source| ModelError::Region { index, source })?;
                masks.push(match self.section.mask_pool {
                    MaskPoolKind::Reference => transform.preprocess_mask(&bitmap.data)?,
                    MaskPoolKind::Area => project_bitmap(&bitmap, &geometry, index)?,
                });
                image_index.push(image as i64);
                index += 1;
            }
        }
        if masks.is_empty() {
            return Ok(Tensor::zeros(
                [0, channels],
                (refined.kind(), refined.device()),
            ));
        }
        let masks = Tensor::f_stack(&masks, 0)?;
        Ok(match self.section.mask_pool {
            MaskPoolKind::Reference => mask_pool_reference(refined, &masks, &image_index)?,
            MaskPoolKind::Area => mask_pool(refined, &masks, &image_index, PoolStrategy::Auto)?,
        })
    }

    /// The training forward (paper Sec. 4): every example's image goes
    /// through tower, refiner and connector in one batch, its regions are
    /// pooled and projected, the splice builds each sequence, sequences are
    /// right-padded, and the loss is next-token cross-entropy on the answer
    /// tokens only. Gradients reach whatever `vs` leaves trainable.
    pub fn forward_train(
        &self,
        examples: &[TrainingExample<'_>],
    ) -> Result<TrainingOutput, ModelError> {
        if examples.is_empty() {
            return Err(
                rgpt_llm::LlmError::InvalidRequest("an empty training batch".into()).into(),
            );
        }
        let with_image: Vec<&TrainingExample<'_>> =
            examples.iter().filter(|e| e.image.is_some()).collect();
        let (image_embeds, region_embeds) = if with_image.is_empty() {
            (None, None)
        } else {
            let pixels: Vec<Tensor> = with_image
                .iter()
                .filter_map(|e| e.image.as_ref())
                .map(|image| image.pixel_values.shallow_clone())
                .collect();
            let pixels = Tensor::f_stack(&pixels, 0)?.f_to_device(self.llava.llm.device())?;
            let (refined, tokens) = self.encode_image(&pixels)?;
            let per_image: Vec<(&ImageTransform, &[RegionSpec])> = with_image
                .iter()
                .filter_map(|e| e.image.as_ref().map(|image| (image.transform, e.regions)))
                .collect();
            let pooled = self.batch_region_features(&refined, &per_image)?;
            let counts: Vec<i64> = with_image.iter().map(|e| e.regions.len() as i64).collect();
            (
                Some(self.embed_image_tokens(&tokens)),
                Some(self.embed_regions(&pooled, &counts)?),
            )
        };
        let alignment = match &region_embeds {
            Some(regions) => self.region_alignment(&regions.projected, &with_image)?,
            None => None,
        };
        let hidden = self.llava.llm.config().hidden_size as i64;
        let no_regions = Tensor::zeros(
            [0, hidden],
            (self.llava.llm.kind(), self.llava.llm.device()),
        );
        let embed = |ids: &Tensor| self.llava.llm.embed(ids);
        let mut next_image = 0i64;
        let mut spliced = Vec::with_capacity(examples.len());
        for example in examples {
            let (images, regions) = match (&example.image, &image_embeds, &region_embeds) {
                (Some(_), Some(tokens), Some(embedded)) => {
                    let regions = embedded.per_prompt[next_image as usize].shallow_clone();
                    let image = tokens.f_get(next_image)?;
                    next_image += 1;
                    (vec![image], regions)
                }
                _ if !example.regions.is_empty() => {
                    return Err(crate::splice::SpliceError::RegionCount {
                        placeholders: 0,
                        regions: example.regions.len(),
                    }
                    .into())
                }
                _ if !example.region_names.is_empty() => (
                    Vec::new(),
                    self.number_regions(self.named_regions(example.region_names)?)?,
                ),
                _ => (Vec::new(), no_regions.shallow_clone()),
            };
            spliced.push(splice(example.segments, &embed, &images, &regions)?);
        }
        let batch = pad_batch(&spliced, false)?;
        let (size, seq, _) = batch.embeds.size3()?;
        let mut cache = self.llava.llm.new_cache(size, seq);
        let hidden = self
            .llava
            .llm
            .forward_embeds(&batch.embeds, Some(&batch.mask), &mut cache)?;
        let llm = &self.llava.llm;
        let (loss, target_tokens) =
            causal_lm_loss_from_hidden(&hidden, &batch.labels, |h| llm.logits(h));
        Ok(TrainingOutput {
            loss,
            hidden,
            labels: batch.labels,
            target_tokens,
            alignment,
        })
    }

    /// [`TrainingOutput::alignment`] of `regions`, the connector's output
    /// for the regions of `examples` in order.
    fn region_alignment(
        &self,
        regions: &Tensor,
        examples: &[&TrainingExample<'_>],
    ) -> Result<Option<(Tensor, i64)>, ModelError> {
        let mut rows = Vec::new();
        let mut names: Vec<Vec<i64>> = Vec::new();
        let mut start = 0i64;
        for example in examples {
            let count = example.regions.len();
            if !example.region_targets.is_empty() {
                if example.region_targets.len() != count {
                    return Err(rgpt_llm::LlmError::InvalidRequest(format!(
                        "{} region targets for {count} regions; give one per region or none",
                        example.region_targets.len()
                    ))
                    .into());
                }
                rows.extend(start..start + count as i64);
                names.extend_from_slice(example.region_targets);
            }
            start += count as i64;
        }
        if rows.is_empty() {
            return Ok(None);
        }
        let index = Tensor::from_slice(&rows).to_device(regions.device());
        let predicted = regions.f_index_select(0, &index)?;
        let codes = self
            .named_regions(&names)?
            .detach()
            .f_to_kind(predicted.kind())?;
        let squared_norm = |t: &Tensor| t.f_square()?.f_sum_dim_intlist(&[1i64][..], false, None);
        let distance = squared_norm(&predicted.f_sub(&codes)?)?
            .f_div(&squared_norm(&codes)?.f_clamp_min(1e-12)?)?
            .f_mean(Kind::Float)?;
        Ok(Some((distance, rows.len() as i64)))
    }

    /// The one path from pooled regions to what the LLM reads in place of
    /// each `<region>`: training, evaluation, `generate`, `chat` and the
    /// demo all come through here. `pooled` [regions, C] holds several
    /// prompts' regions one prompt after another, `counts[p]` of prompt
    /// `p` (a count of 0 is a prompt without regions). The paper's path is
    /// the shared connector alone; a checkpoint whose `rgpt` section numbers
    /// its regions (`region_index_tokens`, an extension of this project)
    /// then adds each region's number, counted within its prompt.
    pub fn embed_regions(
        &self,
        pooled: &Tensor,
        counts: &[i64],
    ) -> Result<RegionEmbeddings, ModelError> {
        let total: i64 = counts.iter().sum();
        if total != pooled.size()[0] {
            return Err(rgpt_llm::LlmError::InvalidRequest(format!(
                "{} pooled regions for prompts holding {total}",
                pooled.size()[0]
            ))
            .into());
        }
        let projected = self.llava.connector.forward(pooled);
        let mut per_prompt = Vec::with_capacity(counts.len());
        let mut start = 0;
        for &count in counts {
            per_prompt.push(self.number_regions(projected.f_narrow(0, start, count)?)?);
            start += count;
        }
        Ok(RegionEmbeddings {
            projected,
            per_prompt,
        })
    }

    /// How many regions one prompt may hold: the count of
    /// `rgpt.region_index_tokens` for a numbered checkpoint, else no limit.
    pub fn max_regions(&self) -> Option<usize> {
        let numbers = &self.section.region_index_tokens;
        (!numbers.is_empty()).then_some(numbers.len())
    }

    /// One prompt's region embeddings [regions, hidden], in order, each
    /// plus the word embedding of its number's token
    /// (`rgpt.region_index_tokens`; unchanged when that is empty).
    fn number_regions(&self, regions: Tensor) -> Result<Tensor, ModelError> {
        let numbers = &self.section.region_index_tokens;
        let count = regions.size()[0] as usize;
        if numbers.is_empty() || count == 0 {
            return Ok(regions);
        }
        if count > numbers.len() {
            return Err(ModelError::TooManyRegions {
                regions: count,
                numbered: numbers.len(),
            });
        }
        let ids = Tensor::from_slice(&numbers[..count]).to_device(regions.device());
        let marks = self.llava.llm.embed(&ids).f_to_kind(regions.kind())?;
        let marks = match self.section.region_index_scale {
            RegionIndexScale::Embedding => marks,
            RegionIndexScale::Region => {
                let norm = |t: &Tensor| t.f_norm_scalaropt_dim(2.0, [1i64].as_slice(), true);
                marks.f_mul(&norm(&regions)?.f_div(&norm(&marks)?.f_clamp_min(1e-12)?)?)?
            }
        };
        Ok(regions.f_add(&marks)?)
    }

    /// [regions, hidden]: each region given by name as the mean of its
    /// name's word embeddings.
    fn named_regions(&self, names: &[Vec<i64>]) -> Result<Tensor, ModelError> {
        let device = self.llava.llm.device();
        let means = names
            .iter()
            .map(|ids| {
                let ids = Tensor::from_slice(ids).to_device(device);
                self.llava
                    .llm
                    .embed(&ids)
                    .f_mean_dim(&[0i64][..], false, None)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Tensor::f_stack(&means, 0)?)
    }

    /// Generates an answer about the image and its regions.
    pub fn generate(
        &self,
        prompt: &RegionPrompt<'_>,
        region_token_id: i64,
        config: &GenerationConfig,
        tokenizer: Option<&rgpt_llm::Tokenizer>,
        on_token: &mut dyn FnMut(usize, i64),
    ) -> Result<GenerationOutput, ModelError> {
        self.generate_batch(
            std::slice::from_ref(prompt),
            region_token_id,
            config,
            tokenizer,
            on_token,
        )
    }

    /// Answers several prompts in one batch: their images go through the
    /// tower and refiner together, and the spliced prompts are left-padded
    /// into one generation. Every image must have the same preprocessed
    /// size (as one preprocessor gives).
    pub fn generate_batch(
        &self,
        prompts: &[RegionPrompt<'_>],
        region_token_id: i64,
        config: &GenerationConfig,
        tokenizer: Option<&rgpt_llm::Tokenizer>,
        on_token: &mut dyn FnMut(usize, i64),
    ) -> Result<GenerationOutput, ModelError> {
        let batch = self.prepare_batch(prompts, region_token_id)?;
        self.llava
            .generate_prepared(&batch, config, tokenizer, on_token)
    }

    /// Encodes the prompts' images and regions in one batch and splices
    /// them into the left-padded prompts, for
    /// [`Llava::generate_prepared`] and [`Llava::score_prepared`].
    pub fn prepare_batch(
        &self,
        prompts: &[RegionPrompt<'_>],
        region_token_id: i64,
    ) -> Result<PreparedBatch, ModelError> {
        let _guard = tch::no_grad_guard();
        let inputs = self.encode_prompt_batch(prompts)?;
        let requests: Vec<SplicedRequest<'_>> = prompts
            .iter()
            .zip(&inputs)
            .map(|(prompt, (image, regions))| SplicedRequest {
                prompt_ids: prompt.prompt_ids,
                region_token_id: Some(region_token_id),
                images: std::slice::from_ref(image),
                regions,
            })
            .collect();
        self.llava.splice_batch(&requests)
    }

    /// Per prompt, its image tokens [tokens, text_hidden] and region
    /// embeddings [regions, text_hidden], computed in one batch.
    pub fn encode_prompt_batch(
        &self,
        prompts: &[RegionPrompt<'_>],
    ) -> Result<Vec<(Tensor, Tensor)>, ModelError> {
        if prompts.is_empty() {
            return Ok(Vec::new());
        }
        let pixels: Vec<Tensor> = prompts
            .iter()
            .map(|p| {
                // [3, H, W] or [1, 3, H, W], as the preprocessor or a batch gives it.
                let size = p.pixel_values.size();
                let (height, width) = match size[..] {
                    [.., 3, height, width] => (height, width),
                    _ => (-1, -1),
                };
                p.pixel_values.f_view([-1, 3, height, width])
            })
            .collect::<Result<_, _>>()?;
        let pixels = Tensor::f_cat(&pixels, 0)?.f_to_device(self.llava.llm.device())?;
        let (refined, tokens) = self.encode_image(&pixels)?;
        let per_image: Vec<(&ImageTransform, &[RegionSpec])> =
            prompts.iter().map(|p| (p.transform, p.regions)).collect();
        let pooled = self.batch_region_features(&refined, &per_image)?;
        let images = self.embed_image_tokens(&tokens);
        let counts: Vec<i64> = prompts.iter().map(|p| p.regions.len() as i64).collect();
        let regions = self.embed_regions(&pooled, &counts)?;
        regions
            .per_prompt
            .into_iter()
            .enumerate()
            .map(|(i, regions)| Ok((images.f_get(i as i64)?, regions)))
            .collect()
    }

    /// Log-likelihood of each candidate answer (token ids, e.g. a class
    /// name and `</s>`) after the prompt: the prompt runs once and the
    /// candidates in one batch (paper Table 3's closed-set scores).
    pub fn score_answers(
        &self,
        prompt: &RegionPrompt<'_>,
        region_token_id: i64,
        candidates: &[Vec<i64>],
    ) -> Result<Vec<f64>, ModelError> {
        let mut scores =
            self.score_answers_batch(std::slice::from_ref(prompt), region_token_id, candidates)?;
        Ok(scores.pop().unwrap_or_default())
    }

    /// [`RegionGpt::score_answers`] for a batch of prompts: images encoded
    /// together, one left-padded prefill, every (prompt, candidate) pair in
    /// one forward. Returns, per prompt, each candidate's score.
    pub fn score_answers_batch(
        &self,
        prompts: &[RegionPrompt<'_>],
        region_token_id: i64,
        candidates: &[Vec<i64>],
    ) -> Result<Vec<Vec<f64>>, ModelError> {
        let batch = self.prepare_batch(prompts, region_token_id)?;
        self.llava.score_prepared(&batch, candidates)
    }
}
