use std::path::PathBuf;

/// Errors of the assembled model, wrapping those of its parts.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid config {path}: {message}")]
    Config { path: PathBuf, message: String },
    #[error(transparent)]
    Weights(#[from] rgpt_weights::WeightsError),
    #[error(transparent)]
    Llm(#[from] rgpt_llm::LlmError),
    #[error(transparent)]
    Vision(#[from] rgpt_vision::error::VisionError),
    #[error(transparent)]
    Splice(#[from] crate::splice::SpliceError),
    #[error("region {index}: {source}")]
    Region {
        index: usize,
        #[source]
        source: rgpt_region::RegionError,
    },
    #[error(transparent)]
    Pool(#[from] rgpt_region::RegionError),
    #[error(transparent)]
    Refiner(#[from] rgpt_vision::refiner::RefinerError),
    #[error(transparent)]
    Preprocess(#[from] rgpt_vision::preprocess::PreprocessError),
    #[error(
        "the prompt has {regions} regions but the model numbers only {numbered} \
         (`rgpt.region_index_tokens`): ask about {numbered} regions or fewer at once"
    )]
    TooManyRegions { regions: usize, numbered: usize },
    #[error("torch error: {0}")]
    Torch(#[from] tch::TchError),
}
