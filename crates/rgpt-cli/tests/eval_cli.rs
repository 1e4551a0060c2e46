//! `rgpt eval` end to end: the metrics-only modes against the reference
//! tools' numbers in the fixtures, and the task runners on the synthetic
//! world with the tiny RGPT checkpoint (numbers meaningless; form checked).
mod common;

use std::path::PathBuf;

use common::{ok, rgpt, root};

fn scratch(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rgpt-eval-cli-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn captions_match_pycocoevalcap_and_missing_ids_are_reported() {
    let dir = scratch("captions");
    let expected: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("tests/fixtures/caption_metrics/expected.json"))
            .unwrap(),
    )
    .unwrap();
    std::fs::write(dir.join("pred.json"), expected["preds"].to_string()).unwrap();
    std::fs::write(dir.join("refs.json"), expected["refs"].to_string()).unwrap();
    let (pred, refs) = (dir.join("pred.json"), dir.join("refs.json"));
    let out = ok(&rgpt(&[
        "eval",
        "captions",
        "--pred",
        pred.to_str().unwrap(),
        "--refs",
        refs.to_str().unwrap(),
        "--json",
    ]));
    let scores: serde_json::Value = serde_json::from_str(&out).unwrap();
    for (name, want) in expected["corpus"].as_object().unwrap() {
        let tol = if name == "METEOR" { 1e-4 } else { 1e-6 };
        let got = scores[name].as_f64().unwrap();
        assert!(
            (got - want.as_f64().unwrap()).abs() < tol,
            "{name}: {got} vs {want}"
        );
    }
    // A prediction without references: an error naming it, unless allowed.
    let mut preds = expected["preds"].clone();
    preds["not-a-reference-id"] = serde_json::json!("a cat");
    std::fs::write(dir.join("pred2.json"), preds.to_string()).unwrap();
    let pred2 = dir.join("pred2.json");
    let args = [
        "eval",
        "captions",
        "--pred",
        pred2.to_str().unwrap(),
        "--refs",
        refs.to_str().unwrap(),
    ];
    let out = rgpt(&args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("not-a-reference-id"),
        "{stderr}"
    );
    // The flag the message names is the one the command takes.
    assert!(stderr.contains("--allow-missing"), "{stderr}");
    // Without a METEOR jar anywhere, the scores come without METEOR and
    // the warning says where it looked (it used to say `searched: `).
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rgpt"))
        .args(["eval", "captions", "--pred"])
        .arg(&pred)
        .arg("--refs")
        .arg(&refs)
        .current_dir(&dir)
        .env_remove("RGPT_METEOR_JAR")
        .env_remove("VIRTUAL_ENV")
        .env("PATH", dir.join("no-python"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("METEOR unavailable")
            && stderr.contains("looked in: $RGPT_METEOR_JAR (unset)")
            && stderr.contains("$VIRTUAL_ENV (unset)")
            && stderr.contains("not importable"),
        "{stderr}"
    );
    std::fs::write(dir.join("bad.json"), b"{\"a\": \"\xff\"}").unwrap();
    let out = rgpt(&[
        "eval",
        "captions",
        "--pred",
        dir.join("bad.json").to_str().unwrap(),
        "--refs",
        refs.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("is not UTF-8") && !stderr.contains("panicked"),
        "{stderr}"
    );
}

#[test]
fn pope_and_coco_ap_score_given_answers() {
    let dir = scratch("pope");
    let case: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("tests/fixtures/eval_metrics/pope.json")).unwrap(),
    )
    .unwrap();
    let (mut questions, mut answers) = (String::new(), String::new());
    for (i, (answer, label)) in case["answers"]
        .as_array()
        .unwrap()
        .iter()
        .zip(case["labels"].as_array().unwrap())
        .enumerate()
    {
        questions.push_str(&serde_json::json!({"question_id": i, "image": "x.jpg", "text": "Is there a dog?", "label": label}).to_string());
        questions.push('\n');
        answers.push_str(&serde_json::json!({"question_id": i, "text": answer}).to_string());
        answers.push('\n');
    }
    std::fs::write(dir.join("q.jsonl"), questions).unwrap();
    std::fs::write(dir.join("a.jsonl"), answers).unwrap();
    let out = ok(&rgpt(&[
        "eval",
        "pope",
        "--questions",
        dir.join("q.jsonl").to_str().unwrap(),
        "--answers",
        dir.join("a.jsonl").to_str().unwrap(),
        "--json",
    ]));
    let scores: serde_json::Value = serde_json::from_str(&out).unwrap();
    for name in ["accuracy", "precision", "recall", "f1", "yes_ratio"] {
        assert!(
            (scores[name].as_f64().unwrap() - case[name].as_f64().unwrap()).abs() < 1e-12,
            "{name}"
        );
    }

    // Every annotation scored highest for its own category: AP is 1 over
    // the categories with (non-crowd) ground truth.
    let coco: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            root().join("tests/fixtures/datasets/coco/instances_val2017.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let mut lines = String::new();
    for ann in coco["annotations"].as_array().unwrap() {
        let own = ann["category_id"].as_u64().unwrap();
        let scores: serde_json::Map<String, serde_json::Value> = coco["categories"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                let id = c["id"].as_u64().unwrap();
                (
                    c["name"].as_str().unwrap().to_string(),
                    serde_json::json!(if id == own { 0.9 } else { 0.01 }),
                )
            })
            .collect();
        lines.push_str(
            &serde_json::json!({"annotation_id": ann["id"], "scores": scores}).to_string(),
        );
        lines.push('\n');
    }
    std::fs::write(dir.join("scores.jsonl"), lines).unwrap();
    let out = ok(&rgpt(&[
        "eval",
        "coco-ap",
        "--annotations",
        "tests/fixtures/datasets/coco/instances_val2017.json",
        "--scores",
        dir.join("scores.jsonl").to_str().unwrap(),
        "--json",
    ]));
    let summary: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(
        (summary["ap"].as_f64().unwrap() - 1.0).abs() < 1e-9,
        "{summary}"
    );
}

#[test]
fn runners_evaluate_the_synthetic_world_and_resume() {
    let dir = scratch("run");
    let world = dir.join("world");
    ok(&rgpt(&[
        "data",
        "synth",
        "--out",
        world.to_str().unwrap(),
        "--images",
        "3",
        "--seed",
        "5",
    ]));
    ok(&rgpt(&[
        "data",
        "build",
        "synth-pope",
        "--world",
        world.to_str().unwrap(),
        "--out",
        world.join("pope.jsonl").to_str().unwrap(),
    ]));
    let model = "tests/fixtures/rgpt-tiny";
    for (command, data, key) in [
        ("coco-cls", "synth-shape.jsonl", "mAP"),
        ("rec", "synth-rec.jsonl", "accuracy"),
        ("cap", "synth-caption.jsonl", "CIDEr"),
    ] {
        let out = dir.join(command);
        let data = world.join(data);
        let args = [
            "eval",
            command,
            "--model",
            model,
            "--data",
            data.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--device",
            "cpu",
            "--max-new-tokens",
            "4",
            "--batch-size",
            "4",
        ];
        let table = ok(&rgpt(&args));
        assert!(table.starts_with('|'), "{table}");
        let results: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap())
                .unwrap();
        assert!(results[key].is_number(), "{command}: {results}");
        assert!(out.join("results.md").is_file());
        // A second run finds every answer done and scores the same.
        ok(&rgpt(&args));
        let again: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap())
                .unwrap();
        assert_eq!(again, results);
        // A run stopped mid-write (half the answers, then a torn line)
        // resumes to the uninterrupted run's answers, line by line: the
        // same questions in the same order, none twice, and for
        // classification the same answers and class probabilities (1e-5:
        // other batches, padded otherwise). Generated text is not compared:
        // the random fixture's next-token distribution is nearly flat, so
        // 1e-6 of padding difference can flip a greedy choice.
        let predictions = out.join("predictions.jsonl");
        let whole = std::fs::read_to_string(&predictions).unwrap();
        let lines: Vec<&str> = whole.lines().collect();
        assert!(lines.len() >= 4, "{command}: {} answers", lines.len());
        let half = lines[..lines.len() / 2].join("\n");
        std::fs::write(&predictions, format!("{half}\n{{\"id\": \"tor")).unwrap();
        ok(&rgpt(&args));
        let resumed = std::fs::read_to_string(&predictions).unwrap();
        let parse = |text: &str| -> Vec<serde_json::Value> {
            text.lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect()
        };
        let (whole, resumed) = (parse(&whole), parse(&resumed));
        assert_eq!(
            whole.len(),
            resumed.len(),
            "{command}: no answer lost or repeated"
        );
        for (a, b) in whole.iter().zip(&resumed) {
            assert_eq!(a["id"], b["id"], "{command}");
            if let Some(scores) = a["scores"].as_object() {
                assert_eq!(a["answer"], b["answer"], "{command}: {}", a["id"]);
                for (class, p) in scores {
                    let q = b["scores"][class].as_f64().unwrap();
                    assert!((p.as_f64().unwrap() - q).abs() < 1e-5, "{command}: {class}");
                }
            }
        }
    }
    let out = dir.join("pope-run");
    ok(&rgpt(&[
        "eval",
        "pope",
        "--model",
        model,
        "--questions",
        world.join("pope.jsonl").to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--task",
        "pope-random",
        "--device",
        "cpu",
        "--dtype",
        "f32",
        "--threads",
        "1",
    ]));
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    assert_eq!(results["questions"].as_u64(), Some(6));
    // The task is the one named, never guessed from the file name.
    let table = std::fs::read_to_string(out.join("results.md")).unwrap();
    assert!(table.contains("pope-random"), "{table}");
    assert!(results["yes_ratio"].is_number());
}
