//! ROUGE-L as pycocoevalcap 1.2's `rouge/rouge.py` computes it: the longest
//! common subsequence against each reference, the best precision and the
//! best recall taken separately over the references, combined as an
//! F-measure with beta 1.2; the corpus score is the mean over images.
//! Captions are split on single spaces (`str.split(" ")`), as there.

use std::collections::BTreeMap;

use super::{validate, Candidates, MetricScores, References};
use crate::error::EvalError;

/// ROUGE-L on tokenized captions.
pub struct RougeL;

impl RougeL {
    /// Weight of recall against precision (`self.beta` in rouge.py).
    pub const BETA: f64 = 1.2;

    /// Mean ROUGE-L and each image's, like `Rouge().compute_score`.
    pub fn compute(refs: &References, cands: &Candidates) -> Result<MetricScores<f64>, EvalError> {
        validate(refs, cands)?;
        let per_image: BTreeMap<String, f64> = cands
            .iter()
            .map(|(id, cand)| (id.clone(), RougeL::sentence(cand, &refs[id])))
            .collect();
        let corpus = per_image.values().sum::<f64>() / per_image.len() as f64;
        Ok(MetricScores { corpus, per_image })
    }

    /// One candidate against its references (`Rouge.calc_score`).
    pub fn sentence(candidate: &str, refs: &[String]) -> f64 {
        let cand: Vec<&str> = candidate.split(' ').collect();
        let mut best_precision = 0.0f64;
        let mut best_recall = 0.0f64;
        for reference in refs {
            let r: Vec<&str> = reference.split(' ').collect();
            let lcs = lcs_len(&r, &cand) as f64;
            best_precision = best_precision.max(lcs / cand.len() as f64);
            best_recall = best_recall.max(lcs / r.len() as f64);
        }
        if best_precision != 0.0 && best_recall != 0.0 {
            let b2 = Self::BETA.powi(2);
            ((1.0 + b2) * best_precision * best_recall) / (best_recall + b2 * best_precision)
        } else {
            0.0
        }
    }
}

/// `RougeL::compute` under the name the metric goes by.
pub fn rouge_l(refs: &References, cands: &Candidates) -> Result<MetricScores<f64>, EvalError> {
    RougeL::compute(refs, cands)
}

/// Length of the longest common subsequence of two token lists.
fn lcs_len(a: &[&str], b: &[&str]) -> usize {
    let mut prev = vec![0usize; b.len() + 1];
    let mut row = vec![0usize; b.len() + 1];
    for x in a {
        for (j, y) in b.iter().enumerate() {
            row[j + 1] = if x == y {
                prev[j] + 1
            } else {
                prev[j + 1].max(row[j])
            };
        }
        std::mem::swap(&mut prev, &mut row);
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lcs_counts_a_subsequence_not_a_substring() {
        assert_eq!(lcs_len(&["a", "b", "c", "d"], &["a", "c", "d", "x"]), 3);
        assert_eq!(lcs_len(&[], &["a"]), 0);
    }

    #[test]
    fn best_precision_and_recall_come_from_different_references() {
        let refs = vec!["a b".to_string(), "a b c d e f".to_string()];
        // Precision 1 (from either), recall 1 (from "a b").
        assert!((RougeL::sentence("a b", &refs) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn an_empty_candidate_scores_zero() {
        assert_eq!(RougeL::sentence("", &["a dog".to_string()]), 0.0);
    }
}
