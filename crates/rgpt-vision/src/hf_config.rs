//! Reading Hugging Face vision configs and checkpoints, shared by CLIP and
//! SigLIP: the config checks both need, the vision section of a full
//! (`CLIPConfig`, `SiglipConfig`) or vision-only config, and where the
//! vision model sits in a checkpoint's tensor names.
use std::path::Path;

use serde_json::Value;
use tch::nn;

use crate::encoder::Activation;
use crate::error::VisionError;

type Result<T> = std::result::Result<T, VisionError>;

/// The config checks CLIP and SigLIP share.
pub(crate) fn validate_common(
    hidden_size: usize,
    num_heads: usize,
    image_size: usize,
    patch_size: usize,
    hidden_act: &str,
) -> std::result::Result<(), String> {
    if num_heads == 0 || hidden_size % num_heads != 0 {
        return Err(format!(
            "hidden_size {hidden_size} is not a multiple of num_attention_heads {num_heads}"
        ));
    }
    if patch_size == 0 || image_size < patch_size {
        return Err(format!(
            "patch_size {patch_size} does not fit image_size {image_size}"
        ));
    }
    Activation::from_name(hidden_act)?;
    Ok(())
}

pub(crate) fn read_json(path: &Path) -> Result<Value> {
    Ok(rgpt_weights::read_json(path)?)
}

/// The vision part of a config: the whole file for `vision_type`, the
/// nested `vision_config` (or `legacy_key` when present) for `full_type`.
pub(crate) fn vision_section(
    path: &Path,
    value: &Value,
    full_type: &str,
    vision_type: &str,
    legacy_key: Option<&str>,
) -> Result<Value> {
    let model_type = value.get("model_type").and_then(Value::as_str);
    match model_type {
        Some(t) if t == vision_type => Ok(value.clone()),
        Some(t) if t == full_type => {
            let nested = legacy_key
                .and_then(|k| value.get(k))
                .filter(|v| !v.is_null())
                .or_else(|| value.get("vision_config").filter(|v| !v.is_null()));
            match nested {
                Some(v @ Value::Object(_)) => Ok(v.clone()),
                // HF builds the sub-config from its defaults when absent.
                None => Ok(Value::Object(Default::default())),
                Some(_) => Err(VisionError::Config {
                    path: path.to_path_buf(),
                    message: "`vision_config` is not an object".into(),
                }),
            }
        }
        other => {
            let found = match other {
                Some(t) => t.to_string(),
                None => value
                    .get("architectures")
                    .and_then(|a| a.get(0))
                    .and_then(Value::as_str)
                    .unwrap_or("(no model_type)")
                    .to_string(),
            };
            Err(VisionError::UnsupportedArchitecture {
                path: path.to_path_buf(),
                found,
            })
        }
    }
}

/// The VarStore path of the vision model inside a checkpoint: `vision_model`
/// for transformers-4 `CLIPVisionModel`/`CLIPModel`/`SiglipModel` files,
/// the root for transformers-5 `*VisionModel` files, or whatever unique prefix
/// holds `embeddings.patch_embedding.weight` (e.g. a LLaVA vision tower).
pub(crate) fn vision_model_path<'a>(
    checkpoint: &rgpt_weights::Checkpoint,
    root: nn::Path<'a>,
) -> nn::Path<'a> {
    const KEY: &str = "embeddings.patch_embedding.weight";
    let prefix = if checkpoint.contains(KEY) {
        String::new()
    } else if checkpoint.contains(&format!("vision_model.{KEY}")) {
        "vision_model.".to_string()
    } else {
        let mut found: Vec<&str> = checkpoint
            .names()
            .filter_map(|n| n.strip_suffix(KEY))
            .filter(|p| p.ends_with('.'))
            .collect();
        found.sort_unstable();
        match found.as_slice() {
            [one] => one.to_string(),
            // Missing or ambiguous: loading reports the missing tensors.
            _ => String::new(),
        }
    };
    prefix
        .split('.')
        .filter(|s| !s.is_empty())
        .fold(root, |p, s| p / s)
}
