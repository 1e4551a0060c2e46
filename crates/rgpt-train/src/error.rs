use std::path::PathBuf;

/// Errors of training; each names the config field, file or step at fault.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("config {path}: {message}")]
    Config { path: PathBuf, message: String },
    #[error("invalid config: {field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    #[error("cannot read {path}: {source}")]
    Io {
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
    #[error("step {step}: the loss is {loss}; the run stops and keeps its last good checkpoint")]
    NonFiniteLoss { step: u64, loss: f64 },
    #[error(
        "interrupted after step {step}; the checkpoint in {} holds every step so far: \
         resume the run to go on",
        .checkpoint.display()
    )]
    Interrupted { step: u64, checkpoint: PathBuf },
    #[error("checkpoint {path}: {message}")]
    Checkpoint { path: PathBuf, message: String },
    #[error("{path}, line {line}: {message}")]
    Metrics {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("cannot draw {path}: {message}")]
    Plot { path: PathBuf, message: String },
    #[error(transparent)]
    Model(#[from] rgpt_model::ModelError),
    #[error(transparent)]
    Data(#[from] rgpt_data::DataError),
    #[error(transparent)]
    Weights(#[from] rgpt_weights::WeightsError),
    #[error("distributed: {0}")]
    Dist(#[from] rgpt_dist::DistError),
    #[error("torch error: {0}")]
    Torch(#[from] tch::TchError),
}
