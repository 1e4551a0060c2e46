//! Training and evaluation data (paper Sec. 3.2): readers for the public
//! datasets as published (COCO, RefCOCOg, Visual Genome, V3Det, LLaVA,
//! POPE), builders that turn their annotations into region conversations
//! with task-guided prompts, a synthetic region world with known answers,
//! and the loader that tokenises, labels and batches samples for training.
//! Everything meets in one JSON-lines conversation format ([`format`](mod@format)).

pub mod builders;
mod error;
pub mod format;
pub mod loader;
pub mod prompts;
pub mod readers;
pub mod skips;
pub mod stats;
pub mod synth;

pub use error::DataError;
pub use format::{Region, Sample, Speaker, Turn};
pub use prompts::PromptBank;
pub use skips::Skips;
