//! The `rgpt` section of an RGPT `config.json` and the whole config (LLaVA's
//! plus that section). A LLaVA config without the section reads as refiner
//! `none`.
use rgpt_llm::Template;
use rgpt_region::MaskPoolKind;
use rgpt_vision::refiner::RefinerKind;
use serde::{Deserialize, Serialize};

use super::extensions::RgptExtensions;
use crate::llava::LlavaConfig;

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
    /// This project's extensions for models trained from nothing, all off
    /// by default (`extensions.rs`); kept flat in `config.json`.
    #[serde(flatten)]
    pub extensions: RgptExtensions,
}

pub(super) fn default_region_token() -> String {
    "<region>".into()
}

pub(super) fn default_conversation() -> String {
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
    pub(super) fn section(&self) -> RgptSection {
        self.rgpt.clone().unwrap_or(RgptSection {
            refiner: RefinerKind::None,
            mask_pool: MaskPoolKind::default(),
            image_token_grid: None,
            region_token: default_region_token(),
            conversation: default_conversation(),
            extensions: RgptExtensions::default(),
        })
    }
}
