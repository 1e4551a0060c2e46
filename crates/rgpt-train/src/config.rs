//! `rgpt train --config FILE.yaml`: every field of a run, checked before
//! any work starts (unknown fields are refused by name). The paper's runs
//! are `configs/rgpt-7b-pretrain.yaml` and `configs/rgpt-7b-finetune.yaml`.
use std::path::{Path, PathBuf};

use rgpt_llm::{LlmError, LoraConfig};
use serde::{Deserialize, Serialize};
use tch::{Cuda, Device, Kind};

use crate::freeze::{Part, Stage};
use crate::optimizer::AdamWConfig;
use crate::schedule::Schedule;
use crate::TrainError;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Where the weights come from: `{pretrained: DIR}`,
    /// `{compose: {vision: DIR, llm: DIR, refiner: deconv}}` or
    /// `{tiny: {image_size: 64, ...}}`.
    #[serde(with = "serde_yaml::with::singleton_map")]
    pub model: ModelSource,
    pub data: DataConfig,
    /// `pretrain` (refiner + connector), `finetune` (+ LLM) or
    /// `{custom: [vision, refiner, connector, llm]}`.
    #[serde(with = "serde_yaml::with::singleton_map")]
    pub stage: Stage,
    /// Peak learning rate (paper: 1e-3 pre-training, 2e-5 fine-tuning).
    pub lr: f64,
    #[serde(default)]
    pub optimizer: AdamWConfig,
    /// LoRA on the LLM instead of training its weights, so a 7B model
    /// fine-tunes on one GPU: `{rank: 8, alpha: 16, target_modules:
    /// [q_proj, v_proj]}` (modules: q_proj, k_proj, v_proj, o_proj,
    /// gate_proj, up_proj, down_proj). Only with a stage that trains `llm`;
    /// its weights stay frozen and the adapters train. Checkpoints keep the
    /// adapters; the saved model has them merged in (a plain RGPT
    /// checkpoint). Absent: the LLM trains fully, as in the paper.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lora: Option<LoraConfig>,
    /// Share of the steps spent warming up (paper: 0.03).
    #[serde(default = "default_warmup")]
    pub warmup_ratio: f64,
    /// After warm-up: `cosine` decay to zero (the paper's) or `constant`.
    #[serde(default)]
    pub schedule: Schedule,
    /// Passes over the data (paper: 1); `steps` overrides it.
    #[serde(default = "default_epochs")]
    pub epochs: u64,
    #[serde(default)]
    pub steps: Option<u64>,
    /// Samples per optimiser step (paper: 256, then 128).
    pub global_batch: usize,
    /// Samples per forward pass; `global_batch` must be a multiple.
    pub micro_batch: usize,
    /// Clip gradients to this global L2 norm (0: off).
    #[serde(default = "default_clip")]
    pub grad_clip: f64,
    /// Weight of a second loss beside the answers' (0: off): how far each
    /// region's embedding is from the code of the name its sample gives it
    /// (`meta.region_names`; see `rgpt_model::rgpt::TrainingOutput::
    /// alignment`). A pre-trained CLIP hands RegionGPT features already aligned
    /// with words; a tower trained from nothing does not, and this aligns the
    /// connector's output with the codes a decoder learned in the text stages
    /// (docs/experiments/demo-journal.md, eleventh round). Every sample with an
    /// image and regions must then name them.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub align_regions: f64,
    #[serde(default)]
    pub seed: u64,
    /// `auto` (the first CUDA GPU when libtorch sees one, else the CPU),
    /// `cpu`, `cuda` or `cuda:N`.
    #[serde(default = "default_device")]
    pub device: String,
    /// `auto` (bf16 on a GPU, f32 on the CPU), `f32` or `bf16`. With bf16
    /// the weights and activations are bfloat16 (frozen parts stay in that
    /// inference dtype) and every trained variable keeps an f32 master copy
    /// beside f32 optimiser moments: mixed precision.
    #[serde(default)]
    pub dtype: TrainDtype,
    /// Save a checkpoint every N optimiser steps (and at the end).
    #[serde(default = "default_checkpoint_every")]
    pub checkpoint_every: u64,
    /// Where checkpoints, metrics and the final model go.
    pub output_dir: PathBuf,
    /// Worker threads of the data loader.
    #[serde(default = "default_workers")]
    pub loader_workers: usize,
    /// Held-out conversations scored every `every` steps and at the end:
    /// `{files: [val.jsonl], every: 100, max_samples: 256}`. The mean loss
    /// over their answer tokens goes into `metrics.jsonl` as
    /// `{"step": N, "eval": {"held_out_loss": x}}` (drawn by `rgpt plot`).
    /// Absent: no evaluation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval: Option<EvalConfig>,
    /// Recompute the vision tower's and the LLM's layers in the backward
    /// pass instead of keeping their activations (PyTorch's activation
    /// checkpointing): the same gradients for about one more forward pass
    /// of compute, and activations of one layer instead of all of them.
    /// Fine-tuning the 7B LLM at the paper's lengths needs it
    /// (docs/distributed.md).
    #[serde(default)]
    pub activation_checkpointing: bool,
    /// Data-parallel training over the processes a launcher started
    /// (`rgpt launch`, torchrun, srun): `{backend: auto, bucket_mb: 25,
    /// timeout_s: 1800, zero: 0}` or `{}` for those defaults. `micro_batch` is per
    /// process and `global_batch` is over all of them. Absent: one process
    /// (a launched run without it is refused, so ranks never write over
    /// each other). See docs/distributed.md.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distributed: Option<DistributedConfig>,
}

/// The `distributed` section of a config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DistributedConfig {
    /// `nccl`, `gloo` or `auto` (NCCL when CUDA is available).
    #[serde(default = "default_backend")]
    pub backend: String,
    /// Gradients are all-reduced in buckets of at most this many MiB.
    #[serde(default = "default_bucket_mb")]
    pub bucket_mb: f64,
    /// How long a collective (or the rendezvous) may wait for the other
    /// ranks before the run fails with an error naming it.
    #[serde(default = "default_timeout_s")]
    pub timeout_s: u64,
    /// ZeRO stage: 0 (every rank holds the whole optimiser state, as DDP)
    /// or 1 (the state is sharded across the ranks; see `zero.rs`).
    #[serde(default)]
    pub zero: u8,
}

fn default_backend() -> String {
    "auto".into()
}
fn default_bucket_mb() -> f64 {
    25.0
}
fn default_timeout_s() -> u64 {
    1800
}

impl Default for DistributedConfig {
    fn default() -> Self {
        DistributedConfig {
            backend: default_backend(),
            bucket_mb: default_bucket_mb(),
            timeout_s: default_timeout_s(),
            zero: 0,
        }
    }
}

/// Held-out loss during training (`eval` in the config).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalConfig {
    /// Conversation files (rgpt-data format); their images are found under
    /// `data.image_root`.
    pub files: Vec<PathBuf>,
    /// Score them every N optimiser steps.
    pub every: u64,
    /// Score only the first N samples of the files (all when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_samples: Option<usize>,
}

fn default_device() -> String {
    "auto".into()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrainDtype {
    #[default]
    Auto,
    F32,
    Bf16,
}

impl TrainDtype {
    /// The weights' kind on `device`.
    pub fn kind(self, device: Device) -> Kind {
        match (self, device) {
            (TrainDtype::F32, _) | (TrainDtype::Auto, Device::Cpu) => Kind::Float,
            _ => Kind::BFloat16,
        }
    }
}

/// Whether a weight is off (serde's `skip_serializing_if` for optional
/// weights, here and in the demo's stage configs).
pub fn is_zero(value: &f64) -> bool {
    *value == 0.0
}

fn default_warmup() -> f64 {
    0.03
}
fn default_epochs() -> u64 {
    1
}
fn default_clip() -> f64 {
    1.0
}
fn default_checkpoint_every() -> u64 {
    500
}
fn default_workers() -> usize {
    2
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "lowercase")]
pub enum ModelSource {
    /// An RGPT or LLaVA checkpoint directory.
    Pretrained(PathBuf),
    /// A small RGPT trained from nothing, with a tokenizer trained on the
    /// run's data (for machines without pretrained weights: the demo).
    Tiny(crate::scratch::TinySpec),
    /// A fresh RGPT from a CLIP/SigLIP directory and a LLaMA directory.
    Compose {
        vision: PathBuf,
        llm: PathBuf,
        /// Default `deconv`, the reference's refiner.
        #[serde(default)]
        refiner: rgpt_vision::refiner::RefinerKind,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// Conversation files (rgpt-data format) with sampling weights.
    pub files: Vec<DataFile>,
    /// Image paths are relative to this directory.
    pub image_root: PathBuf,
    /// Refuse to train on data with a sample that cannot be used (a missing
    /// image or mask file, placeholders that do not match the regions)
    /// instead of skipping it; the first is the error.
    #[serde(default)]
    pub strict: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataFile {
    pub path: PathBuf,
    #[serde(default = "default_weight")]
    pub weight: f64,
}

fn default_weight() -> f64 {
    1.0
}

impl TrainConfig {
    /// Reads and checks a YAML config; relative paths are taken from the
    /// config file's directory.
    pub fn from_file(path: &Path) -> Result<Self, TrainError> {
        let text = std::fs::read_to_string(path).map_err(|source| TrainError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let mut config: TrainConfig =
            serde_yaml::from_str(&text).map_err(|e| TrainError::Config {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
        let base = path.parent().unwrap_or(Path::new("."));
        config.resolve_paths(base);
        config.validate()?;
        Ok(config)
    }

    fn resolve_paths(&mut self, base: &Path) {
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        match &mut self.model {
            ModelSource::Tiny(_) => {}
            ModelSource::Pretrained(dir) => resolve(dir),
            ModelSource::Compose { vision, llm, .. } => {
                resolve(vision);
                resolve(llm);
            }
        }
        for file in &mut self.data.files {
            resolve(&mut file.path);
        }
        resolve(&mut self.data.image_root);
        resolve(&mut self.output_dir);
        if let Some(eval) = &mut self.eval {
            eval.files.iter_mut().for_each(resolve);
        }
    }

    /// The checks a run needs before it starts.
    pub fn validate(&self) -> Result<(), TrainError> {
        let invalid = |field, message: String| Err(TrainError::Invalid { field, message });
        if let ModelSource::Tiny(spec) = &self.model {
            spec.validate()?;
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return invalid("lr", format!("{} must be a positive number", self.lr));
        }
        if !(self.align_regions.is_finite() && self.align_regions >= 0.0) {
            return invalid(
                "align_regions",
                format!(
                    "{} must be 0 (off) or a positive weight",
                    self.align_regions
                ),
            );
        }
        if !(0.0..1.0).contains(&self.warmup_ratio) {
            return invalid(
                "warmup_ratio",
                format!("{} must be in [0, 1)", self.warmup_ratio),
            );
        }
        if self.micro_batch == 0 || self.global_batch == 0 {
            return invalid("micro_batch", "batch sizes must be at least 1".into());
        }
        if self.global_batch % self.micro_batch != 0 {
            return invalid(
                "global_batch",
                format!(
                    "{} is not a multiple of micro_batch {}",
                    self.global_batch, self.micro_batch
                ),
            );
        }
        if !(self.grad_clip.is_finite() && self.grad_clip >= 0.0) {
            return invalid(
                "grad_clip",
                format!("{} must be 0 (off) or a positive norm", self.grad_clip),
            );
        }
        if self.epochs == 0 {
            return invalid(
                "epochs",
                "0 passes over the data: give at least 1 (`steps`, when set, overrides it)".into(),
            );
        }
        if self.steps == Some(0) {
            return invalid("steps", "the run needs at least one step".into());
        }
        if let Some(dist) = &self.distributed {
            if let Err(e) = dist.backend.parse::<rgpt_dist::Backend>() {
                return invalid("distributed.backend", e.to_string());
            }
            if !(dist.bucket_mb.is_finite() && dist.bucket_mb > 0.0) {
                return invalid(
                    "distributed.bucket_mb",
                    format!("{} must be a positive size in MiB", dist.bucket_mb),
                );
            }
            if dist.zero > 1 {
                return invalid(
                    "distributed.zero",
                    format!("stage {} is not supported; use 0 or 1", dist.zero),
                );
            }
            if dist.timeout_s == 0 {
                return invalid("distributed.timeout_s", "must be at least 1 second".into());
            }
        }
        if self.data.files.is_empty() {
            return invalid("data.files", "list at least one conversation file".into());
        }
        for file in &self.data.files {
            if !file.path.is_file() {
                return invalid(
                    "data.files",
                    format!("{} does not exist", file.path.display()),
                );
            }
            if !(file.weight.is_finite() && file.weight >= 0.0) {
                return invalid(
                    "data.files",
                    format!(
                        "weight {} of {} must be >= 0",
                        file.weight,
                        file.path.display()
                    ),
                );
            }
        }
        self.device()?;
        if let Some(eval) = &self.eval {
            if eval.every == 0 {
                return invalid("eval.every", "evaluate every 1 or more steps".into());
            }
            if eval.files.is_empty() || eval.max_samples == Some(0) {
                return invalid("eval.files", "list at least one held-out sample".into());
            }
            if let Some(missing) = eval.files.iter().find(|f| !f.is_file()) {
                return invalid(
                    "eval.files",
                    format!("{} does not exist", missing.display()),
                );
            }
        }
        if let Some(lora) = &self.lora {
            let parts = self.stage.trainable();
            if !parts.contains(&Part::Llm) {
                let names: Vec<String> = parts
                    .iter()
                    .map(|p| format!("{p:?}").to_lowercase())
                    .collect();
                return invalid(
                    "lora",
                    format!(
                        "LoRA adapts the LLM, but the stage trains only [{}], not llm: use \
                         stage finetune (or add llm to a custom stage), or drop lora",
                        names.join(", ")
                    ),
                );
            }
            match lora.validate() {
                Ok(()) => {}
                Err(LlmError::Lora { field, message }) => {
                    let field = match field {
                        "rank" => "lora.rank",
                        "alpha" => "lora.alpha",
                        _ => "lora.target_modules",
                    };
                    return invalid(field, message);
                }
                Err(other) => return invalid("lora", other.to_string()),
            }
        }
        let dirs: Vec<&Path> = match &self.model {
            ModelSource::Tiny(_) => vec![],
            ModelSource::Pretrained(dir) => vec![dir],
            ModelSource::Compose { vision, llm, .. } => vec![vision, llm],
        };
        for dir in dirs {
            if !dir.join("config.json").is_file() {
                return invalid(
                    "model",
                    format!(
                        "{} is not a model directory (no config.json)",
                        dir.display()
                    ),
                );
            }
        }
        Ok(())
    }

    /// The device `device` names, checked against what libtorch sees.
    pub fn device(&self) -> Result<Device, TrainError> {
        let index = match self.device.as_str() {
            "auto" => return Ok(Device::cuda_if_available()),
            "cpu" => return Ok(Device::Cpu),
            "cuda" => 0,
            other => other
                .strip_prefix("cuda:")
                .and_then(|n| n.parse::<i64>().ok())
                .ok_or_else(|| TrainError::Invalid {
                    field: "device",
                    message: format!("`{other}`: use auto, cpu, cuda or cuda:N"),
                })?,
        };
        let gpus = Cuda::device_count();
        if index >= gpus {
            return Err(TrainError::Invalid {
                field: "device",
                message: format!(
                    "`{}`: libtorch sees {gpus} CUDA GPU(s); use device: cpu, or auto",
                    self.device
                ),
            });
        }
        Ok(Device::Cuda(index as usize))
    }

    /// Micro-batches per optimiser step.
    pub fn accumulation(&self) -> usize {
        self.global_batch / self.micro_batch
    }
}
