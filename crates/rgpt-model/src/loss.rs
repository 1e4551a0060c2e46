//! The training loss (paper Sec. 4): next-token cross-entropy on the
//! assistant's answers only, as transformers' `ForCausalLMLoss`
//! (`loss/loss_utils.py`): logits at position t predict the label at t + 1,
//! positions labelled [`IGNORE_INDEX`] are skipped, and the mean runs over
//! the counted tokens.
use tch::{Kind, Reduction, Tensor};

use crate::splice::IGNORE_INDEX;

/// `logits` [batch, seq, vocab], `labels` [batch, seq] -> scalar f32 loss.
/// A batch without a single counted token gives 0 (not NaN), so an
/// all-instruction sample cannot poison a run.
pub fn causal_lm_loss(logits: &Tensor, labels: &Tensor) -> Tensor {
    let (batch, seq, vocab) = logits.size3().expect("logits are [batch, seq, vocab]");
    let shifted_logits = logits
        .narrow(1, 0, seq - 1)
        .reshape([batch * (seq - 1), vocab]);
    let shifted_labels = labels.narrow(1, 1, seq - 1).reshape([batch * (seq - 1)]);
    let counted = shifted_labels.ne(IGNORE_INDEX).sum(Kind::Float);
    let total = shifted_logits
        .to_kind(Kind::Float)
        .cross_entropy_loss::<Tensor>(&shifted_labels, None, Reduction::Sum, IGNORE_INDEX, 0.0);
    total / counted.clamp_min(1.0)
}
