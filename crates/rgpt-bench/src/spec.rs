//! The model a benchmark runs: a checkpoint directory, or a shape with
//! random weights (a named one, or any LLaMA `config.json`), so that a
//! check on a new machine needs no weights.
use std::path::PathBuf;

use rgpt_llm::{Conversation, Llama, LlamaConfig};
use rgpt_model::chat::RegionGenerator;
use rgpt_model::rgpt::{RegionGpt, RgptConfig};
use rgpt_vision::preprocess::PreprocessorConfig;
use tch::{nn, Device, Kind};

use crate::e2e::E2ePrompt;
use crate::BenchError;

/// Named shapes for `--random-init`.
pub const NAMED: &[&str] = &["llama-7b", "llama-1b"];

#[derive(Debug, Clone)]
pub enum ModelSpec {
    /// A checkpoint directory, loaded as it is.
    Dir(PathBuf),
    /// A shape, with random weights.
    Random {
        name: String,
        config: Box<LlamaConfig>,
    },
}

impl ModelSpec {
    /// `--random-init NAME|CONFIG.json`: one of [`NAMED`] (Vicuna-7B's
    /// shape, or TinyLlama-1.1B's), or a LLaMA `config.json`.
    pub fn random(spec: &str) -> Result<ModelSpec, BenchError> {
        let json = match spec {
            // lmsys/vicuna-7b-v1.5 (LLaMA-2-7B): the decoder RGPT uses.
            "llama-7b" => r#"{"hidden_size": 4096, "intermediate_size": 11008,
                "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32,
                "vocab_size": 32000, "max_position_embeddings": 4096, "rms_norm_eps": 1e-5}"#
                .to_string(),
            // TinyLlama-1.1B: small enough for a CPU row.
            "llama-1b" => r#"{"hidden_size": 2048, "intermediate_size": 5632,
                "num_hidden_layers": 22, "num_attention_heads": 32, "num_key_value_heads": 4,
                "vocab_size": 32000, "max_position_embeddings": 2048, "rms_norm_eps": 1e-5}"#
                .to_string(),
            path => std::fs::read_to_string(path).map_err(|e| {
                BenchError::Invalid(format!(
                    "--random-init {path}: not one of {} and not a readable config.json ({e})",
                    NAMED.join(", ")
                ))
            })?,
        };
        let config: LlamaConfig = serde_json::from_str(&json).map_err(|e| {
            BenchError::Invalid(format!("--random-init {spec}: not a LLaMA config: {e}"))
        })?;
        Ok(ModelSpec::Random {
            name: spec.to_string(),
            config: Box::new(config),
        })
    }

    /// The decoder, in `kind` on `device`.
    pub fn llama(&self, device: Device, kind: Kind) -> Result<(Llama, nn::VarStore), BenchError> {
        match self {
            ModelSpec::Dir(dir) => Ok(Llama::from_pretrained(dir, device, kind)?),
            ModelSpec::Random { config, .. } => random_llama(config, device, kind),
        }
    }
}

/// A decoder of `config`'s shape with random weights.
fn random_llama(
    config: &LlamaConfig,
    device: Device,
    kind: Kind,
) -> Result<(Llama, nn::VarStore), BenchError> {
    let mut vs = nn::VarStore::new(device);
    vs.set_kind(kind);
    let model = Llama::new(&vs.root(), config)?;
    randomize(&mut vs)?;
    Ok((model, vs))
}

/// Draws every variable as HF initialises such models (normal, std 0.02;
/// norms' weights one, biases zero), from seed 0, and freezes them.
fn randomize(vs: &mut nn::VarStore) -> Result<(), BenchError> {
    tch::manual_seed(0);
    let _guard = tch::no_grad_guard();
    for (name, mut var) in vs.variables() {
        if name.ends_with("norm.weight") || name.ends_with("layernorm.weight") {
            let _ = var.f_fill_(1.0)?;
        } else if name.ends_with("bias") {
            let _ = var.f_zero_()?;
        } else {
            let _ = var.f_normal_(0.0, 0.02)?;
        }
    }
    vs.freeze();
    Ok(())
}

/// An RGPT for the e2e benchmark, with the prompt it is asked.
pub struct E2eModel {
    pub model: RegionGpt,
    pub preprocessor: PreprocessorConfig,
    pub prompt: E2ePrompt,
    _weights: Box<dyn std::any::Any>,
}

/// RGPT-7B's shape: CLIP ViT-L/14-336, the deconvolution refiner, the
/// connector and Vicuna-7B, with `<image>` at 32000 and `<region>` at 32001.
const RGPT_7B: &str = r#"{"model_type": "rgpt", "image_token_index": 32000,
    "vision_config": {"model_type": "clip_vision_model", "hidden_size": 1024,
        "intermediate_size": 4096, "num_hidden_layers": 24, "num_attention_heads": 16,
        "image_size": 336, "patch_size": 14, "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5,
        "projection_dim": 768},
    "text_config": {"model_type": "llama", "hidden_size": 4096, "intermediate_size": 11008,
        "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32,
        "vocab_size": 32002, "max_position_embeddings": 4096, "rms_norm_eps": 1e-5},
    "rgpt": {"refiner": "deconv", "region_token": "<region>"}}"#;

/// The question e2e asks, with one `<region>` per region.
const E2E_QUESTION: &str = "<image>\nRegion [1] <region>, Region [2] <region>, Region [3] \
    <region>. Describe each region in detail.";

impl E2eModel {
    /// A checkpoint (RGPT, with its tokenizer: the question is templated
    /// and tokenized as `rgpt generate` does), or `rgpt-7b` or an RGPT
    /// `config.json` with random weights and a prompt of the same shape.
    pub fn load(
        model: Option<&std::path::Path>,
        random_init: Option<&str>,
        device: Device,
        kind: Kind,
    ) -> Result<E2eModel, BenchError> {
        match (model, random_init) {
            (Some(dir), _) => {
                let generator = RegionGenerator::load(dir, device, kind)?;
                let region_token_id = generator.region_token_id()?;
                let conversation =
                    Conversation::single_turn(generator.model.template(), E2E_QUESTION);
                let prompt_ids = generator.prompt_ids(&conversation.prompt())?;
                let (model, preprocessor) = generator.into_parts();
                Ok(E2eModel {
                    model: model.0,
                    preprocessor,
                    prompt: E2ePrompt {
                        prompt_ids,
                        region_token_id,
                    },
                    _weights: Box::new(model.1),
                })
            }
            (None, Some(spec)) => {
                let json = match spec {
                    "rgpt-7b" => RGPT_7B.to_string(),
                    path => std::fs::read_to_string(path).map_err(|e| {
                        BenchError::Invalid(format!(
                            "--random-init {path}: not rgpt-7b and not a readable config.json ({e})"
                        ))
                    })?,
                };
                let config: RgptConfig = serde_json::from_str(&json).map_err(|e| {
                    BenchError::Invalid(format!("--random-init {spec}: not an RGPT config: {e}"))
                })?;
                let mut vs = nn::VarStore::new(device);
                vs.set_kind(kind);
                let model = RegionGpt::new(&vs.root(), &config, std::path::Path::new(spec))?;
                randomize(&mut vs)?;
                let preprocessor = model.default_preprocessor()?;
                let prompt = synthetic_prompt(&model, &config)?;
                Ok(E2eModel {
                    model,
                    preprocessor,
                    prompt,
                    _weights: Box::new(vs),
                })
            }
            (None, None) => Err(BenchError::Invalid(
                "give the model: --model DIR, or --random-init rgpt-7b|CONFIG.json".into(),
            )),
        }
    }
}

/// A prompt as long as the templated question, for a model without a
/// tokenizer: BOS, text ids, the image, and the three regions among text.
fn synthetic_prompt(model: &RegionGpt, config: &RgptConfig) -> Result<E2ePrompt, BenchError> {
    let vocab = model.llava.llm.config().vocab_size as i64;
    let image = config.llava.image_token_index;
    if !(0..vocab).contains(&image) || vocab < 8 {
        return Err(BenchError::Invalid(format!(
            "the config's image token {image} is outside its vocabulary of {vocab} (or that \
             has under 8 ids)"
        )));
    }
    // The last id that is not the image's stands for `<region>`; text
    // takes ids from 3 up, neither of those.
    let region = if image == vocab - 1 {
        vocab - 2
    } else {
        vocab - 1
    };
    let words: Vec<i64> = (3..vocab.min(1003))
        .filter(|&id| id != image && id != region)
        .collect();
    let text = |n: i64, from: i64| {
        let words = &words;
        (from..from + n).map(move |i| words[i as usize % words.len()])
    };
    let mut ids: Vec<i64> = vec![1];
    ids.extend(text(35, 0));
    ids.push(image);
    for k in 0..3 {
        ids.extend(text(6, 50 + 10 * k));
        ids.push(region);
    }
    ids.extend(text(12, 90));
    Ok(E2ePrompt {
        prompt_ids: ids,
        region_token_id: region,
    })
}
