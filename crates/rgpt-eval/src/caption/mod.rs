//! Caption metrics as pycocoevalcap 1.2 computes them (`COCOEvalCap`):
//! PTB tokenisation of references and predictions ([`ptb`]), then BLEU-1..4
//! ([`Bleu`]), METEOR 1.5 ([`Meteor`], the Java jar), ROUGE-L ([`RougeL`])
//! and CIDEr-D ([`Cider`]), each on pycocoevalcap's scale (BLEU, METEOR and
//! ROUGE-L in 0..1, CIDEr unscaled, e.g. 1.099).
//!
//! [`score_captions`] is the entry point: it checks ids, tokenizes, scores,
//! and drives METEOR when its jar is given or can be found, reporting METEOR
//! as unavailable (never approximated) otherwise.

mod bleu;
mod cider;
mod locate;
mod meteor;
pub mod ptb;
mod rouge;

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

pub use bleu::Bleu;
pub use cider::Cider;
pub use locate::{jar_in_venv, locate_jar, ReferenceJar};
pub use meteor::Meteor;
pub use ptb::{tokenize, tokenize_caption, JavaPtbTokenizer, PtbTokenizer, PUNCTUATIONS};
pub use rouge::{rouge_l, RougeL};

use crate::error::EvalError;

/// Reference captions per image id.
pub type References = BTreeMap<String, Vec<String>>;
/// One candidate (predicted) caption per image id.
pub type Candidates = BTreeMap<String, String>;

/// A metric's corpus score and each image's, by id.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricScores<T> {
    pub corpus: T,
    pub per_image: BTreeMap<String, T>,
}

/// The four numbers of the captioning tables, on pycocoevalcap's scale.
/// Serializes as `{"BLEU-1":..,"BLEU-2":..,"BLEU-3":..,"BLEU-4":..,
/// "METEOR":..,"ROUGE-L":..,"CIDEr":..}` with `METEOR` null when unavailable.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CaptionScores {
    pub bleu: [f64; 4],
    pub meteor: Option<f64>,
    pub rouge_l: f64,
    pub cider: f64,
}

impl Serialize for CaptionScores {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(7))?;
        for (i, v) in self.bleu.iter().enumerate() {
            map.serialize_entry(&format!("BLEU-{}", i + 1), v)?;
        }
        map.serialize_entry("METEOR", &self.meteor)?;
        map.serialize_entry("ROUGE-L", &self.rouge_l)?;
        map.serialize_entry("CIDEr", &self.cider)?;
        map.end()
    }
}

/// Where METEOR comes from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum MeteorSource {
    /// Do not compute METEOR.
    Off,
    /// This jar (`--meteor-jar`); failing to run it is an error.
    Jar(PathBuf),
    /// Look for it ([`locate_jar`]); if it is not found or Java cannot be
    /// started, METEOR is reported as unavailable.
    #[default]
    Locate,
}

/// How [`score_captions`] treats its input.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ScoreOptions {
    /// Score only predictions whose id has references, instead of failing.
    pub allow_missing: bool,
    pub meteor: MeteorSource,
}

/// The outcome of [`score_captions`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CaptionReport {
    /// Corpus scores (`COCOEvalCap.eval`).
    pub scores: CaptionScores,
    /// Scores of each image (`COCOEvalCap.imgToEval`).
    pub per_image: BTreeMap<String, CaptionScores>,
    /// Predicted ids skipped for lack of references (with `allow_missing`).
    pub missing: Vec<String>,
    /// Why METEOR is absent, when it is.
    pub meteor_unavailable: Option<String>,
}

/// How many offending ids an error message lists.
const IDS_IN_ERRORS: usize = 5;

/// Scores predicted captions against references as pycocoevalcap's
/// `COCOEvalCap` does with `params['image_id']` set to the predicted ids:
/// references of images without a prediction are ignored (they do not enter
/// CIDEr's document frequencies either). References and predictions are PTB
/// tokenized separately, each in id order. An empty (or punctuation-only)
/// prediction is scored, as pycocoevalcap scores it: 0 on every metric but
/// BLEU's smoothing residue.
pub fn score_captions(
    preds: &BTreeMap<String, String>,
    refs: &BTreeMap<String, Vec<String>>,
    options: &ScoreOptions,
) -> Result<CaptionReport, EvalError> {
    let missing: Vec<String> = preds
        .keys()
        .filter(|id| !refs.contains_key(*id))
        .cloned()
        .collect();
    if !missing.is_empty() && !options.allow_missing {
        return Err(EvalError::MissingReferences {
            count: missing.len(),
            first: missing.iter().take(IDS_IN_ERRORS).cloned().collect(),
        });
    }
    let shared: References = preds
        .keys()
        .filter_map(|id| refs.get(id).map(|r| (id.clone(), r.clone())))
        .collect();
    if shared.is_empty() {
        return Err(EvalError::NothingToScore);
    }
    if let Some((id, _)) = shared.iter().find(|(_, r)| r.is_empty()) {
        return Err(EvalError::NoReferences { id: id.clone() });
    }
    let _span = tracing::info_span!("score_captions", images = shared.len()).entered();

    let gts = tokenize(&shared);
    let res_lists: References = shared
        .keys()
        .map(|id| (id.clone(), vec![preds[id].clone()]))
        .collect();
    let res: Candidates = tokenize(&res_lists)
        .into_iter()
        .map(|(id, mut caps)| (id, caps.pop().unwrap_or_default()))
        .collect();

    let bleu = Bleu::compute(&gts, &res)?;
    let (meteor, meteor_unavailable) = meteor_scores(&options.meteor, &gts, &res)?;
    let rouge = RougeL::compute(&gts, &res)?;
    let cider = Cider::compute(&gts, &res)?;

    let per_image = res
        .keys()
        .map(|id| {
            let scores = CaptionScores {
                bleu: bleu.per_image[id],
                meteor: meteor.as_ref().map(|m| m.per_image[id]),
                rouge_l: rouge.per_image[id],
                cider: cider.per_image[id],
            };
            (id.clone(), scores)
        })
        .collect();
    let scores = CaptionScores {
        bleu: bleu.corpus,
        meteor: meteor.as_ref().map(|m| m.corpus),
        rouge_l: rouge.corpus,
        cider: cider.corpus,
    };
    Ok(CaptionReport {
        scores,
        per_image,
        missing,
        meteor_unavailable,
    })
}

/// METEOR per [`MeteorSource`]: scores, or why there are none.
fn meteor_scores(
    source: &MeteorSource,
    gts: &References,
    res: &Candidates,
) -> Result<(Option<MetricScores<f64>>, Option<String>), EvalError> {
    let mut meteor = match source {
        MeteorSource::Off => return Ok((None, Some("METEOR was turned off".into()))),
        MeteorSource::Jar(jar) => Meteor::spawn(jar)?,
        MeteorSource::Locate => {
            let started = locate_jar(ReferenceJar::Meteor).and_then(|jar| Meteor::spawn(&jar));
            match started {
                Ok(meteor) => meteor,
                Err(
                    e @ (EvalError::JarNotFound { .. }
                    | EvalError::JarMissing { .. }
                    | EvalError::JavaSpawn { .. }),
                ) => {
                    tracing::warn!("METEOR unavailable: {e}");
                    return Ok((None, Some(e.to_string())));
                }
                Err(e) => return Err(e),
            }
        }
    };
    Ok((Some(meteor.compute(gts, res)?), None))
}

/// Python's `str.split()`: runs of whitespace separate words.
pub(crate) fn python_split(s: &str) -> Vec<&str> {
    s.split(ptb::is_python_space)
        .filter(|w| !w.is_empty())
        .collect()
}

/// pycocoevalcap's scorers assert that references and candidates cover the
/// same ids and that every id has a reference.
fn validate(refs: &References, cands: &Candidates) -> Result<(), EvalError> {
    if cands.is_empty() {
        return Err(EvalError::NothingToScore);
    }
    let only_refs: Vec<&String> = refs.keys().filter(|id| !cands.contains_key(*id)).collect();
    let only_cands: Vec<&String> = cands.keys().filter(|id| !refs.contains_key(*id)).collect();
    if !only_refs.is_empty() || !only_cands.is_empty() {
        return Err(EvalError::IdMismatch {
            only_refs: only_refs.len(),
            only_candidates: only_cands.len(),
            first: only_cands
                .iter()
                .chain(&only_refs)
                .take(IDS_IN_ERRORS)
                .map(|s| s.to_string())
                .collect(),
        });
    }
    if let Some((id, _)) = refs.iter().find(|(_, r)| r.is_empty()) {
        return Err(EvalError::NoReferences { id: id.clone() });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_form_uses_the_table_names_and_null_for_missing_meteor() {
        let scores = CaptionScores {
            bleu: [0.5, 0.4, 0.3, 0.2],
            meteor: None,
            rouge_l: 0.6,
            cider: 1.099,
        };
        let json = serde_json::to_string(&scores).expect("serializable");
        assert_eq!(
            json,
            r#"{"BLEU-1":0.5,"BLEU-2":0.4,"BLEU-3":0.3,"BLEU-4":0.2,"METEOR":null,"ROUGE-L":0.6,"CIDEr":1.099}"#
        );
    }

    #[test]
    fn predictions_without_references_are_an_error_unless_allowed() {
        let preds: BTreeMap<String, String> = [
            ("1".into(), "a dog".into()),
            ("2".into(), "a cat".into()),
            ("9".into(), "x".into()),
        ]
        .into();
        let refs: BTreeMap<String, Vec<String>> = [
            ("1".into(), vec!["a dog".into()]),
            ("2".into(), vec!["a cat".into()]),
        ]
        .into();
        let mut options = ScoreOptions {
            allow_missing: false,
            meteor: MeteorSource::Off,
        };
        match score_captions(&preds, &refs, &options) {
            Err(EvalError::MissingReferences { count, first }) => {
                assert_eq!(count, 1);
                assert_eq!(first, vec!["9".to_string()]);
            }
            other => panic!("expected MissingReferences, got {other:?}"),
        }
        options.allow_missing = true;
        let report = score_captions(&preds, &refs, &options).expect("shared ids scored");
        assert_eq!(report.missing, vec!["9".to_string()]);
        assert_eq!(report.per_image.len(), 2);
        assert_eq!(report.scores.meteor, None);
    }

    #[test]
    fn an_empty_reference_list_is_an_error() {
        let preds: BTreeMap<String, String> = [("1".into(), "a dog".into())].into();
        let refs: BTreeMap<String, Vec<String>> = [("1".into(), vec![])].into();
        let options = ScoreOptions {
            allow_missing: false,
            meteor: MeteorSource::Off,
        };
        assert!(matches!(
            score_captions(&preds, &refs, &options),
            Err(EvalError::NoReferences { id }) if id == "1"
        ));
    }

    #[test]
    fn metric_functions_reject_mismatched_ids() {
        let refs: References = [("1".into(), vec!["a".into()])].into();
        let cands: Candidates = [("2".into(), "a".into())].into();
        assert!(matches!(
            Bleu::compute(&refs, &cands),
            Err(EvalError::IdMismatch { .. })
        ));
    }
}
