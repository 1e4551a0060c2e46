//! One optimiser step's worth of gradients from several micro-batches
//! (gradient accumulation). Each micro-batch's mean loss is weighted by
//! its share of the step's answer tokens, so the accumulated gradient is
//! exactly that of the whole batch in one forward: the loss is a mean over
//! answer tokens, not over samples.
use rgpt_model::rgpt::{RegionGpt, TrainingExample};
use rgpt_model::splice::Segment;

use crate::TrainError;

/// Answer tokens the loss counts in one example.
pub fn target_tokens(example: &TrainingExample<'_>) -> usize {
    example
        .segments
        .iter()
        .enumerate()
        .map(|(i, s)| match s {
            // A target at the very first position has nothing before it.
            Segment::Text { ids, target: true } => ids.len() - usize::from(i == 0),
            _ => 0,
        })
        .sum()
}

/// Regions in one example whose embedding has a name to align with.
fn aligned_regions(example: &TrainingExample<'_>) -> usize {
    if example.image.is_some() {
        example.region_targets.len()
    } else {
        0
    }
}

/// `examples` without their regions' names, so a forward pass whose
/// alignment is not used does not measure it (the model measures it
/// whenever names are given, building its graph for nothing).
pub fn without_region_targets<'a>(examples: &[TrainingExample<'a>]) -> Vec<TrainingExample<'a>> {
    examples
        .iter()
        .map(|e| TrainingExample {
            region_targets: &[],
            ..*e
        })
        .collect()
}

/// What a step's forward passes measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepLoss {
    /// Mean loss over the step's answer tokens.
    pub loss: f64,
    pub target_tokens: usize,
    /// Mean alignment over the step's named regions (see
    /// `TrainConfig::align_regions`), when it was trained.
    pub alignment: Option<f64>,
}

/// What a step's losses are means over: its answer tokens and its named
/// regions, on every rank of a data-parallel run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepTotals {
    pub target_tokens: usize,
    pub aligned_regions: usize,
}

impl StepTotals {
    /// The totals of these micro-batches alone (one process).
    pub fn of(micro_batches: &[Vec<TrainingExample<'_>>]) -> Self {
        StepTotals {
            target_tokens: micro_batches.iter().flatten().map(target_tokens).sum(),
            aligned_regions: micro_batches.iter().flatten().map(aligned_regions).sum(),
        }
    }
}

/// Runs forward and backward over `micro_batches`, adding to the
/// variables' gradients: of the answers' loss, plus `align_weight` times
/// the regions' alignment (when above 0). Both are means over the whole
/// step (answer tokens, named regions), whatever the micro-batches.
pub fn accumulate_gradients(
    model: &RegionGpt,
    micro_batches: &[Vec<TrainingExample<'_>>],
    align_weight: f64,
) -> Result<StepLoss, TrainError> {
    let totals = StepTotals::of(micro_batches);
    accumulate_share(model, micro_batches, align_weight, totals)
}

/// [`accumulate_gradients`] for one rank's share of a step whose `totals`
/// count every rank's micro-batches: each loss is weighted by its share of
/// those, so the gradients summed over the ranks are the step's, and so
/// are the losses returned (summed over the ranks).
pub fn accumulate_share(
    model: &RegionGpt,
    micro_batches: &[Vec<TrainingExample<'_>>],
    align_weight: f64,
    totals: StepTotals,
) -> Result<StepLoss, TrainError> {
    let total = totals.target_tokens;
    let total_aligned = totals.aligned_regions;
    let mut loss = 0.0;
    let mut alignment = None;
    for batch in micro_batches.iter().filter(|b| !b.is_empty()) {
        let forward = tracing::debug_span!("forward", examples = batch.len()).entered();
        let out = if align_weight > 0.0 {
            model.forward_train(batch)?
        } else {
            model.forward_train(&without_region_targets(batch))?
        };
        drop(forward);
        let share = out.target_tokens as f64 / total.max(1) as f64;
        let mut objective = &out.loss * share;
        if let Some((distance, regions)) = &out.alignment {
            let region_share = *regions as f64 / total_aligned.max(1) as f64;
            objective += distance * (align_weight * region_share);
            *alignment.get_or_insert(0.0) += f64::try_from(distance)? * region_share;
        }
        tracing::debug_span!("backward").in_scope(|| objective.backward());
        loss += f64::try_from(&out.loss)? * share;
    }
    Ok(StepLoss {
        loss,
        target_tokens: total,
        alignment,
    })
}
