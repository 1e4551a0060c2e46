//! The vision tower of a LLaVA-family model, CLIP or SigLIP (paper Table 7
//! compares both backbones), chosen as transformers' `AutoModel` chooses it:
//! by the `model_type` of the `vision_config` (LLaVA's default is CLIP).
use serde_json::Value;
use tch::{nn, Device, Kind, Tensor};

use crate::clip::{ClipVisionConfig, ClipVisionModel, FeatureSelect};
use crate::error::VisionError;
use crate::preprocess::{
    CropSize, HeightWidth, ImageAspectRatio, PreprocessorConfig, ResizeSize, ShortestEdge,
};
use crate::siglip::{SiglipVisionConfig, SiglipVisionModel};

/// The config of either tower.
#[derive(Debug, Clone)]
pub enum VisionTowerConfig {
    Clip(ClipVisionConfig),
    Siglip(SiglipVisionConfig),
}

impl VisionTowerConfig {
    /// Reads a `vision_config` object (or a whole CLIP/SigLIP `config.json`
    /// with a nested `vision_config`), validated.
    pub fn from_value(value: &Value) -> Result<Self, VisionError> {
        let value = value.get("vision_config").unwrap_or(value);
        let model_type = value
            .get("model_type")
            .and_then(Value::as_str)
            .unwrap_or("clip_vision_model");
        let invalid =
            |e: serde_json::Error| VisionError::InvalidInput(format!("vision_config: {e}"));
        let config = match model_type {
            "clip_vision_model" | "clip" => {
                VisionTowerConfig::Clip(serde_json::from_value(value.clone()).map_err(invalid)?)
            }
            "siglip_vision_model" | "siglip" => {
                VisionTowerConfig::Siglip(serde_json::from_value(value.clone()).map_err(invalid)?)
            }
            other => {
                return Err(VisionError::InvalidInput(format!(
                    "vision_config has model_type `{other}`: expected a CLIP \
                     (clip_vision_model) or SigLIP (siglip_vision_model) tower"
                )))
            }
        };
        let checked = match &config {
            VisionTowerConfig::Clip(c) => c.validate(),
            VisionTowerConfig::Siglip(c) => c.validate(),
        };
        checked.map_err(|e| VisionError::InvalidInput(format!("vision_config: {e}")))?;
        Ok(config)
    }

    pub fn hidden_size(&self) -> usize {
        match self {
            VisionTowerConfig::Clip(c) => c.hidden_size,
            VisionTowerConfig::Siglip(c) => c.hidden_size,
        }
    }

    /// The image processor a checkpoint of this tower gets when its source
    /// shipped none: the processor class's defaults at the tower's input
    /// size, with LLaVA's `pad` to a square (as RegionGPT prepares images).
    /// CLIP resizes the shortest edge and centre-crops; SigLIP resizes to
    /// the square and normalises with mean = std = 0.5.
    pub fn default_preprocessor(&self) -> PreprocessorConfig {
        let square = |side: usize| HeightWidth {
            height: side as u32,
            width: side as u32,
        };
        match self {
            VisionTowerConfig::Clip(c) => PreprocessorConfig {
                size: ResizeSize::ShortestEdge(ShortestEdge {
                    shortest_edge: c.image_size as u32,
                }),
                crop_size: CropSize::Exact(square(c.image_size)),
                image_aspect_ratio: ImageAspectRatio::Pad,
                ..PreprocessorConfig::default()
            },
            VisionTowerConfig::Siglip(c) => PreprocessorConfig {
                size: ResizeSize::Exact(square(c.image_size)),
                image_aspect_ratio: ImageAspectRatio::Pad,
                ..PreprocessorConfig::siglip()
            },
        }
    }

    /// The token selection that keeps every patch and nothing else: drop
    /// CLIP's CLS token; SigLIP has none.
    pub fn patch_select(&self) -> FeatureSelect {
        match self {
            VisionTowerConfig::Clip(_) => FeatureSelect::Default,
            VisionTowerConfig::Siglip(_) => FeatureSelect::Full,
        }
    }
}

/// A CLIP or SigLIP vision model.
#[derive(Debug)]
pub enum VisionTower {
    Clip(ClipVisionModel),
    Siglip(SiglipVisionModel),
}

impl VisionTower {
    /// Declares the tower's variables under `vs` (HF names, no
    /// `vision_model.` level, as transformers 5 saves them).
    pub fn new(vs: &nn::Path, config: &VisionTowerConfig) -> Result<Self, VisionError> {
        Ok(match config {
            VisionTowerConfig::Clip(c) => VisionTower::Clip(ClipVisionModel::new(vs, c)?),
            VisionTowerConfig::Siglip(c) => VisionTower::Siglip(SiglipVisionModel::new(vs, c)?),
        })
    }

    /// Activation checkpointing of the encoder layers: a training forward
    /// keeps each layer's input only and recomputes the layer in backward.
    pub fn set_activation_checkpointing(&mut self, on: bool) {
        match self {
            VisionTower::Clip(m) => m.set_activation_checkpointing(on),
            VisionTower::Siglip(m) => m.set_activation_checkpointing(on),
        }
    }

    pub fn config(&self) -> VisionTowerConfig {
        match self {
            VisionTower::Clip(m) => VisionTowerConfig::Clip(m.config().clone()),
            VisionTower::Siglip(m) => VisionTowerConfig::Siglip(m.config().clone()),
        }
    }

    pub fn hidden_size(&self) -> usize {
        match self {
            VisionTower::Clip(m) => m.config().hidden_size,
            VisionTower::Siglip(m) => m.config().hidden_size,
        }
    }

    pub fn device(&self) -> Device {
        match self {
            VisionTower::Clip(m) => m.device(),
            VisionTower::Siglip(m) => m.device(),
        }
    }

    pub fn kind(&self) -> Kind {
        match self {
            VisionTower::Clip(m) => m.kind(),
            VisionTower::Siglip(m) => m.kind(),
        }
    }

    /// The hidden state of `layer` with `strategy`'s tokens: [batch,
    /// tokens, hidden] (LLaVA's `feature_select`).
    pub fn features(
        &self,
        pixel_values: &Tensor,
        layer: i64,
        strategy: FeatureSelect,
    ) -> Result<Tensor, VisionError> {
        match self {
            VisionTower::Clip(m) => m.forward(pixel_values)?.select_features(layer, strategy),
            VisionTower::Siglip(m) => m.forward(pixel_values)?.select_features(layer, strategy),
        }
    }
}
