//! RGPT checkpoints: loading an RGPT or LLaVA directory, saving in RGPT's
//! format, and composing a fresh RGPT from a vision and a LLaMA checkpoint.
use std::path::Path;

use rgpt_region::MaskPoolKind;
use rgpt_vision::clip::FeatureSelect;
use rgpt_vision::preprocess::PreprocessorConfig;
use rgpt_vision::refiner::RefinerKind;
use rgpt_vision::tower::VisionTowerConfig;
use tch::{nn, Device, Kind, Tensor};

use super::config::{default_conversation, default_region_token, RgptConfig, RgptSection};
use super::extensions::RgptExtensions;
use super::RegionGpt;
use crate::llava::{load_frozen, read_config, LlavaConfig};
use crate::ModelError;

/// Files a checkpoint carries besides weights, config and the tokenizer
/// (which is written from the tokenizer in use: it may have gained tokens).
const COPIED_FILES: [&str; 5] = [
    "tokenizer.model",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "preprocessor_config.json",
    "generation_config.json",
];

impl RegionGpt {
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
        // A tower whose source shipped no image processor gets its class's
        // defaults, so `rgpt generate --image` runs on what was saved.
        let preprocessor = out_dir.join("preprocessor_config.json");
        if !preprocessor.is_file() {
            let json = serde_json::to_string_pretty(&self.default_preprocessor()?)
                .unwrap_or_default()
                + "\n";
            rgpt_weights::save::write_atomic(&preprocessor, json.as_bytes())?;
        }
        Ok(())
    }

    /// The image processor of the tower's class at its size (CLIP's or
    /// SigLIP's defaults, padded to square as LLaVA does): what a
    /// checkpoint whose tower shipped no `preprocessor_config.json` uses.
    pub fn default_preprocessor(&self) -> Result<PreprocessorConfig, ModelError> {
        Ok(VisionTowerConfig::from_value(&self.llava.config.vision_config)?.default_preprocessor())
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
                extensions: RgptExtensions::default(),
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
}
