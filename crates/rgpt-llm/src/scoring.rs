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
    let _guard = tch::no_grad_guard();
    if continuations.is_empty() || continuations.iter().any(Vec::is_empty) {
        return Err(LlmError::InvalidRequest(
            "every candidate continuation needs at least one token".into(),
        ));
    }
    let (batch, prefix_len, _) = prefix_embeds.size3()?;
    if batch != 1 {
        return Err(LlmError::InvalidRequest(format!(
            "scoring takes one prompt at a time, got a batch of {batch}"
        )));
    }
    let n = continuations.len() as i64;
    let longest = continuations.iter().map(Vec::len).max().unwrap_or(1) as i64;
    let max_positions = model.config().max_position_embeddings as i64;
    if prefix_len + longest > max_positions {
        return Err(LlmError::PromptTooLong {
            prompt_tokens: (prefix_len + longest) as usize,
            max_positions: max_positions as usize,
        });
    }
    let device = model.device();
    let mut cache = model.new_cache(1, prefix_len + longest);
    let hidden = model.forward_embeds(prefix_embeds, None, &mut cache)?;
    // [vocab]: the distribution of every candidate's first token.
    let first = model
        .logits(&hidden.select(1, -1))
        .log_softmax(-1, Kind::Float)
        .get(0);
    let mut cache = cache.expand_batch(n)?;
    let mut ids = Vec::with_capacity((n * longest) as usize);
    let mut mask = Vec::with_capacity((n * longest) as usize);
    for c in continuations {
        ids.extend(
            c.iter()
                .copied()
                .chain(std::iter::repeat_n(0, longest as usize - c.len())),
        );
        mask.extend(
            std::iter::repeat_n(true, c.len())
                .chain(std::iter::repeat_n(false, longest as usize - c.len())),
        );
    }
    let ids = Tensor::from_slice(&ids)
        .view([n, longest])
        .to_device(device);
    let mask = Tensor::from_slice(&mask)
        .view([n, longest])
        .to_device(device);
    // Right padding: real tokens never attend to the padding after them.
    let hidden = model.forward_embeds(&model.embed(&ids), Some(&mask), &mut cache)?;
    // Position j predicts token j + 1 of the same candidate.
    let log_probs = model.logits(&hidden).log_softmax(-1, Kind::Float);
    let first_scores: Vec<f64> = {
        let index = Tensor::from_slice(&continuations.iter().map(|c| c[0]).collect::<Vec<_>>())
            .to_device(device);
        Vec::try_from(first.index_select(0, &index).to_kind(Kind::Double))?
    };
    let mut scores = first_scores;
    if longest > 1 {
        let targets = ids.narrow(1, 1, longest - 1);
        let picked = log_probs
            .narrow(1, 0, longest - 1)
            .gather(2, &targets.unsqueeze(-1), false)
            .squeeze_dim(-1);
        let counted = mask.narrow(1, 1, longest - 1).to_kind(Kind::Float);
        let rest: Vec<f64> =
            Vec::try_from((picked * counted).sum_dim_intlist(1, false, Kind::Double))?;
        for (score, rest) in scores.iter_mut().zip(rest) {
            *score += rest;
        }
    }
    Ok(scores)
}
