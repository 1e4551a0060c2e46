//! POPE object-hallucination scores (paper Table 8), exactly as POPE's
//! `evaluate.py` (RUCAIBox/POPE; the copy LLaVA ships as
//! `eval/eval_pope.py`) reads an answer: keep the text before the first
//! `.`, drop commas, split on single spaces, and answer "no" when a word is
//! `No`, `not` or `no`, "yes" otherwise. "yes" is the positive class.
//!
//! Where the script divides by zero (no positive prediction, or no positive
//! label) it crashes; here that ratio is 0 and the counts are reported.
use serde::Serialize;

/// The script's reading of a free-form answer.
pub fn answer_is_yes(text: &str) -> bool {
    let first = match text.find('.') {
        Some(dot) => &text[..dot],
        None => text,
    };
    let words = first.replace(',', "");
    !words
        .split(' ')
        .any(|w| w == "No" || w == "not" || w == "no")
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PopeScores {
    pub accuracy: f64,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub yes_ratio: f64,
    pub true_positives: u64,
    pub false_positives: u64,
    pub true_negatives: u64,
    pub false_negatives: u64,
}

fn ratio(numerator: u64, denominator: u64) -> f64 {
    if denominator == 0 {
        0.0
    } else {
        numerator as f64 / denominator as f64
    }
}

/// Scores `(predicted yes, labelled yes)` pairs.
pub fn pope_scores(pairs: impl IntoIterator<Item = (bool, bool)>) -> PopeScores {
    let (mut tp, mut fp, mut tn, mut fn_) = (0u64, 0u64, 0u64, 0u64);
    for (predicted, label) in pairs {
        match (predicted, label) {
            (true, true) => tp += 1,
            (true, false) => fp += 1,
            (false, false) => tn += 1,
            (false, true) => fn_ += 1,
        }
    }
    let precision = ratio(tp, tp + fp);
    let recall = ratio(tp, tp + fn_);
    let f1 = if precision + recall > 0.0 {
        2.0 * precision * recall / (precision + recall)
    } else {
        0.0
    };
    PopeScores {
        accuracy: ratio(tp + tn, tp + tn + fp + fn_),
        precision,
        recall,
        f1,
        yes_ratio: ratio(tp + fp, tp + tn + fp + fn_),
        true_positives: tp,
        false_positives: fp,
        true_negatives: tn,
        false_negatives: fn_,
    }
}
