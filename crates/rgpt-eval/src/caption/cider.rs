//! CIDEr as pycocoevalcap 1.2's `cider/cider_scorer.py` computes it, which
//! is the CIDEr-D variant: TF-IDF vectors of 1..4-grams with document
//! frequencies taken from the *evaluated* images' references (so scores
//! depend on the set scored together, and a single image scores 0), the
//! candidate's weights clipped at the reference's, a Gaussian penalty
//! (sigma 6) on the length difference, the mean over n-gram orders and
//! references, times 10.
//!
//! Reproduced quirk: the "length" in the penalty is the number of *bigrams*
//! (`if n == 1: length += term_freq`, with `n` the 0-based order), i.e. the
//! word count minus one.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::{python_split, validate, Candidates, MetricScores, References};
use crate::error::EvalError;

/// CIDEr(-D) on tokenized captions.
pub struct Cider;

type Gram<'a> = &'a [&'a str];

/// n-gram counts of one sentence in first-seen order (Python's dict order),
/// so sums run in the same order as the reference's.
struct Counts<'a> {
    grams: Vec<(Gram<'a>, usize)>,
}

/// A TF-IDF vector split by n-gram order, with its norms and length.
struct Vector<'a> {
    /// Per order: weights in first-seen order plus a lookup.
    weights: Vec<Vec<(Gram<'a>, f64)>>,
    lookup: Vec<HashMap<Gram<'a>, f64>>,
    norms: [f64; Cider::N],
    /// Number of bigrams (see the module docs).
    length: usize,
}

impl Cider {
    /// Largest n-gram order.
    pub const N: usize = 4;
    /// Standard deviation of the length penalty.
    pub const SIGMA: f64 = 6.0;

    /// Mean CIDEr and each image's, like `Cider().compute_score`.
    pub fn compute(refs: &References, cands: &Candidates) -> Result<MetricScores<f64>, EvalError> {
        validate(refs, cands)?;
        let ref_words: Vec<Vec<Vec<&str>>> = cands
            .keys()
            .map(|id| refs[id].iter().map(|s| python_split(s)).collect())
            .collect();
        let cand_words: Vec<Vec<&str>> = cands.values().map(|s| python_split(s)).collect();

        let ref_counts: Vec<Vec<Counts>> = ref_words
            .iter()
            .map(|rs| rs.iter().map(|w| precook(w)).collect())
            .collect();
        // Document frequency: in how many images' reference sets a gram occurs.
        let mut doc_freq: HashMap<Gram, f64> = HashMap::new();
        for image in &ref_counts {
            let grams: HashSet<Gram> = image
                .iter()
                .flat_map(|c| c.grams.iter().map(|g| g.0))
                .collect();
            for gram in grams {
                *doc_freq.entry(gram).or_insert(0.0) += 1.0;
            }
        }
        let log_images = (cands.len() as f64).ln();

        let mut per_image = BTreeMap::new();
        for ((id, cand), refs_counts) in cands.keys().zip(&cand_words).zip(&ref_counts) {
            let test = vectorize(&precook(cand), &doc_freq, log_images);
            let mut sum = [0.0f64; Self::N];
            for r in refs_counts {
                let reference = vectorize(r, &doc_freq, log_images);
                let sim = similarity(&test, &reference);
                for (total, v) in sum.iter_mut().zip(sim) {
                    *total += v;
                }
            }
            // np.mean over the orders, then over references, times 10.
            let mean = sum.iter().sum::<f64>() / Self::N as f64;
            let score = mean / refs_counts.len() as f64 * 10.0;
            per_image.insert(id.clone(), score);
        }
        let corpus = per_image.values().sum::<f64>() / per_image.len() as f64;
        Ok(MetricScores { corpus, per_image })
    }
}

fn precook<'a>(words: &'a [&'a str]) -> Counts<'a> {
    let mut index: HashMap<Gram, usize> = HashMap::new();
    let mut grams: Vec<(Gram, usize)> = Vec::new();
    for n in 1..=Cider::N {
        for gram in words.windows(n) {
            match index.get(gram) {
                Some(&i) => grams[i].1 += 1,
                None => {
                    index.insert(gram, grams.len());
                    grams.push((gram, 1));
                }
            }
        }
    }
    Counts { grams }
}

/// cider_scorer.py's `counts2vec`: term frequency times
/// `log(#images) - log(max(1, df))`.
fn vectorize<'a>(
    counts: &Counts<'a>,
    doc_freq: &HashMap<Gram, f64>,
    log_images: f64,
) -> Vector<'a> {
    let mut weights = vec![Vec::new(); Cider::N];
    let mut lookup = vec![HashMap::new(); Cider::N];
    let mut norms = [0.0f64; Cider::N];
    let mut length = 0;
    for &(gram, tf) in &counts.grams {
        let df = doc_freq.get(gram).copied().unwrap_or(0.0).max(1.0).ln();
        let n = gram.len() - 1;
        let w = tf as f64 * (log_images - df);
        weights[n].push((gram, w));
        lookup[n].insert(gram, w);
        norms[n] += w * w;
        if n == 1 {
            length += tf;
        }
    }
    for norm in &mut norms {
        *norm = norm.sqrt();
    }
    Vector {
        weights,
        lookup,
        norms,
        length,
    }
}

/// cider_scorer.py's `sim`: clipped cosine per order with the length penalty.
fn similarity(hyp: &Vector, reference: &Vector) -> [f64; Cider::N] {
    let delta = hyp.length as f64 - reference.length as f64;
    // `np.e ** x` in the reference, which is pow(e, x) rather than exp(x).
    let penalty = std::f64::consts::E.powf(-(delta * delta) / (2.0 * Cider::SIGMA * Cider::SIGMA));
    let mut val = [0.0f64; Cider::N];
    for (n, v) in val.iter_mut().enumerate() {
        for &(gram, h) in &hyp.weights[n] {
            let r = reference.lookup[n].get(gram).copied().unwrap_or(0.0);
            *v += h.min(r) * r;
        }
        if hyp.norms[n] != 0.0 && reference.norms[n] != 0.0 {
            *v /= hyp.norms[n] * reference.norms[n];
        }
        *v *= penalty;
    }
    val
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &[&str])]) -> References {
        pairs
            .iter()
            .map(|(id, caps)| (id.to_string(), caps.iter().map(|s| s.to_string()).collect()))
            .collect()
    }

    #[test]
    fn a_single_image_scores_zero_because_every_idf_is_zero() {
        let refs = map(&[("1", &["a dog on a mat"])]);
        let cands: Candidates = [("1".to_string(), "a dog on a mat".to_string())].into();
        assert_eq!(Cider::compute(&refs, &cands).expect("valid").corpus, 0.0);
    }

    #[test]
    fn penalty_length_counts_bigrams() {
        let words = ["a", "b", "c"];
        let v = vectorize(&precook(&words), &HashMap::new(), 0.0);
        assert_eq!(v.length, 2);
    }
}
