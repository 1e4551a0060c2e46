//! The decoder's configuration, mirroring transformers' `LlamaConfig`
//! (`configuration_llama.py`) field for field, including the legacy
//! `rope_theta` + `rope_scaling` keys that Vicuna-era checkpoints use and the
//! `rope_parameters` key that transformers 5 writes.
use std::path::Path;

use serde::Deserialize;

use crate::LlmError;

/// HF `config.json` of a LLaMA-family model.
#[derive(Debug, Clone, Deserialize)]
pub struct LlamaConfig {
    #[serde(default)]
    pub model_type: Option<String>,
    #[serde(default)]
    pub architectures: Option<Vec<String>>,
    #[serde(default = "default_vocab_size")]
    pub vocab_size: usize,
    #[serde(default = "default_hidden_size")]
    pub hidden_size: usize,
    #[serde(default = "default_intermediate_size")]
    pub intermediate_size: usize,
    #[serde(default = "default_num_hidden_layers")]
    pub num_hidden_layers: usize,
    #[serde(default = "default_num_attention_heads")]
    pub num_attention_heads: usize,
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    #[serde(default)]
    pub head_dim: Option<usize>,
    #[serde(default = "default_hidden_act")]
    pub hidden_act: String,
    #[serde(default = "default_max_position_embeddings")]
    pub max_position_embeddings: usize,
    #[serde(default = "default_rms_norm_eps")]
    pub rms_norm_eps: f64,
    #[serde(default)]
    pub bos_token_id: Option<TokenIds>,
    #[serde(default)]
    pub eos_token_id: Option<TokenIds>,
    #[serde(default)]
    pub pad_token_id: Option<TokenIds>,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    #[serde(default)]
    pub attention_bias: bool,
    #[serde(default)]
    pub mlp_bias: bool,
    #[serde(default)]
    pub rope_theta: Option<f64>,
    #[serde(default)]
    pub rope_scaling: Option<RopeParameters>,
    #[serde(default)]
    pub rope_parameters: Option<RopeParameters>,
}

/// `eos_token_id` is an int or a list of ints (Llama-3 has several).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum TokenIds {
    One(i64),
    Many(Vec<i64>),
}

impl TokenIds {
    pub fn to_vec(&self) -> Vec<i64> {
        match self {
            TokenIds::One(id) => vec![*id],
            TokenIds::Many(ids) => ids.clone(),
        }
    }
}

/// RoPE parameters as HF writes them (`rope_scaling` in transformers 4,
/// `rope_parameters` in 5); `type` is the pre-4.45 spelling of `rope_type`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RopeParameters {
    #[serde(default, alias = "type")]
    pub rope_type: Option<String>,
    #[serde(default)]
    pub rope_theta: Option<f64>,
    #[serde(default)]
    pub factor: Option<f64>,
    #[serde(default)]
    pub low_freq_factor: Option<f64>,
    #[serde(default)]
    pub high_freq_factor: Option<f64>,
    #[serde(default)]
    pub original_max_position_embeddings: Option<usize>,
}

/// The RoPE variant a config asks for, resolved from whichever keys it uses.
#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    Default,
    Linear {
        factor: f64,
    },
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position_embeddings: usize,
    },
}

fn default_vocab_size() -> usize {
    32000
}
fn default_hidden_size() -> usize {
    4096
}
fn default_intermediate_size() -> usize {
    11008
}
fn default_num_hidden_layers() -> usize {
    32
}
fn default_num_attention_heads() -> usize {
    32
}
fn default_hidden_act() -> String {
    "silu".into()
}
fn default_max_position_embeddings() -> usize {
    2048
}
fn default_rms_norm_eps() -> f64 {
    1e-6
}

impl LlamaConfig {
    /// Reads `config.json` and checks that it describes a model we can run.
    pub fn from_file(path: &Path) -> Result<Self, LlmError> {
        let config: LlamaConfig = rgpt_weights::read_json(path)?;
        config.validate(path)?;
        Ok(config)
    }

    /// Parses a config embedded in another (e.g. a LLaVA `text_config`);
    /// `path` names the file in errors.
    pub fn from_value(value: serde_json::Value, path: &Path) -> Result<Self, LlmError> {
        let config: LlamaConfig = serde_json::from_value(value).map_err(|e| LlmError::Config {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        config.validate(path)?;
        Ok(config)
    }

    fn validate(&self, path: &Path) -> Result<(), LlmError> {
        let model_type = self.model_type.as_deref().unwrap_or("");
        if model_type != "llama" {
            let found = if model_type.is_empty() {
                self.architectures
                    .as_ref()
                    .and_then(|a| a.first().cloned())
                    .unwrap_or_else(|| "(no model_type)".into())
            } else {
                model_type.to_string()
            };
            return Err(LlmError::UnsupportedArchitecture {
                path: path.to_path_buf(),
                found,
            });
        }
        let invalid = |message: String| LlmError::Config {
            path: path.to_path_buf(),
            message,
        };
        if self.hidden_act != "silu" {
            return Err(invalid(format!(
                "hidden_act `{}` is not supported (LLaMA uses silu)",
                self.hidden_act
            )));
        }
        if self.num_attention_heads == 0
            || self.num_attention_heads % self.num_key_value_heads() != 0
        {
            return Err(invalid(format!(
                "num_attention_heads {} is not a multiple of num_key_value_heads {}",
                self.num_attention_heads,
                self.num_key_value_heads()
            )));
        }
        if self.head_dim.is_none() && self.hidden_size % self.num_attention_heads != 0 {
            return Err(invalid(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            )));
        }
        self.rope_scaling_kind().map_err(invalid)?;
        Ok(())
    }

    pub fn num_key_value_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    pub fn head_dim(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads)
    }

    fn rope(&self) -> Option<&RopeParameters> {
        self.rope_parameters.as_ref().or(self.rope_scaling.as_ref())
    }

    pub fn rope_theta(&self) -> f64 {
        self.rope()
            .and_then(|r| r.rope_theta)
            .or(self.rope_theta)
            .unwrap_or(10000.0)
    }

    /// Resolves the RoPE variant; the error names what is missing.
    pub fn rope_scaling_kind(&self) -> Result<RopeScaling, String> {
        let Some(rope) = self.rope() else {
            return Ok(RopeScaling::Default);
        };
        let need = |v: Option<f64>, key: &str| {
            v.ok_or_else(|| {
                format!(
                    "rope scaling `{}` needs `{key}`",
                    rope.rope_type.as_deref().unwrap_or("?")
                )
            })
        };
        match rope.rope_type.as_deref().unwrap_or("default") {
            "default" => Ok(RopeScaling::Default),
            "linear" => Ok(RopeScaling::Linear {
                factor: need(rope.factor, "factor")?,
            }),
            "llama3" => Ok(RopeScaling::Llama3 {
                factor: need(rope.factor, "factor")?,
                low_freq_factor: need(rope.low_freq_factor, "low_freq_factor")?,
                high_freq_factor: need(rope.high_freq_factor, "high_freq_factor")?,
                original_max_position_embeddings: rope
                    .original_max_position_embeddings
                    .unwrap_or(self.max_position_embeddings),
            }),
            other => Err(format!(
                "rope scaling type `{other}` is not supported (supported: default, linear, llama3)"
            )),
        }
    }

    pub fn eos_token_ids(&self) -> Vec<i64> {
        self.eos_token_id
            .as_ref()
            .map(TokenIds::to_vec)
            .unwrap_or_default()
    }
}
