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
//!
//! The files: `config.rs` (the `rgpt` section), `checkpoint.rs` (load, save,
//! compose), this one (encoding images and regions, and the one region
//! path), `train.rs` (the training forward), `generate.rs` (batched
//! generation and scoring) and `extensions.rs` (this project's additions for
//! models trained from nothing, off by default).
mod checkpoint;
mod config;
mod extensions;
mod generate;
mod train;

use std::path::Path;

use rgpt_llm::Template;
use rgpt_region::{
    mask_pool, mask_pool_reference, project_bitmap, rasterize, GridGeometry, MaskPoolKind,
    PoolStrategy, RegionSpec,
};
use rgpt_vision::preprocess::ImageTransform;
use rgpt_vision::refiner::{image_tokens, FeatureRefiner};
use tch::{nn, Device, Tensor};

pub use config::{RgptConfig, RgptSection};
pub use extensions::{RegionIndexScale, RgptExtensions};
pub use generate::RegionPrompt;
pub use train::{ExampleImage, TrainingExample, TrainingOutput};

use crate::llava::Llava;
use crate::ModelError;

#[derive(Debug)]
pub struct RegionGpt {
    pub llava: Llava,
    pub refiner: FeatureRefiner,
    pub section: RgptSection,
    /// `section.conversation`, checked at load.
    template: Template,
}

/// Regions as the LLM reads them ([`RegionGpt::embed_regions`]): the
/// connector's output for every prompt's regions, each prompt's numbered
/// when it is taken ([`RegionEmbeddings::prompt`]), so that a training
/// batch builds each prompt's graph in its turn, as it always has (the
/// order in which gradients reach the shared word embeddings is kept, and
/// with it a run's numbers to the last digit).
#[derive(Debug)]
pub struct RegionEmbeddings<'m> {
    model: &'m RegionGpt,
    /// [regions, hidden]: the connector's output, every prompt's regions in
    /// order (what the region alignment of training measures).
    pub projected: Tensor,
    /// Per prompt, its first row in `projected` and its count.
    spans: Vec<(i64, i64)>,
}

impl RegionEmbeddings<'_> {
    /// How many prompts.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Prompt `p`'s regions [count, hidden], what takes each of its
    /// `<region>`s' place.
    pub fn prompt(&self, p: usize) -> Result<Tensor, ModelError> {
        let (start, count) = *self.spans.get(p).ok_or_else(|| {
            rgpt_llm::LlmError::InvalidRequest(format!(
                "prompt {p} of a batch of {}",
                self.spans.len()
            ))
        })?;
        self.model
            .number_regions(self.projected.f_narrow(0, start, count)?)
    }
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
            .extensions
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

    /// The device the model runs on.
    pub fn device(&self) -> Device {
        self.llava.llm.device()
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
    ) -> Result<RegionEmbeddings<'_>, ModelError> {
        let total: i64 = counts.iter().sum();
        if total != pooled.size()[0] {
            return Err(rgpt_llm::LlmError::InvalidRequest(format!(
                "{} pooled regions for prompts holding {total}",
                pooled.size()[0]
            ))
            .into());
        }
        let projected = self.llava.connector.forward(pooled);
        let starts = counts.iter().scan(0, |next, &count| {
            let start = *next;
            *next += count;
            Some((start, count))
        });
        Ok(RegionEmbeddings {
            model: self,
            projected,
            spans: starts.collect(),
        })
    }
}
