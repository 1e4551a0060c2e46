//! The synthetic region world (`rgpt data synth`): small images of a few
//! coloured shapes (circle, square, triangle, star, cross, diamond) in
//! several colours and sizes, some overlapping, on low-contrast textured
//! backgrounds, with exact masks of what each shape shows. Every task of
//! the paper's Sec. 3.2 is generated from that ground truth: shape and
//! colour classification, detailed region captions (colour, size, position,
//! relation to the nearest shape), referring expressions with `Region [x]`
//! answers and no-match negatives, and image captions. Each image depends
//! only on the seed and its index. This world is what tests and the demo
//! train and evaluate on; its answers are checked against its geometry in
//! `tests/synth.rs`.
//!
//! - [`vocab`] holds shapes, colours and size classes;
//! - [`config`] holds [`SynthConfig`];
//! - [`outline`], `background` and [`scene`] draw an image and its masks;
//! - [`describe`] says positions, relations, referring expressions, captions;
//! - [`tasks`] builds the conversations, [`text`] their text form;
//! - [`write`](mod@write) puts images and JSON lines on disk.

mod background;
pub mod config;
pub mod describe;
pub mod outline;
pub mod pope;
mod rng;
pub mod scene;
pub mod tasks;
pub mod text;
pub mod vocab;
pub mod write;

use std::path::Path;

pub use config::SynthConfig;
pub use describe::{Expression, Position, Relation};
pub use outline::Outline;
pub use scene::{SynthImage, SynthObject};
pub use tasks::{
    samples_for_image, ImageCaptionMeta, RecMeta, RegionQuestionMeta, SynthSamples, TASKS,
};
pub use vocab::{ColorName, ShapeKind, SizeClass};
pub use write::{ImageObjects, SynthSummary};

use crate::prompts::PromptBank;
use crate::DataError;

/// A synthetic world: a checked [`SynthConfig`].
#[derive(Debug, Clone, PartialEq)]
pub struct SynthWorld {
    config: SynthConfig,
}

impl SynthWorld {
    /// Checks the config.
    pub fn new(config: SynthConfig) -> Result<Self, DataError> {
        config.validate()?;
        Ok(SynthWorld { config })
    }

    pub fn config(&self) -> &SynthConfig {
        &self.config
    }

    /// Image `index`, which depends only on the config and `index`.
    pub fn generate_image(&self, index: u64) -> SynthImage {
        scene::generate(&self.config, index)
    }

    /// Every task's samples for an image of this world.
    pub fn samples(
        &self,
        image: &SynthImage,
        prompts: &PromptBank,
    ) -> Result<SynthSamples, DataError> {
        samples_for_image(image, &self.config, prompts)
    }
}

/// Renders the world `config` describes under `out_dir` (see
/// [`SynthWorld::write`]).
pub fn write_world(
    config: &SynthConfig,
    prompts: &PromptBank,
    out_dir: &Path,
) -> Result<SynthSummary, DataError> {
    SynthWorld::new(config.clone())?.write(prompts, out_dir)
}
