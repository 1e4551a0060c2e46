//! Extensions of RegionGPT in this project, not in the paper, that a tiny
//! decoder trained from nothing needs (docs/experiments/demo-journal.md):
//! - region numbers: each region of a prompt carries the word embedding of
//!   its number (`rgpt.region_index_tokens`, `rgpt.region_index_scale`);
//! - regions given by name: without an image, a region is read as the mean
//!   of its name's word embeddings (a text stage teaches the lookup);
//! - region alignment: how far a pooled region's embedding is from its
//!   name's, a training target.
//!
//! Every one is off unless a checkpoint or a training example asks for it.
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use super::{RegionGpt, TrainingExample};
use crate::ModelError;

/// This project's extensions of the `rgpt` section, for decoders trained
/// from nothing (`rgpt demo`); none is in the paper, and each is off by
/// default, so a paper model reads as the paper's path alone.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct RgptExtensions {
    /// Token ids whose word embeddings are added to a prompt's 1st, 2nd, ...
    /// region, so that each region carries its number as the REC answers write
    /// it (`Region [k]`). Empty, as in the paper's model: a region is its
    /// pooled feature alone. Vicuna finds the k-th region by counting; for a
    /// decoder trained from nothing, the number inside the region is a shortcut
    /// (docs/experiments/demo-journal.md, eighth round).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub region_index_tokens: Vec<i64>,
    /// How large a region's number is beside the region.
    #[serde(default, skip_serializing_if = "RegionIndexScale::is_default")]
    pub region_index_scale: RegionIndexScale,
}

/// The scale of the number embedding added to each region
/// (`rgpt.region_index_scale`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RegionIndexScale {
    /// The word embedding as it is.
    #[default]
    Embedding,
    /// The word embedding rescaled to the region embedding's own norm: a
    /// connector's output can grow several times larger than a word embedding
    /// and drown the number in it (docs/experiments/demo-journal.md, tenth
    /// round).
    Region,
}

impl RegionIndexScale {
    pub(super) fn is_default(&self) -> bool {
        *self == RegionIndexScale::Embedding
    }
}

impl RegionGpt {
    /// How many regions one prompt may hold: the count of
    /// `rgpt.region_index_tokens` for a numbered checkpoint, else no limit.
    pub fn max_regions(&self) -> Option<usize> {
        let numbers = &self.section.extensions.region_index_tokens;
        (!numbers.is_empty()).then_some(numbers.len())
    }

    /// One prompt's region embeddings [regions, hidden], in order, each
    /// plus the word embedding of its number's token
    /// (`rgpt.region_index_tokens`; unchanged when that is empty).
    pub(super) fn number_regions(&self, regions: Tensor) -> Result<Tensor, ModelError> {
        let numbers = &self.section.extensions.region_index_tokens;
        let count = regions.size()[0] as usize;
        if numbers.is_empty() || count == 0 {
            return Ok(regions);
        }
        if count > numbers.len() {
            return Err(ModelError::TooManyRegions {
                regions: count,
                numbered: numbers.len(),
            });
        }
        let ids = Tensor::from_slice(&numbers[..count]).to_device(regions.device());
        let marks = self.llava.llm.embed(&ids).f_to_kind(regions.kind())?;
        let marks = match self.section.extensions.region_index_scale {
            RegionIndexScale::Embedding => marks,
            RegionIndexScale::Region => {
                let norm = |t: &Tensor| t.f_norm_scalaropt_dim(2.0, [1i64].as_slice(), true);
                marks.f_mul(&norm(&regions)?.f_div(&norm(&marks)?.f_clamp_min(1e-12)?)?)?
            }
        };
        Ok(regions.f_add(&marks)?)
    }

    /// [regions, hidden]: each region given by name as the mean of its
    /// name's word embeddings.
    pub(super) fn named_regions(&self, names: &[Vec<i64>]) -> Result<Tensor, ModelError> {
        let device = self.llava.llm.device();
        let means = names
            .iter()
            .map(|ids| {
                let ids = Tensor::from_slice(ids).to_device(device);
                self.llava
                    .llm
                    .embed(&ids)
                    .f_mean_dim(&[0i64][..], false, None)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Tensor::f_stack(&means, 0)?)
    }

    /// [`TrainingOutput::alignment`] of `regions`, the connector's output
    /// for the regions of `examples` in order.
    pub(super) fn region_alignment(
        &self,
        regions: &Tensor,
        examples: &[&TrainingExample<'_>],
    ) -> Result<Option<(Tensor, i64)>, ModelError> {
        let mut rows = Vec::new();
        let mut names: Vec<Vec<i64>> = Vec::new();
        let mut start = 0i64;
        for example in examples {
            let count = example.regions.len();
            if !example.region_targets.is_empty() {
                if example.region_targets.len() != count {
                    return Err(rgpt_llm::LlmError::InvalidRequest(format!(
                        "{} region targets for {count} regions; give one per region or none",
                        example.region_targets.len()
                    ))
                    .into());
                }
                rows.extend(start..start + count as i64);
                names.extend_from_slice(example.region_targets);
            }
            start += count as i64;
        }
        if rows.is_empty() {
            return Ok(None);
        }
        let index = Tensor::from_slice(&rows).to_device(regions.device());
        let predicted = regions.f_index_select(0, &index)?;
        let codes = self
            .named_regions(&names)?
            .detach()
            .f_to_kind(predicted.kind())?;
        let squared_norm = |t: &Tensor| t.f_square()?.f_sum_dim_intlist(&[1i64][..], false, None);
        let distance = squared_norm(&predicted.f_sub(&codes)?)?
            .f_div(&squared_norm(&codes)?.f_clamp_min(1e-12)?)?
            .f_mean(Kind::Float)?;
        Ok(Some((distance, rows.len() as i64)))
    }
}
