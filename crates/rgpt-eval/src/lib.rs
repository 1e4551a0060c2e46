#![doc = include_str!("../README.md")]

// The metrics and the scoring of answers: no libtorch, no model crate.
pub mod caption;
pub mod coco_ap;
mod error;
pub mod pope;
pub mod predictions;
pub mod rec;
pub mod results;
pub mod task;

pub use error::EvalError;
pub use task::TaskKind;

// The task runners: a model answers a task file's questions (feature
// `runner`, on by default). A new runner module goes here, with the same
// `cfg`.
#[cfg(feature = "runner")]
pub mod evaluate;
#[cfg(feature = "runner")]
pub mod items;
#[cfg(feature = "runner")]
pub mod runner;
#[cfg(feature = "runner")]
pub use evaluate::{evaluate_task, TaskOptions, TaskResults};
