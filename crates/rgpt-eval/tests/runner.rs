//! The task runners end to end on the synthetic world with the tiny RGPT
//! fixture: every question is answered, in batches, resumably; the results
//! have the documented form. The numbers mean nothing for an untrained
//! model; their range and the resume behaviour are what is checked.
use std::path::{Path, PathBuf};

use rgpt_data::format::read_all_samples;
use rgpt_data::synth::{write_world, SynthConfig};
use rgpt_data::PromptBank;
use rgpt_eval::caption::MeteorSource;
use rgpt_eval::items::{items_of, EvalItem, TaskKind};
use rgpt_eval::predictions::PredictionStore;
use rgpt_eval::results::{classification_results, markdown, rec_results};
use rgpt_eval::runner::Evaluator;
use rgpt_eval::{evaluate_task, TaskOptions};
use rgpt_llm::Template;
use rgpt_model::chat::RegionGenerator;
use tch::{Device, Kind};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn world(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rgpt-eval-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let prompts = PromptBank::from_dir(&root().join("configs/prompts")).unwrap();
    let config = SynthConfig {
        images: 4,
        seed: 9,
        ..SynthConfig::default()
    };
    write_world(&config, &prompts, &dir).unwrap();
    dir
}

fn items(dir: &Path, task: &str) -> Vec<EvalItem> {
    read_all_samples(&dir.join(format!("{task}.jsonl")))
        .unwrap()
        .iter()
        .flat_map(|s| items_of(s).unwrap())
        .collect()
}

#[test]
fn classification_and_rec_run_resume_and_report() {
    let dir = world("run");
    let generator = RegionGenerator::load(
        &root().join("tests/fixtures/rgpt-tiny"),
        Device::Cpu,
        Kind::Float,
    )
    .unwrap();
    let evaluator = Evaluator {
        generator: &generator,
        image_root: dir.clone(),
        batch_size: 3,
        max_new_tokens: 4,
        template: Template::VicunaV1,
    };
    let shapes = items(&dir, "synth-shape");
    assert!(shapes.iter().all(|i| i.kind == TaskKind::Classification));
    // One question per object, each with the gold turns before it.
    assert_eq!(shapes[1].history.len(), 1);
    assert_eq!(shapes[1].regions.len(), 2);
    let classes: Vec<String> = ["circle", "square", "triangle", "star", "cross", "diamond"]
        .map(String::from)
        .to_vec();
    let path = dir.join("predictions-shape.jsonl");
    let mut store = PredictionStore::open(&path).unwrap();
    let mut progress = Vec::new();
    evaluator
        .answer(&shapes, &classes, &mut store, &mut |done, total| {
            progress.push((done, total))
        })
        .unwrap();
    assert_eq!(store.len(), shapes.len());
    assert_eq!(progress.last(), Some(&(shapes.len(), shapes.len())));
    let p = store.get(&shapes[0].id).unwrap();
    let total: f64 = p.scores.as_ref().unwrap().values().sum();
    assert!(
        (total - 1.0).abs() < 1e-9,
        "class probabilities sum to 1: {total}"
    );

    let results = classification_results(&shapes, &classes, &store, &dir).unwrap();
    for key in ["accuracy", "generated_accuracy", "mAP"] {
        let v = results[key].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&v), "{key} = {v}");
    }
    assert!(
        results["by_size"].as_object().unwrap().len() >= 2,
        "{results}"
    );
    let table = markdown("synth-shape", TaskKind::Classification, &results);
    assert!(table.contains("| mAP |"), "{table}");

    // A run stopped mid-write resumes: the torn line is dropped and only
    // the missing answers are generated again.
    let text = std::fs::read_to_string(&path).unwrap();
    let keep: Vec<&str> = text.lines().take(2).collect();
    std::fs::write(&path, format!("{}\n{{\"id\": \"torn", keep.join("\n"))).unwrap();
    let mut store = PredictionStore::open(&path).unwrap();
    assert_eq!(store.len(), 2);
    let mut first = None;
    evaluator
        .answer(&shapes, &classes, &mut store, &mut |done, _| {
            first.get_or_insert(done);
        })
        .unwrap();
    assert_eq!(first, Some(2));
    assert_eq!(PredictionStore::open(&path).unwrap().len(), shapes.len());
    // Line by line, the resumed file is the uninterrupted run's: the same
    // questions in the same order, none twice, and the same class
    // probabilities (1e-5: the resumed batches are other groupings of the
    // questions, padded differently). The generated answers are not
    // compared: the random fixture's next-token distribution is nearly
    // flat, so that much difference can flip a greedy choice.
    let parse = |text: &str| -> Vec<rgpt_eval::predictions::Prediction> {
        text.lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    };
    let (whole, resumed) = (
        parse(&text),
        parse(&std::fs::read_to_string(&path).unwrap()),
    );
    assert_eq!(whole.len(), shapes.len());
    assert_eq!(resumed.len(), whole.len(), "no line lost or repeated");
    for (a, b) in whole.iter().zip(&resumed) {
        assert_eq!((&a.id, &a.error), (&b.id, &b.error));
        let (sa, sb) = (a.scores.as_ref().unwrap(), b.scores.as_ref().unwrap());
        assert_eq!(sa.len(), classes.len(), "{}", a.id);
        assert!(sa.keys().eq(sb.keys()), "{}", a.id);
        for (class, p) in sa {
            assert!(
                (p - sb[class]).abs() < 1e-5,
                "{} {class}: {p} vs {}",
                a.id,
                sb[class]
            );
        }
    }

    let rec = items(&dir, "synth-rec");
    let mut store = PredictionStore::open(&dir.join("predictions-rec.jsonl")).unwrap();
    evaluator
        .answer(&rec, &[], &mut store, &mut |_, _| {})
        .unwrap();
    let results = rec_results(&rec, &store, &dir).unwrap();
    assert_eq!(results["questions"].as_u64(), Some(rec.len() as u64));
    assert!((0.0..=1.0).contains(&results["accuracy"].as_f64().unwrap()));
}

#[test]
fn evaluate_task_is_the_items_answered_and_scored_and_refuses_another_task() {
    let dir = world("task");
    let generator = RegionGenerator::load(
        &root().join("tests/fixtures/rgpt-tiny"),
        Device::Cpu,
        Kind::Float,
    )
    .unwrap();
    let evaluator = Evaluator {
        generator: &generator,
        image_root: dir.clone(),
        batch_size: 4,
        max_new_tokens: 4,
        template: Template::VicunaV1,
    };
    let shape_file = dir.join("synth-shape.jsonl");
    let options = TaskOptions {
        limit: Some(2),
        classes: Vec::new(),
        meteor: MeteorSource::Off,
        shuffle_regions: false,
    };
    let mut calls = 0;
    let scored = evaluate_task(
        &evaluator,
        &shape_file,
        TaskKind::Classification,
        &options,
        &dir.join("task-shape.jsonl"),
        &mut |_, _| calls += 1,
    )
    .unwrap();
    assert!(calls > 0, "no progress reported");

    // The same by hand: the first two samples' questions, the closed set of
    // their answers, answered and scored.
    let samples = read_all_samples(&shape_file).unwrap();
    let items: Vec<EvalItem> = samples[..2]
        .iter()
        .flat_map(|s| items_of(s).unwrap())
        .collect();
    let classes: Vec<String> = items
        .iter()
        .map(|i| i.answer.trim().to_string())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut store = PredictionStore::open(&dir.join("by-hand-shape.jsonl")).unwrap();
    evaluator
        .answer(&items, &classes, &mut store, &mut |_, _| {})
        .unwrap();
    let by_hand = classification_results(&items, &classes, &store, &dir).unwrap();
    assert_eq!(scored.task, "synth-shape");
    assert_eq!(scored.questions, items.len());
    assert_eq!(scored.results, by_hand);

    // A file of another task is refused before any question is answered.
    let predictions = dir.join("task-rec-as-shape.jsonl");
    let err = evaluate_task(
        &evaluator,
        &dir.join("synth-rec.jsonl"),
        TaskKind::Classification,
        &options,
        &predictions,
        &mut |_, _| {},
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("`synth-rec` samples") && err.contains("Classification"),
        "{err}"
    );
    assert!(!predictions.exists(), "answered before the check");
}
