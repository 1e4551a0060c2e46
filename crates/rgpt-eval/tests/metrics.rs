//! COCO box AP and POPE against their reference tools, on fixtures made by
//! `scripts/fixtures/eval_metrics.py` (pycocotools 2.0.11 COCOeval; POPE's
//! evaluate.py rules): all 12 summarize() stats within 1e-6, POPE exactly.
use std::path::PathBuf;

use rgpt_eval::coco_ap::{coco_box_ap, Detection, GroundTruth, Params};
use rgpt_eval::pope::{answer_is_yes, pope_scores};
use serde::Deserialize;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/eval_metrics")
        .join(name)
}

#[derive(Deserialize)]
struct CocoCase {
    ground_truth: GtFile,
    detections: Vec<DtJson>,
    stats: Vec<f64>,
}

#[derive(Deserialize)]
struct GtFile {
    images: Vec<IdOnly>,
    annotations: Vec<AnnJson>,
    categories: Vec<IdOnly>,
}

#[derive(Deserialize)]
struct IdOnly {
    id: u64,
}

#[derive(Deserialize)]
struct AnnJson {
    id: u64,
    image_id: u64,
    category_id: u64,
    bbox: [f64; 4],
    area: f64,
    iscrowd: u8,
}

#[derive(Deserialize)]
struct DtJson {
    image_id: u64,
    category_id: u64,
    bbox: [f64; 4],
    score: f64,
}

/// Both cases: every ground truth detected (recalls of 1), and 40% of them
/// missed (recalls below 1, which tell implementations apart).
#[test]
fn box_ap_matches_pycocotools_cocoeval() {
    for file in ["coco_ap.json", "coco_ap_missed.json"] {
        let stats = box_ap_case(file);
        if file == "coco_ap_missed.json" {
            let below_one = stats[6..].iter().filter(|&&r| r < 0.95).count();
            assert_eq!(
                below_one, 6,
                "every recall of the missed case is below 1: {stats:?}"
            );
        }
    }
}

/// Checks one fixture's 12 stats; returns pycocotools'.
fn box_ap_case(file: &str) -> Vec<f64> {
    let case: CocoCase =
        serde_json::from_str(&std::fs::read_to_string(fixture(file)).unwrap()).unwrap();
    let gt: Vec<GroundTruth> = case
        .ground_truth
        .annotations
        .iter()
        .map(|a| GroundTruth {
            id: a.id,
            image_id: a.image_id,
            category_id: a.category_id,
            bbox: a.bbox,
            area: a.area,
            iscrowd: a.iscrowd != 0,
        })
        .collect();
    let dt: Vec<Detection> = case
        .detections
        .iter()
        .map(|d| Detection {
            image_id: d.image_id,
            category_id: d.category_id,
            bbox: d.bbox,
            score: d.score,
        })
        .collect();
    let categories: Vec<u64> = case.ground_truth.categories.iter().map(|c| c.id).collect();
    let images: Vec<u64> = case.ground_truth.images.iter().map(|i| i.id).collect();
    let summary = coco_box_ap(&gt, &dt, &categories, &images, &Params::default());
    let names = [
        "AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl",
    ];
    assert_eq!(case.stats.len(), 12, "{file}");
    for ((name, ours), theirs) in names.iter().zip(summary.stats()).zip(&case.stats) {
        assert!(
            (ours - theirs).abs() < 1e-6,
            "{file}: {name}: {ours} vs pycocotools {theirs}"
        );
    }
    // Category 8 has no ground truth: it is left out, not counted as 0.
    assert!(summary.ap > 0.4, "{file}");
    case.stats
}

#[derive(Deserialize)]
struct PopeCase {
    answers: Vec<String>,
    labels: Vec<String>,
    predictions: Vec<String>,
    accuracy: f64,
    precision: f64,
    recall: f64,
    f1: f64,
    yes_ratio: f64,
}

#[test]
fn pope_reads_answers_and_scores_as_its_script() {
    let case: PopeCase =
        serde_json::from_str(&std::fs::read_to_string(fixture("pope.json")).unwrap()).unwrap();
    let ours: Vec<&str> = case
        .answers
        .iter()
        .map(|a| if answer_is_yes(a) { "yes" } else { "no" })
        .collect();
    assert_eq!(ours, case.predictions);
    let scores = pope_scores(
        case.answers
            .iter()
            .zip(&case.labels)
            .map(|(a, l)| (answer_is_yes(a), l == "yes")),
    );
    for (ours, theirs, name) in [
        (scores.accuracy, case.accuracy, "accuracy"),
        (scores.precision, case.precision, "precision"),
        (scores.recall, case.recall, "recall"),
        (scores.f1, case.f1, "f1"),
        (scores.yes_ratio, case.yes_ratio, "yes_ratio"),
    ] {
        assert!((ours - theirs).abs() < 1e-12, "{name}: {ours} vs {theirs}");
    }
}

/// REC with proposals: right when the chosen candidate overlaps the
/// ground truth (IoU >= 0.5), whichever index that is. Built from a
/// RefCOCOg fixture through the task runners' items (feature `runner`).
#[cfg(feature = "runner")]
#[test]
fn rec_with_proposals_scores_by_overlap_with_the_ground_truth() {
    use rgpt_data::builders::refcocog::{build_refcocog_rec_eval, Proposal, RefcocogOptions};
    use rgpt_data::readers::coco::CocoDataset;
    use rgpt_data::readers::refcoco::read_refs;
    use rgpt_eval::items::items_of;
    use rgpt_eval::predictions::{Prediction, PredictionStore};
    let data =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/datasets/refcocog");
    let refs = read_refs(&data.join("refs(umd).p")).unwrap();
    let instances = CocoDataset::read(&data.join("instances.json")).unwrap();
    let [x, y, w, h] = instances.annotations[0].bbox;
    // Two proposals both overlap annotation 1 (IoU >= 0.5), one is far away.
    let proposals = vec![
        Proposal {
            image_id: 139,
            bbox: [x, y, w, h - 1.0],
            score: 0.9,
        },
        Proposal {
            image_id: 139,
            bbox: [x + 1.0, y + 1.0, w - 1.0, h - 2.0],
            score: 0.8,
        },
        Proposal {
            image_id: 139,
            bbox: [45.0, 35.0, 5.0, 5.0],
            score: 0.7,
        },
    ];
    let prompts = rgpt_data::PromptBank::from_dir(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../configs/prompts"),
    )
    .unwrap();
    let built = build_refcocog_rec_eval(
        &instances,
        &refs,
        &proposals,
        &prompts,
        &RefcocogOptions::default(),
    )
    .unwrap();
    let sample = built
        .samples
        .iter()
        .find(|s| s.meta.as_ref().unwrap()["ref_id"] == 0)
        .unwrap();
    let items = items_of(sample).unwrap();
    let dir = std::env::temp_dir().join(format!("rgpt-rec-proposals-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (answer, right) in [
        ("Region [1].", true),
        ("region [2]", true),
        ("Region [3].", false),
        ("Region [0]", false),
        ("the man", false),
    ] {
        let path = dir.join(format!("p{}.jsonl", answer.len()));
        let _ = std::fs::remove_file(&path);
        let mut store = PredictionStore::open(&path).unwrap();
        store
            .append(vec![Prediction {
                id: items[0].id.clone(),
                answer: answer.into(),
                scores: None,
                error: None,
            }])
            .unwrap();
        let results = rgpt_eval::results::rec_results(&items, &store, &dir).unwrap();
        assert_eq!(
            results["accuracy"].as_f64(),
            Some(if right { 1.0 } else { 0.0 }),
            "{answer}"
        );
    }
}
