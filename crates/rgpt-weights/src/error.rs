use std::path::PathBuf;

/// Everything that can go wrong between a checkpoint on disk and a filled VarStore.
#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "no weights found in {dir}: expected model.safetensors, model.safetensors.index.json, \
         pytorch_model.bin or pytorch_model.bin.index.json"
    )]
    NoWeights { dir: PathBuf },
    #[error(
        "invalid safetensors file {path}: {message} (the file may be truncated; download it again)"
    )]
    Safetensors { path: PathBuf, message: String },
    #[error("invalid PyTorch checkpoint {path}: {message} (the file may be truncated; download it again)")]
    TorchBin { path: PathBuf, message: String },
    #[error(
        "{path} is in the legacy (pre-1.6, non-zip) torch.save format, which is not supported: \
         re-save it with a current torch (`torch.save(torch.load(f), f)`) or convert it to safetensors"
    )]
    LegacyTorchBin { path: PathBuf },
    #[error("cannot parse {path}: {message}")]
    Json { path: PathBuf, message: String },
    #[error("invalid shard index {path}: {message}")]
    Index { path: PathBuf, message: String },
    #[error(
        "two tensors of {checkpoint} map to `{name}` (one of them `{source_name}`): the \
         checkpoint mixes layouts"
    )]
    NameClash {
        checkpoint: PathBuf,
        name: String,
        source_name: String,
    },
    #[error("tensor `{name}` is missing from the checkpoint {checkpoint}")]
    MissingTensor { name: String, checkpoint: PathBuf },
    #[error(
        "tensor `{name}` has shape {found:?} in the checkpoint but the model expects {expected:?}"
    )]
    TensorShape {
        name: String,
        expected: Vec<i64>,
        found: Vec<i64>,
    },
    #[error("tensor `{name}` has dtype {dtype}, which is not supported")]
    UnsupportedDtype { name: String, dtype: String },
    #[error("torch error while loading `{name}`: {source}")]
    Torch {
        name: String,
        #[source]
        source: tch::TchError,
    },
}
