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
    // Logits are hidden states whose LM head is the identity.
    causal_lm_loss_from_hidden(logits, labels, Tensor::shallow_clone).0
}

/// [`causal_lm_loss`] from the final hidden states [batch, seq, hidden],
/// with the LM head (`lm_head`: hidden rows -> logits rows) run only on the
/// positions whose next label is counted; also how many tokens it averaged
/// over. The loss and its gradients are the same; the work is not: answers
/// are a small part of a training sequence (the prompt, the image tokens),
/// and transformers' full [batch, seq, vocab] logits, their log-softmax and
/// its backward are most of a small model's step.
pub fn causal_lm_loss_from_hidden(
    hidden: &Tensor,
    labels: &Tensor,
    lm_head: impl FnOnce(&Tensor) -> Tensor,
) -> (Tensor, i64) {
    let (batch, seq, width) = hidden
        .size3()
        .expect("hidden states are [batch, seq, hidden]");
    // The label each position predicts, IGNORE_INDEX after the last one:
    // transformers' padded shift, which keeps `hidden` a free view below.
    let next = Tensor::cat(
        &[
            labels.narrow(1, 1, seq - 1),
            labels.narrow(1, 0, 1).full_like(IGNORE_INDEX),
        ],
        1,
    )
    .reshape([batch * seq]);
    let rows = next.ne(IGNORE_INDEX).nonzero().squeeze_dim(1);
    let counted = rows.size()[0];
    let targets = next.index_select(0, &rows);
    let logits = lm_head(&hidden.reshape([batch * seq, width]).index_select(0, &rows));
    let total = logits.to_kind(Kind::Float).cross_entropy_loss::<Tensor>(
        &targets,
        None,
        Reduction::Sum,
        IGNORE_INDEX,
        0.0,
    );
    (total / counted.max(1) as f64, counted)
}
