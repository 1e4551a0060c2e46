//! Errors of the demo; each names the config field or file at fault.
use std::path::PathBuf;

/// What can stop a demo run.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("invalid config: {field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config {path}: {message}")]
    Config { path: PathBuf, message: String },
    #[error("{path}: {message}")]
    Json { path: PathBuf, message: String },
    #[error("cannot draw {path}: {message}")]
    Picture { path: PathBuf, message: String },
    #[error(transparent)]
    Train(#[from] rgpt_train::TrainError),
    #[error(transparent)]
    Eval(#[from] rgpt_eval::EvalError),
    #[error(transparent)]
    Model(#[from] rgpt_model::ModelError),
    #[error(transparent)]
    Data(#[from] rgpt_data::DataError),
    #[error(transparent)]
    Weights(#[from] rgpt_weights::WeightsError),
    #[error("torch error: {0}")]
    Torch(#[from] tch::TchError),
}
