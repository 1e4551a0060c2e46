//! The model a benchmark runs: a checkpoint directory, or a shape with
//! random weights (a named one, or any LLaMA `config.json`), so that a
//! check on a new machine needs no weights.
use std::path::PathBuf;

use rgpt_llm::{Llama, LlamaConfig};
use tch::{nn, Device, Kind};

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

    /// What reports call it.
    pub fn name(&self) -> String {
        match self {
            ModelSpec::Dir(dir) => dir.display().to_string(),
            ModelSpec::Random { name, .. } => format!("{name} (random)"),
        }
    }

    /// The decoder, in `kind` on `device`.
    pub fn llama(&self, device: Device, kind: Kind) -> Result<(Llama, nn::VarStore), BenchError> {
        match self {
            ModelSpec::Dir(dir) => Ok(Llama::from_pretrained(dir, device, kind)?),
            ModelSpec::Random { config, .. } => random_llama(config, device, kind),
        }
    }
}

/// A decoder of `config`'s shape with weights drawn as HF initialises
/// them (normal, std 0.02; norms one), from seed 0.
fn random_llama(
    config: &LlamaConfig,
    device: Device,
    kind: Kind,
) -> Result<(Llama, nn::VarStore), BenchError> {
    let mut vs = nn::VarStore::new(device);
    vs.set_kind(kind);
    let model = Llama::new(&vs.root(), config)?;
    tch::manual_seed(0);
    let _guard = tch::no_grad_guard();
    for (name, mut var) in vs.variables() {
        if name.ends_with("norm.weight") {
            let _ = var.f_fill_(1.0)?;
        } else {
            let _ = var.f_normal_(0.0, 0.02)?;
        }
    }
    vs.freeze();
    Ok((model, vs))
}
