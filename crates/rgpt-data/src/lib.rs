//! Training and evaluation data (paper Sec. 3.2): readers for the public
//! datasets as published (COCO, RefCOCOg, Visual Genome, V3Det, LLaVA,
//! POPE), builders that turn their annotations into region conversations
//! with task-guided prompts, and a synthetic region world with known
//! answers. Turning samples into model inputs (tokenising, labelling,
//! batching) is the trainer's (`rgpt_train::loader`).
//! Everything meets in one JSON-lines conversation format ([`format`](mod@format)).

pub mod builders;
mod error;
pub mod format;
pub mod prompts;
pub mod readers;
pub mod recap;
pub mod skips;
pub mod stats;
pub mod synth;

pub use error::DataError;
pub use format::{Region, Sample, Speaker, Turn};
pub use prompts::PromptBank;
pub use skips::Skips;
