//! Log-likelihood of candidate continuations after one prompt, for
//! closed-set answers (paper Table 3: a region's score for each of the 80
//! COCO names). The prompt runs once; its KV cache is copied to one row
//! per candidate and every candidate runs in a single right-padded batch,
//! so scoring 80 names costs one prefill and one short batched forward.
use tch::{Kind, Tensor};

use crate::{Llama, LlmError};

/// Sum of log-probabilities of each continuation's tokens after the
/// prompt `prefix_embeds` [1, seq, hidden].
pub fn score_continuations(
    model: &Llama,
    prefix_embeds: &Tensor,
    continuations: &[Vec<i64>],
) -> Result<Vec<f64>, LlmError> {
    let (batch, seq, _) = prefix_embeds.size3()?;
    if batch != 1 {
        return Err(LlmError::InvalidRequest(format!(
            "score_continuations takes one prompt, got a batch of {batch}; use \
             score_continuations_batch"
        )));
    }
    let mask = Tensor::ones([1, seq], (Kind::Bool, model.device()));
    let mut scores = score_continuations_batch(model, prefix_embeds, &mask, continuations)?;
    Ok(scores.pop().unwrap_or_default())
}

/// [`score_continuations`] for a left-padded batch of prompts
/// (`prefix_embeds` [batch, seq, hidden], `mask` [batch, seq]): one
/// prefill for all prompts, then every (prompt, candidate) pair in one
/// forward. Returns, per prompt, the score of each candidate.
pub fn score_continuations_batch(
    model: &Llama,
    prefix_embeds: &Tensor,
    prefix_mask: &Tensor,
    continuations: &[Vec<i64>],
) -> Result<Vec<Vec<f64>>, LlmError> {
    let _guard = tch::no_grad_guard();
    if continuations.is_empty() || continuations.iter().any(Vec::is_empty) {
        return Err(LlmError::InvalidRequest(
            "every candidate continuation needs at least one token".into(),
        ));
    }
    let (batch, prefix_len, _) = prefix_embeds.size3()?;
    let c = continuations.len() as i64;
    let longest = continuations.iter().map(Vec::len).max().unwrap_or(1) as i64;
    let max_positions = model.config().max_position_embeddings as i64;
    if prefix_len + longest > max_positions {
        return Err(LlmError::PromptTooLong {
            prompt_tokens: (prefix_len + longest) as usize,
            max_positions: max_positions as usize,
        });
    }
    let device = model.device();
    let mut cache = model.new_cache(batch, prefix_len + longest);
    let hidden = model.forward_embeds(prefix_embeds, Some(prefix_mask), &mut cache)?;
    // [batch, vocab]: the distribution of every candidate's first token.
    let first = model
        .logits(&hidden.select(1, -1))
        .log_softmax(-1, Kind::Float);
    let mut cache = cache.expand_batch(c)?;
    let mut ids = Vec::with_capacity((batch * c * longest) as usize);
    let mut mask = Vec::with_capacity((batch * c * longest) as usize);
    for _ in 0..batch {
        for cand in continuations {
            let pad = longest as usize - cand.len();
            ids.extend(cand.iter().copied().chain(std::iter::repeat_n(0, pad)));
            mask.extend(
                std::iter::repeat_n(true, cand.len()).chain(std::iter::repeat_n(false, pad)),
            );
        }
    }
    let rows = batch * c;
    let ids = Tensor::from_slice(&ids)
        .view([rows, longest])
        .to_device(device);
    let mask = Tensor::from_slice(&mask)
        .view([rows, longest])
        .to_device(device);
    let first_ids = ids.select(1, 0).view([batch, c]);
    let mut scores = first.gather(1, &first_ids, false).to_kind(Kind::Double);
    if longest > 1 {
        // Right padding: real tokens never attend to the padding after them.
        let hidden = model.forward_embeds(&model.embed(&ids), Some(&mask), &mut cache)?;
        // Position j predicts token j + 1 of the same candidate.
        let log_probs = model
            .logits(&hidden.narrow(1, 0, longest - 1))
            .log_softmax(-1, Kind::Float);
        let targets = ids.narrow(1, 1, longest - 1);
        let picked = log_probs
            .gather(2, &targets.unsqueeze(-1), false)
            .squeeze_dim(-1);
        let counted = mask.narrow(1, 1, longest - 1).to_kind(Kind::Float);
        let rest = (picked * counted)
            .sum_dim_intlist(1, false, Kind::Double)
            .view([batch, c]);
        scores += rest;
    }
    let flat: Vec<f64> = Vec::try_from(scores.view([-1]))?;
    Ok(flat.chunks(c as usize).map(<[f64]>::to_vec).collect())
}
