//! The assembled RegionGPT (paper Fig. 2): vision tower, refiner, mask pooling
//! and connector feeding the LLaMA-family decoder. It owns the splice that
//! replaces `<image>` with image tokens and each `<region>` placeholder with its
//! region embedding, and the checkpoint layout of a full RGPT model.

pub mod chat;
mod error;
pub mod llava;
pub mod loss;
pub mod prompt;
pub mod prompt_ids;
pub mod rgpt;
pub mod splice;

pub use error::ModelError;
