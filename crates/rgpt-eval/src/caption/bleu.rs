//! BLEU-1..4 as pycocoevalcap 1.2's `bleu/bleu_scorer.py` computes it
//! (David Chiang's scorer): clipped n-gram counts against the per-n-gram
//! maximum over an image's references, and a brevity penalty from the
//! *closest* reference length (ties to the shorter one), applied once to the
//! corpus totals and once per image. The `1e-15`/`1e-9` smoothing constants
//! are the reference's, so zero-match images give its tiny, not zero, values.

use std::collections::HashMap;

use super::{python_split, validate, Candidates, MetricScores, References};
use crate::error::EvalError;

const N: usize = 4;
/// Added to the matched count (`tiny` in bleu_scorer.py).
const TINY: f64 = 1e-15;
/// Added to the guessed count (`small` in bleu_scorer.py).
const SMALL: f64 = 1e-9;

/// BLEU-1..4 on tokenized captions.
pub struct Bleu;

/// What one image contributes: bleu_scorer.py's `cook_test` result.
struct Cooked {
    test_len: usize,
    ref_len: usize,
    guess: [usize; N],
    correct: [usize; N],
}

impl Bleu {
    /// Corpus BLEU-1..4 and each image's, like `Bleu(4).compute_score`.
    pub fn compute(
        refs: &References,
        cands: &Candidates,
    ) -> Result<MetricScores<[f64; 4]>, EvalError> {
        validate(refs, cands)?;
        let mut total = Cooked {
            test_len: 0,
            ref_len: 0,
            guess: [0; N],
            correct: [0; N],
        };
        let mut per_image = std::collections::BTreeMap::new();
        for (id, cand) in cands {
            let cooked = cook(cand, &refs[id]);
            total.test_len += cooked.test_len;
            total.ref_len += cooked.ref_len;
            for k in 0..N {
                total.guess[k] += cooked.guess[k];
                total.correct[k] += cooked.correct[k];
            }
            per_image.insert(id.clone(), score(&cooked));
        }
        Ok(MetricScores {
            corpus: score(&total),
            per_image,
        })
    }
}

/// Counts of each n-gram (n = 1..=4) of a whitespace-split sentence.
fn ngram_counts<'a>(words: &'a [&'a str]) -> HashMap<&'a [&'a str], usize> {
    let mut counts = HashMap::new();
    for n in 1..=N {
        for gram in words.windows(n) {
            *counts.entry(gram).or_insert(0) += 1;
        }
    }
    counts
}

fn cook(cand: &str, refs: &[String]) -> Cooked {
    let ref_words: Vec<Vec<&str>> = refs.iter().map(|r| python_split(r)).collect();
    let mut max_counts: HashMap<&[&str], usize> = HashMap::new();
    for words in &ref_words {
        for (gram, count) in ngram_counts(words) {
            let best = max_counts.entry(gram).or_insert(0);
            *best = (*best).max(count);
        }
    }
    let words: Vec<&str> = python_split(cand);
    let test_len = words.len();
    // "closest": min over (|len - test_len|, len), so ties go to the shorter.
    let ref_len = ref_words
        .iter()
        .map(|w| w.len())
        .min_by_key(|&len| (len.abs_diff(test_len), len))
        .unwrap_or(0);
    let mut guess = [0; N];
    for (k, g) in guess.iter_mut().enumerate() {
        *g = test_len.saturating_sub(k);
    }
    let mut correct = [0; N];
    for (gram, count) in ngram_counts(&words) {
        correct[gram.len() - 1] += count.min(max_counts.get(gram).copied().unwrap_or(0));
    }
    Cooked {
        test_len,
        ref_len,
        guess,
        correct,
    }
}

/// bleu_scorer.py's geometric mean of the first k precisions, then the
/// brevity penalty (not raised to any power) when the candidate is shorter.
fn score(c: &Cooked) -> [f64; 4] {
    let mut out = [0.0; N];
    let mut product = 1.0;
    for (k, v) in out.iter_mut().enumerate() {
        product *= (c.correct[k] as f64 + TINY) / (c.guess[k] as f64 + SMALL);
        *v = product.powf(1.0 / (k as f64 + 1.0));
    }
    let ratio = (c.test_len as f64 + TINY) / (c.ref_len as f64 + SMALL);
    if ratio < 1.0 {
        let penalty = (1.0 - 1.0 / ratio).exp();
        for v in &mut out {
            *v *= penalty;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(cand: &str, refs: &[&str]) -> MetricScores<[f64; 4]> {
        let refs: References = [(
            "1".to_string(),
            refs.iter().map(|s| s.to_string()).collect(),
        )]
        .into();
        let cands: Candidates = [("1".to_string(), cand.to_string())].into();
        Bleu::compute(&refs, &cands).expect("valid input")
    }

    #[test]
    fn identical_sentences_score_one() {
        let s = one("a man riding a horse", &["a man riding a horse"]);
        for v in s.corpus {
            assert!((v - 1.0).abs() < 1e-8, "{v}");
        }
    }

    #[test]
    fn closest_reference_length_breaks_ties_to_the_shorter() {
        // Candidate of 3 words, references of 2 and 4: |3-2| == |4-3|, so 2
        // is used and there is no brevity penalty.
        let c = cook("a b c", &["a b".into(), "a b c d".into()]);
        assert_eq!(c.ref_len, 2);
    }
}
