//! Scores of a run, per task family, from the questions and the
//! predictions file: classification accuracy (scored and generated) and
//! box AP, REC accuracy (positives and no-match negatives), and caption
//! metrics; each overall and by region size where sizes are known. Written
//! as `results.json` and a Markdown table beside the paper's numbers.
use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::coco_ap::{coco_box_ap, Detection, GroundTruth, Params};
use crate::items::{EvalItem, TaskKind};
use crate::predictions::PredictionStore;
use crate::rec::parse_region_index;
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

/// Questions the model could not answer (counted wrong), with why.
fn unanswered(items: &[EvalItem], store: &PredictionStore) -> Value {
    let failed: Vec<Value> = items
        .iter()
        .filter_map(|i| {
            let error = store.get(&i.id)?.error.as_ref()?;
            Some(json!({"id": i.id, "error": error}))
        })
        .collect();
    Value::Array(failed)
}

/// The box of a region `[x, y, w, h]` (rasterised, as pycocotools' toBbox).
fn region_box(item: &EvalItem, index: usize, image_root: &std::path::Path) -> Option<[f64; 4]> {
    let (w, h) = (item.width?, item.height?);
    let spec = item.regions.get(index)?.to_spec(image_root).ok()?;
    spec.bbox(h, w).ok()
}

fn prediction<'s>(
    store: &'s PredictionStore,
    item: &EvalItem,
) -> Result<&'s crate::predictions::Prediction, EvalError> {
    store.get(&item.id).ok_or_else(|| EvalError::Sample {
        id: item.id.clone(),
        message: "has no prediction yet: run the evaluation (it resumes) before scoring".into(),
    })
}

/// Classification: accuracy of the best-scored class and of the generated
/// answer (a name outside `classes` is wrong, as in the paper), and COCO
/// box AP with every region's box submitted once per class at its score.
pub fn classification_results(
    items: &[EvalItem],
    classes: &[String],
    store: &PredictionStore,
    image_root: &std::path::Path,
) -> Result<Value, EvalError> {
    let class_ids: BTreeMap<&str, u64> = classes
        .iter()
        .enumerate()
        .map(|(i, c)| (c.as_str(), i as u64 + 1))
        .collect();
    let mut image_ids: BTreeMap<&str, u64> = BTreeMap::new();
    let (mut gts, mut dts) = (Vec::new(), Vec::new());
    let mut scored = Vec::new();
    let mut generated = Vec::new();
    for (n, item) in items.iter().enumerate() {
        let p = prediction(store, item)?;
        let truth = normalise_answer(&item.answer);
        let best = p.scores.as_ref().and_then(|s| {
            s.iter()
                .max_by(|a, b| a.1.partial_cmp(b.1).unwrap_or(std::cmp::Ordering::Equal))
                .map(|(c, _)| normalise_answer(c))
        });
        scored.push((
            item.size.as_deref(),
            best.as_deref() == Some(truth.as_str()),
        ));
        let answer = normalise_answer(&p.answer);
        let in_vocabulary = class_ids.keys().any(|c| normalise_answer(c) == answer);
        generated.push((item.size.as_deref(), in_vocabulary && answer == truth));
        let (Some(bbox), Some(scores), Some(&category)) = (
            region_box(item, item.regions.len().saturating_sub(1), image_root),
            p.scores.as_ref(),
            class_ids.get(item.answer.trim()),
        ) else {
            continue;
        };
        let next = image_ids.len() as u64 + 1;
        let image_id = *image_ids
            .entry(item.image.as_deref().unwrap_or(""))
            .or_insert(next);
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
    Ok(json!({
        "questions": items.len(),
        "unanswered": unanswered(items, store),
        "accuracy": accuracy,
        "generated_accuracy": generated_accuracy,
        "mAP": ap.map(|s| s.ap),
        "AP50": ap.map(|s| s.ap50),
        "by_size": by_size,
        "generated_by_size": generated_by_size,
    }))
}

/// REC: an answer is right when its `Region [k]` is the target (or a
/// candidate with IoU >= 0.5 with it), or, for a no-match question, when
/// it names no region and says so.
pub fn rec_results(
    items: &[EvalItem],
    store: &PredictionStore,
    image_root: &std::path::Path,
) -> Result<Value, EvalError> {
    let mut pairs = Vec::new();
    let (mut positives, mut negatives) = ((0, 0), (0, 0));
    for item in items {
        let p = prediction(store, item)?;
        let chosen = parse_region_index(&p.answer);
        let correct = match (item.target, item.ground_truth) {
            // Proposals: the chosen candidate must overlap the ground truth.
            (Some(_), Some(truth)) => chosen
                .and_then(|k| region_box(item, k.checked_sub(1)?, image_root))
                .is_some_and(|b| rgpt_region::iou::bbox_iou_one(b, truth, false) >= 0.5),
            (Some(target), None) => chosen.is_some_and(|k| {
                k == target
                    || match (
                        region_box(item, k.saturating_sub(1), image_root),
                        region_box(item, target - 1, image_root),
                    ) {
                        (Some(a), Some(b)) => rgpt_region::iou::bbox_iou_one(a, b, false) >= 0.5,
                        _ => false,
                    }
            }),
            (None, _) => chosen.is_none() && p.answer.to_lowercase().contains("no corresponding"),
        };
        let counter = if item.target.is_some() {
            &mut positives
        } else {
            &mut negatives
        };
        counter.0 += usize::from(correct);
        counter.1 += 1;
        pairs.push((item.size.as_deref(), correct));
    }
    let (accuracy, by_size) = accuracy_by_size(pairs.into_iter());
    Ok(json!({
        "questions": items.len(),
        "unanswered": unanswered(items, store),
        "accuracy": accuracy,
        "accuracy_with_match": fraction(positives.0, positives.1),
        "accuracy_no_match": fraction(negatives.0, negatives.1),
        "no_match_questions": negatives.1,
        "by_size": by_size,
    }))
}

/// Captioning: pycocoevalcap's BLEU-1..4, METEOR (when its jar and Java
/// are found; `null` otherwise, never an approximation), ROUGE-L and CIDEr
/// of the generated captions against each question's references.
pub fn caption_results(
    items: &[EvalItem],
    store: &PredictionStore,
    meteor: crate::caption::MeteorSource,
) -> Result<Value, EvalError> {
    let mut predictions = BTreeMap::new();
    let mut references = BTreeMap::new();
    for item in items {
        predictions.insert(item.id.clone(), prediction(store, item)?.answer.clone());
        references.insert(item.id.clone(), item.references.clone());
    }
    let options = crate::caption::ScoreOptions {
        allow_missing: false,
        meteor,
    };
    let report = crate::caption::score_captions(&predictions, &references, &options)?;
    let mut value = serde_json::to_value(report.scores).unwrap_or(Value::Null);
    value["questions"] = json!(items.len());
    value["unanswered"] = unanswered(items, store);
    if let Some(why) = &report.meteor_unavailable {
        value["meteor_unavailable"] = json!(why);
    }
    Ok(value)
}

/// POPE's scores of the answers (its script's reading of each answer).
pub fn pope_results(items: &[EvalItem], store: &PredictionStore) -> Result<Value, EvalError> {
    let mut pairs = Vec::with_capacity(items.len());
    for item in items {
        let p = prediction(store, item)?;
        pairs.push((crate::pope::answer_is_yes(&p.answer), item.answer == "yes"));
    }
    let scores = crate::pope::pope_scores(pairs);
    let mut value = serde_json::to_value(scores).unwrap_or(Value::Null);
    value["questions"] = json!(items.len());
    value["unanswered"] = json!(unanswered(items, store));
    Ok(value)
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
