//! Scores of a run, per task family, from the answered questions:
//! classification accuracy (scored and generated) and box AP, REC accuracy
//! (positives and no-match negatives), caption metrics and POPE; each
//! overall and by region size where sizes are known. Written as
//! `results.json` and a Markdown table beside the paper's numbers.
//!
//! The scorers (`*_report`) take [`Answered`] questions, plain data that
//! needs no model; with the feature `runner`, the `*_results` functions
//! score a task file's `EvalItem`s from a predictions file.
use std::collections::BTreeMap;

use rgpt_region::iou::bbox_iou_one;
use serde_json::{json, Value};

use crate::coco_ap::{coco_box_ap, Detection, GroundTruth, Params};
use crate::predictions::Prediction;
use crate::rec::parse_region_index;
use crate::task::TaskKind;
use crate::EvalError;

/// The paper's numbers for the datasets it reports (Tables 3, 4, 5).
pub fn paper_numbers(task: &str) -> Vec<(&'static str, f64)> {
    match task {
        "coco-cls" => vec![("mAP", 70.0), ("accuracy", 80.61)],
        "refcocog-cap" => vec![("METEOR", 16.9), ("CIDEr", 109.9)],
        "vg" => vec![("METEOR", 17.0), ("CIDEr", 145.6)],
        "refcocog-rec" => vec![("accuracy (val)", 86.44), ("accuracy (test)", 86.96)],
        "pope-random" => vec![
            ("accuracy", 87.80),
            ("precision", 97.75),
            ("recall", 78.13),
            ("F1", 86.85),
            ("yes ratio", 41.20),
        ],
        "pope-popular" => vec![
            ("accuracy", 87.20),
            ("precision", 95.44),
            ("recall", 78.13),
            ("F1", 85.92),
            ("yes ratio", 40.93),
        ],
        "pope-adversarial" => vec![
            ("accuracy", 85.67),
            ("precision", 91.99),
            ("recall", 78.13),
            ("F1", 84.50),
            ("yes ratio", 42.47),
        ],
        _ => Vec::new(),
    }
}

/// The generated answer as a class name: lower case, no final full stop.
pub fn normalise_answer(answer: &str) -> String {
    answer.trim().trim_end_matches('.').trim().to_lowercase()
}

fn fraction(hits: usize, total: usize) -> f64 {
    if total == 0 {
        0.0
    } else {
        hits as f64 / total as f64
    }
}

/// Accuracy overall and per size class of `(size, correct)` pairs.
fn accuracy_by_size<'a>(pairs: impl Iterator<Item = (Option<&'a str>, bool)>) -> (f64, Value) {
    let mut overall = (0, 0);
    let mut sizes: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for (size, correct) in pairs {
        overall.0 += usize::from(correct);
        overall.1 += 1;
        if let Some(size) = size {
            let entry = sizes.entry(size).or_default();
            entry.0 += usize::from(correct);
            entry.1 += 1;
        }
    }
    let by_size: serde_json::Map<String, Value> = sizes
        .into_iter()
        .map(|(size, (hits, n))| {
            (
                size.to_string(),
                json!({"accuracy": fraction(hits, n), "n": n}),
            )
        })
        .collect();
    (fraction(overall.0, overall.1), Value::Object(by_size))
}

/// One question with the model's prediction, as the scorers read it.
#[derive(Debug, Clone)]
pub struct Answered<'a> {
    /// The question's id (reported with the error of an unanswered one).
    pub id: &'a str,
    /// The gold answer: a class name, `yes` or `no` (POPE), or a caption.
    pub answer: &'a str,
    /// Captioning: the reference captions.
    pub references: &'a [String],
    /// `small` / `medium` / `large` where known: accuracies are also given
    /// per size.
    pub size: Option<&'a str>,
    /// Classification: the image, which box AP groups regions by.
    pub image: Option<&'a str>,
    /// REC: the 1-based target among the candidates, none for no match.
    pub target: Option<usize>,
    /// REC with proposals: the ground-truth box `[x, y, w, h]`; a chosen
    /// candidate is right when its IoU with it is at least 0.5.
    pub ground_truth: Option<[f64; 4]>,
    /// Boxes `[x, y, w, h]` of the question's regions, in order. REC reads
    /// the chosen candidate's and the target's, classification the last one
    /// (the region classified); the others may be `None`.
    pub boxes: Vec<Option<[f64; 4]>>,
    pub prediction: &'a Prediction,
}

impl Answered<'_> {
    /// The box of the `k`-th region (1-based), if known.
    fn region_box(&self, k: usize) -> Option<[f64; 4]> {
        self.boxes.get(k.checked_sub(1)?).copied().flatten()
    }
}

/// Questions the model could not answer (counted wrong), with why.
fn unanswered(answers: &[Answered]) -> Value {
    let failed: Vec<Value> = answers
        .iter()
        .filter_map(|a| {
            let error = a.prediction.error.as_ref()?;
            Some(json!({"id": a.id, "error": error}))
        })
        .collect();
    Value::Array(failed)
}

/// Classification: accuracy of the best-scored class and of the generated
/// answer (a name outside `classes` is wrong, as in the paper), and COCO
/// box AP with every region's box submitted once per class at its score.
pub fn classification_report(answers: &[Answered], classes: &[String]) -> Value {
    let class_ids: BTreeMap<&str, u64> = classes
        .iter()
        .enumerate()
        .map(|(i, c)| (c.as_str(), i as u64 + 1))
        .collect();
    let mut image_ids: BTreeMap<&str, u64> = BTreeMap::new();
    let (mut gts, mut dts) = (Vec::new(), Vec::new());
    let mut scored = Vec::new();
    let mut generated = Vec::new();
    for (n, item) in answers.iter().enumerate() {
        let p = item.prediction;
        let truth = normalise_answer(item.answer);
        let best = p.scores.as_ref().and_then(|s| {
            s.iter()
                .max_by(|a, b| a.1.partial_cmp(b.1).unwrap_or(std::cmp::Ordering::Equal))
                .map(|(c, _)| normalise_answer(c))
        });
        scored.push((item.size, best.as_deref() == Some(truth.as_str())));
        let answer = normalise_answer(&p.answer);
        let in_vocabulary = class_ids.keys().any(|c| normalise_answer(c) == answer);
        generated.push((item.size, in_vocabulary && answer == truth));
        let (Some(bbox), Some(scores), Some(&category)) = (
            item.boxes.last().copied().flatten(),
            p.scores.as_ref(),
            class_ids.get(item.answer.trim()),
        ) else {
            continue;
        };
        let next = image_ids.len() as u64 + 1;
        let image_id = *image_ids.entry(item.image.unwrap_or("")).or_insert(next);
        gts.push(GroundTruth {
            id: n as u64 + 1,
            image_id,
            category_id: category,
            bbox,
            area: bbox[2] * bbox[3],
            iscrowd: false,
        });
        for (class, score) in scores {
            if let Some(&category_id) = class_ids.get(class.as_str()) {
                dts.push(Detection {
                    image_id,
                    category_id,
                    bbox,
                    score: *score,
                });
            }
        }
    }
    let (accuracy, by_size) = accuracy_by_size(scored.into_iter());
    let (generated_accuracy, generated_by_size) = accuracy_by_size(generated.into_iter());
    let categories: Vec<u64> = class_ids.values().copied().collect();
    let images: Vec<u64> = image_ids.values().copied().collect();
    let ap = (!gts.is_empty())
        .then(|| coco_box_ap(&gts, &dts, &categories, &images, &Params::default()));
    json!({
        "questions": answers.len(),
        "unanswered": unanswered(answers),
        "accuracy": accuracy,
        "generated_accuracy": generated_accuracy,
        "mAP": ap.map(|s| s.ap),
        "AP50": ap.map(|s| s.ap50),
        "by_size": by_size,
        "generated_by_size": generated_by_size,
    })
}

/// Whether a REC answer is right: its `Region [k]` is the target (or a
/// candidate with IoU >= 0.5 with it; with proposals, with the ground
/// truth), or, for a no-match question, it names no region and says so.
pub fn rec_answer_correct(item: &Answered) -> bool {
    let answer = &item.prediction.answer;
    let chosen = parse_region_index(answer);
    match (item.target, item.ground_truth) {
        // Proposals: the chosen candidate must overlap the ground truth.
        (Some(_), Some(truth)) => chosen
            .and_then(|k| item.region_box(k))
            .is_some_and(|b| bbox_iou_one(b, truth, false) >= 0.5),
        (Some(target), None) => chosen.is_some_and(|k| {
            k == target
                || match (item.region_box(k), item.region_box(target)) {
                    (Some(a), Some(b)) => bbox_iou_one(a, b, false) >= 0.5,
                    _ => false,
                }
        }),
        (None, _) => chosen.is_none() && answer.to_lowercase().contains("no corresponding"),
    }
}

/// REC accuracy overall, on the questions with a match and on the no-match
/// ones, and by size.
pub fn rec_report(answers: &[Answered]) -> Value {
    let mut pairs = Vec::new();
    let (mut positives, mut negatives) = ((0, 0), (0, 0));
    for item in answers {
        let correct = rec_answer_correct(item);
        let counter = if item.target.is_some() {
            &mut positives
        } else {
            &mut negatives
        };
        counter.0 += usize::from(correct);
        counter.1 += 1;
        pairs.push((item.size, correct));
    }
    let (accuracy, by_size) = accuracy_by_size(pairs.into_iter());
    json!({
        "questions": answers.len(),
        "unanswered": unanswered(answers),
        "accuracy": accuracy,
        "accuracy_with_match": fraction(positives.0, positives.1),
        "accuracy_no_match": fraction(negatives.0, negatives.1),
        "no_match_questions": negatives.1,
        "by_size": by_size,
    })
}

/// Captioning: pycocoevalcap's BLEU-1..4, METEOR (when its jar and Java
/// are found; `null` otherwise, never an approximation), ROUGE-L and CIDEr
/// of the generated captions against each question's references.
pub fn caption_report(
    answers: &[Answered],
    meteor: crate::caption::MeteorSource,
) -> Result<Value, EvalError> {
    let mut predictions = BTreeMap::new();
    let mut references = BTreeMap::new();
    for item in answers {
        predictions.insert(item.id.to_string(), item.prediction.answer.clone());
        references.insert(item.id.to_string(), item.references.to_vec());
    }
    let options = crate::caption::ScoreOptions {
        allow_missing: false,
        meteor,
    };
    let report = crate::caption::score_captions(&predictions, &references, &options)?;
    let mut value = serde_json::to_value(report.scores).unwrap_or(Value::Null);
    value["questions"] = json!(answers.len());
    value["unanswered"] = unanswered(answers);
    if let Some(why) = &report.meteor_unavailable {
        value["meteor_unavailable"] = json!(why);
    }
    Ok(value)
}

/// POPE's scores of the answers (its script's reading of each answer; the
/// gold answer is `yes` or `no`).
pub fn pope_report(answers: &[Answered]) -> Value {
    let pairs = answers.iter().map(|a| {
        (
            crate::pope::answer_is_yes(&a.prediction.answer),
            a.answer == "yes",
        )
    });
    let scores = crate::pope::pope_scores(pairs);
    let mut value = serde_json::to_value(scores).unwrap_or(Value::Null);
    value["questions"] = json!(answers.len());
    value["unanswered"] = unanswered(answers);
    value
}

/// The Markdown table of a run's headline numbers beside the paper's.
pub fn markdown(task: &str, kind: TaskKind, results: &Value) -> String {
    let ours: Vec<(&str, &str, f64)> = match kind {
        TaskKind::Classification => vec![
            ("mAP", "mAP", 100.0),
            ("accuracy", "accuracy", 100.0),
            ("generated accuracy", "generated_accuracy", 100.0),
        ],
        TaskKind::Rec => vec![
            ("accuracy", "accuracy", 100.0),
            ("accuracy (match)", "accuracy_with_match", 100.0),
            ("accuracy (no match)", "accuracy_no_match", 100.0),
        ],
        TaskKind::Pope => vec![
            ("accuracy", "accuracy", 100.0),
            ("precision", "precision", 100.0),
            ("recall", "recall", 100.0),
            ("F1", "f1", 100.0),
            ("yes ratio", "yes_ratio", 100.0),
        ],
        TaskKind::Caption => vec![
            ("BLEU-4", "BLEU-4", 100.0),
            ("METEOR", "METEOR", 100.0),
            ("ROUGE-L", "ROUGE-L", 100.0),
            ("CIDEr", "CIDEr", 100.0),
        ],
    };
    let paper: BTreeMap<&str, f64> = paper_numbers(task).into_iter().collect();
    let mut out = format!("| {task} | ours | paper |\n| --- | --- | --- |\n");
    for (label, key, scale) in ours {
        let value = results
            .get(key)
            .and_then(Value::as_f64)
            .map_or("n/a".to_string(), |v| format!("{:.2}", v * scale));
        let paper = paper
            .iter()
            .find(|(k, _)| k.starts_with(label))
            .map_or("-".to_string(), |(_, v)| format!("{v:.2}"));
        out.push_str(&format!("| {label} | {value} | {paper} |\n"));
    }
    out
}

#[cfg(feature = "runner")]
pub use of_items::{caption_results, classification_results, pope_results, rec_results};

/// The scorers above on a task file's questions ([`EvalItem`]) and a
/// predictions file (feature `runner`).
#[cfg(feature = "runner")]
mod of_items {
    use std::path::Path;

    use serde_json::Value;

    use super::{caption_report, classification_report, pope_report, rec_report, Answered};
    use crate::items::EvalItem;
    use crate::predictions::PredictionStore;
    use crate::EvalError;

    /// The box of a region `[x, y, w, h]` (rasterised, as pycocotools' toBbox).
    fn region_box(item: &EvalItem, index: usize, image_root: &Path) -> Option<[f64; 4]> {
        let (w, h) = (item.width?, item.height?);
        let spec = item.regions.get(index)?.to_spec(image_root).ok()?;
        spec.bbox(h, w).ok()
    }

    /// Each question with its prediction and the region boxes `boxes`
    /// gives it; a question without a prediction is an error.
    fn answered<'a>(
        items: &'a [EvalItem],
        store: &'a PredictionStore,
        boxes: impl Fn(&EvalItem) -> Vec<Option<[f64; 4]>>,
    ) -> Result<Vec<Answered<'a>>, EvalError> {
        items
            .iter()
            .map(|item| {
                let prediction = store.get(&item.id).ok_or_else(|| EvalError::Sample {
                    id: item.id.clone(),
                    message: "has no prediction yet: run the evaluation (it resumes) before \
                              scoring"
                        .into(),
                })?;
                Ok(Answered {
                    id: &item.id,
                    answer: &item.answer,
                    references: &item.references,
                    size: item.size.as_deref(),
                    image: item.image.as_deref(),
                    target: item.target,
                    ground_truth: item.ground_truth,
                    boxes: boxes(item),
                    prediction,
                })
            })
            .collect()
    }

    /// [`classification_report`](super::classification_report) of the
    /// items; only the classified (last) region's box is read.
    pub fn classification_results(
        items: &[EvalItem],
        classes: &[String],
        store: &PredictionStore,
        image_root: &Path,
    ) -> Result<Value, EvalError> {
        let answers = answered(items, store, |item| {
            let mut boxes = vec![None; item.regions.len()];
            if let Some(last) = boxes.last_mut() {
                *last = region_box(item, item.regions.len() - 1, image_root);
            }
            boxes
        })?;
        Ok(classification_report(&answers, classes))
    }

    /// [`rec_report`](super::rec_report) of the items, every candidate's
    /// box computed from its region.
    pub fn rec_results(
        items: &[EvalItem],
        store: &PredictionStore,
        image_root: &Path,
    ) -> Result<Value, EvalError> {
        let answers = answered(items, store, |item| {
            (0..item.regions.len())
                .map(|index| region_box(item, index, image_root))
                .collect()
        })?;
        Ok(rec_report(&answers))
    }

    /// [`caption_report`](super::caption_report) of the items.
    pub fn caption_results(
        items: &[EvalItem],
        store: &PredictionStore,
        meteor: crate::caption::MeteorSource,
    ) -> Result<Value, EvalError> {
        caption_report(&answered(items, store, |_| Vec::new())?, meteor)
    }

    /// [`pope_report`](super::pope_report) of the items.
    pub fn pope_results(items: &[EvalItem], store: &PredictionStore) -> Result<Value, EvalError> {
        Ok(pope_report(&answered(items, store, |_| Vec::new())?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn predicted(answer: &str, scores: &[(&str, f64)]) -> Prediction {
        Prediction {
            id: String::new(),
            answer: answer.into(),
            scores: (!scores.is_empty())
                .then(|| scores.iter().map(|(c, s)| (c.to_string(), *s)).collect()),
            error: None,
        }
    }

    fn question<'a>(prediction: &'a Prediction, target: Option<usize>) -> Answered<'a> {
        Answered {
            id: "q",
            answer: "",
            references: &[],
            size: None,
            image: None,
            target,
            ground_truth: None,
            // Regions 1 and 2 overlap with IoU 0.9; region 3 lies apart.
            boxes: vec![
                Some([0.0, 0.0, 10.0, 10.0]),
                Some([0.0, 0.0, 10.0, 9.0]),
                Some([50.0, 50.0, 5.0, 5.0]),
            ],
            prediction,
        }
    }

    #[test]
    fn rec_answers_are_right_by_index_or_by_overlap_with_the_target() {
        for (answer, target, right) in [
            ("Region [1].", Some(1), true),
            // Another candidate that overlaps the target (IoU >= 0.5).
            ("region [2]", Some(1), true),
            ("Region [3].", Some(1), false),
            // No region 0: not read as region 1.
            ("Region [0].", Some(1), false),
            ("Region [4].", Some(1), false),
            ("the left one", Some(1), false),
            ("No corresponding options found.", None, true),
            ("Region [3]. No corresponding options.", None, false),
            ("I cannot tell.", None, false),
        ] {
            let p = predicted(answer, &[]);
            assert_eq!(
                rec_answer_correct(&question(&p, target)),
                right,
                "{answer} {target:?}"
            );
        }
        // With proposals, only the overlap with the ground truth counts.
        let p = predicted("Region [3].", &[]);
        let mut q = question(&p, Some(1));
        q.ground_truth = Some([50.0, 50.0, 5.0, 6.0]);
        assert!(rec_answer_correct(&q));
        let p = predicted("Region [1].", &[]);
        q.prediction = &p;
        assert!(!rec_answer_correct(&q));
    }

    #[test]
    fn rec_report_splits_match_and_no_match_questions() {
        let answers = [
            predicted("Region [1].", &[]),
            predicted("Region [3].", &[]),
            predicted("No corresponding options found.", &[]),
        ];
        let questions = [
            question(&answers[0], Some(1)),
            question(&answers[1], Some(2)),
            question(&answers[2], None),
        ];
        let report = rec_report(&questions);
        assert_eq!(report["questions"], 3);
        assert!((report["accuracy"].as_f64().unwrap() - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(report["accuracy_with_match"], 0.5);
        assert_eq!(report["accuracy_no_match"], 1.0);
        assert_eq!(report["no_match_questions"], 1);
    }

    #[test]
    fn classification_scores_the_best_class_the_generated_name_and_box_ap() {
        let classes: Vec<String> = ["circle", "square"].map(String::from).to_vec();
        let answers = [
            // Best-scored and generated right.
            predicted("Circle.", &[("circle", 0.9), ("square", 0.5)]),
            // Best-scored right, generated outside the classes.
            predicted("a box", &[("circle", 0.2), ("square", 0.8)]),
            // Both wrong.
            predicted("circle", &[("circle", 0.6), ("square", 0.4)]),
        ];
        let truths = ["circle", "square", "square"];
        let sizes = [Some("small"), Some("large"), Some("large")];
        let boxes = [
            [0.0, 0.0, 10.0, 10.0],
            [20.0, 0.0, 10.0, 10.0],
            [40.0, 0.0, 10.0, 10.0],
        ];
        let questions: Vec<Answered> = (0..3)
            .map(|i| Answered {
                answer: truths[i],
                size: sizes[i],
                image: Some("one.png"),
                boxes: vec![None, Some(boxes[i])],
                ..question(&answers[i], None)
            })
            .collect();
        let report = classification_report(&questions, &classes);
        assert!((report["accuracy"].as_f64().unwrap() - 2.0 / 3.0).abs() < 1e-12);
        assert!((report["generated_accuracy"].as_f64().unwrap() - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(report["by_size"]["small"]["accuracy"], 1.0);
        assert_eq!(report["by_size"]["large"]["accuracy"], 0.5);
        // AP ranks each class's scores over all regions. circle: its one
        // box first, AP 1. square: its boxes at 0.8 and 0.4 around the
        // circle's box at 0.5, so precision is 1 up to recall 0.5 (51 of
        // COCO's 101 recall points) and 2/3 after.
        let square = (51.0 + 50.0 * (2.0 / 3.0)) / 101.0;
        let map = report["mAP"].as_f64().unwrap();
        assert!((map - (1.0 + square) / 2.0).abs() < 1e-12, "{map}");
    }

    #[test]
    fn unanswered_questions_are_listed_with_why() {
        let mut failed = predicted("", &[]);
        failed.error = Some("prompt exceeds the context".into());
        let answered = predicted("Yes, there is.", &[]);
        let questions = [
            Answered {
                id: "a",
                answer: "yes",
                ..question(&answered, None)
            },
            Answered {
                id: "b",
                answer: "no",
                ..question(&failed, None)
            },
        ];
        let report = pope_report(&questions);
        assert_eq!(report["accuracy"], 0.5);
        assert_eq!(
            report["unanswered"],
            json!([{"id": "b", "error": "prompt exceeds the context"}])
        );
    }
}
