//! `rgpt bench`: how fast this machine runs RegionGPT's hot paths, each
//! against the memory-traffic bound measured in the same run.
//!
//! - [`bandwidth`]: the bound's denominator, a large copy (device to
//!   device on a GPU, a memcpy on the CPU).
//! - [`decode`]: batch decode steps of a LLaMA decoder after a prompt, with
//!   the bytes a step must read (every weight once, and the KV cache), and
//!   prefill throughput.
//! - [`mask_pool`]: mask pooling over a refined feature map.
//! - [`e2e`]: an RGPT answering about a 336 px image and three regions:
//!   time to the first token and decode tokens per second.
//!
//! Models come from a checkpoint or from a named shape with random
//! weights ([`spec`]), so a check needs no weights. Timings are medians of
//! repeated runs after a warm-up, with device synchronisation around each.
pub mod bandwidth;
pub mod decode;
pub mod e2e;
pub mod mask_pool;
pub mod spec;

mod timing;

pub use spec::ModelSpec;

/// What can stop a benchmark.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Torch(#[from] tch::TchError),
    #[error(transparent)]
    Llm(#[from] rgpt_llm::LlmError),
    #[error(transparent)]
    Region(#[from] rgpt_region::RegionError),
    #[error(transparent)]
    Model(#[from] rgpt_model::ModelError),
    #[error("{0}")]
    Invalid(String),
}
