use std::path::PathBuf;

/// Errors of the vision crate; each names the file, tensor or argument at
/// fault.
#[derive(Debug, thiserror::Error)]
pub enum VisionError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid config {path}: {message}")]
    Config { path: PathBuf, message: String },
    #[error(
        "unsupported architecture `{found}` in {path}: expected a CLIP (model_type \"clip\" or \
         \"clip_vision_model\") or SigLIP (\"siglip\" or \"siglip_vision_model\") vision tower"
    )]
    UnsupportedArchitecture { path: PathBuf, found: String },
    #[error(transparent)]
    Weights(#[from] rgpt_weights::WeightsError),
    #[error("invalid input: {0}")]
    InvalidInput(String),
    #[error("torch error: {0}")]
    Torch(#[from] tch::TchError),
}
