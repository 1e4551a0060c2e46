//! Two-stage training (paper Sec. 4): pre-training of refiner and connector
//! with vision tower and LLM frozen, then fine-tuning that also trains the
//! LLM; loss on the answers only, cosine schedule with warm-up, resumable
//! checkpoints and metrics.

pub mod config;
pub mod data_parallel;
mod error;
pub mod freeze;
pub mod loader;
pub mod memory;
pub mod metrics;
pub mod optimizer;
pub mod plot;
pub mod run_dir;
pub mod schedule;
pub mod scratch;
pub mod step;
pub mod trainer;
pub mod zero;

pub use error::TrainError;
