//! Builders (paper Sec. 3.2, "Data Processing"): each turns one published
//! dataset into region conversations in the [`crate::format`] layout,
//! deterministic under a seed, with instructions drawn from the prompt bank
//! and every record it leaves out counted in [`Skips`].
pub mod classification;
pub mod llava;
pub mod mix;
pub mod refcocog;
pub mod vg;

use std::path::Path;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::{DataError, Sample, Skips};

/// What a builder produced and what it left out.
#[derive(Debug, Clone, Default)]
pub struct Built {
    pub samples: Vec<Sample>,
    pub skips: Skips,
}

impl Built {
    /// Writes the samples to `out` atomically and gives their count. A
    /// build that kept nothing is an error naming why each record was left
    /// out, and `out` is not touched.
    pub fn write(&self, out: &Path) -> Result<u64, DataError> {
        if self.samples.is_empty() {
            return Err(DataError::NothingBuilt {
                out: out.to_path_buf(),
                skips: self.skips.to_string(),
            });
        }
        crate::format::write_samples(out, &self.samples)
    }

    /// Every sample's image path with `prefix` before it (`coco/train2017/`
    /// and `000000000139.jpg` give `coco/train2017/000000000139.jpg`), so
    /// the files of several datasets can share one image root.
    pub fn with_image_prefix(mut self, prefix: &str) -> Self {
        if !prefix.is_empty() {
            for sample in &mut self.samples {
                if let Some(image) = &mut sample.image {
                    image.insert_str(0, prefix);
                }
            }
        }
        self
    }
}

/// Which geometry of an annotation becomes the region.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RegionKind {
    /// The annotation's box.
    #[default]
    Box,
    /// Its polygons or RLE (any-shape regions, as the paper's REC uses).
    Mask,
}

impl std::str::FromStr for RegionKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "box" => Ok(RegionKind::Box),
            "mask" => Ok(RegionKind::Mask),
            other => Err(format!("unknown region kind `{other}`: use box or mask")),
        }
    }
}

/// The one RNG of the builders: ChaCha8, whose stream is fixed across
/// platforms and `rand` versions, so a seed always gives the same data.
pub fn seeded_rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// The first question of a conversation: the image placeholder, the
/// question, and the task-guided prompt when the task has one.
pub(crate) fn first_question(question: &str, guide: Option<&str>) -> String {
    match guide {
        Some(guide) => format!("{}\n{question} {guide}", crate::format::IMAGE_TOKEN),
        None => format!("{}\n{question}", crate::format::IMAGE_TOKEN),
    }
}
