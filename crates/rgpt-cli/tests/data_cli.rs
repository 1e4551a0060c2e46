//! `rgpt data` end to end: the synthetic world, a builder on a fixture in
//! the published COCO layout, stats, and clean errors.
mod common;

use std::process::Command;

use common::{ok, rgpt, root};

#[test]
fn synth_build_and_stats() {
    let dir = std::env::temp_dir().join(format!("rgpt-data-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let world = dir.join("world");
    let stdout = ok(&rgpt(&[
        "data",
        "synth",
        "--out",
        world.to_str().unwrap(),
        "--images",
        "20",
        "--seed",
        "4",
    ]));
    assert!(stdout.starts_with("wrote 20 images"), "{stdout}");
    for task in [
        "synth-shape",
        "synth-color",
        "synth-caption",
        "synth-rec",
        "synth-image-caption",
    ] {
        assert!(world.join(format!("{task}.jsonl")).is_file(), "{task}");
    }
    assert!(world.join("images/000019.png").is_file());

    let stats = ok(&rgpt(&[
        "data",
        "stats",
        world.join("synth-shape.jsonl").to_str().unwrap(),
        "--json",
    ]));
    let stats: serde_json::Value = serde_json::from_str(&stats).unwrap();
    assert_eq!(stats["by_task"]["synth-shape"]["samples"], 20);

    let out = dir.join("coco.jsonl");
    let built = rgpt(&[
        "data",
        "build",
        "coco-cls",
        "--instances",
        "tests/fixtures/datasets/coco/instances_val2017.json",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(ok(&built).starts_with("wrote 3 samples"));
    let summary = String::from_utf8_lossy(&built.stderr);
    assert!(summary.contains("1  crowd annotation"), "{summary}");
    assert_eq!(std::fs::read_to_string(&out).unwrap().lines().count(), 3);

    let missing = rgpt(&[
        "data",
        "build",
        "llava",
        "--json",
        "/nonexistent/llava.json",
        "--out",
        out.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(!missing.status.success());
    assert!(
        stderr.starts_with("error: cannot read /nonexistent/llava.json")
            && !stderr.contains("panicked"),
        "{stderr}"
    );
    // The earlier output is untouched by the failed build.
    assert_eq!(std::fs::read_to_string(&out).unwrap().lines().count(), 3);
}

/// An installed `rgpt` has no checkout around it: `data synth` and `data
/// build` run in a fresh directory outside the repository, with the prompt
/// variants built into the binary, and `--prompts DIR` still overrides them.
#[test]
fn synth_and_build_from_any_directory() {
    let dir = std::env::temp_dir().join(format!("rgpt-data-cwd-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let cwd = dir.canonicalize().unwrap();
    let repo = root().canonicalize().unwrap();
    assert!(!cwd.starts_with(&repo) && !cwd.join("configs").exists());
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_rgpt"))
            .current_dir(&cwd)
            .args(args)
            .output()
            .expect("rgpt runs")
    };
    let stdout = ok(&run(&[
        "data", "synth", "--out", "world", "--images", "3", "--seed", "1",
    ]));
    assert!(stdout.starts_with("wrote 3 images"), "{stdout}");
    let shapes = std::fs::read_to_string(cwd.join("world/synth-shape.jsonl")).unwrap();
    assert_eq!(shapes.lines().count(), 3);
    assert!(shapes.contains("Answer the question using shape names."));
    assert!(cwd.join("world/images/000002.png").is_file());

    let instances = repo.join("tests/fixtures/datasets/coco/instances_val2017.json");
    let built = run(&[
        "data",
        "build",
        "coco-cls",
        "--instances",
        instances.to_str().unwrap(),
        "--out",
        "coco.jsonl",
    ]);
    assert!(ok(&built).starts_with("wrote 3 samples"));
    let coco = std::fs::read_to_string(cwd.join("coco.jsonl")).unwrap();
    assert!(coco.contains("Answer the question using COCO-80 category names."));

    // A build that keeps nothing fails and leaves the old output alone
    // (it used to replace it with an empty file).
    std::fs::write(
        cwd.join("no_annotations.json"),
        r#"{"images": [{"id": 1, "file_name": "a.jpg", "height": 8, "width": 8}],
            "annotations": [], "categories": [{"id": 1, "name": "cat"}]}"#,
    )
    .unwrap();
    let nothing = run(&[
        "data",
        "build",
        "coco-cls",
        "--instances",
        "no_annotations.json",
        "--out",
        "coco.jsonl",
    ]);
    let stderr = String::from_utf8_lossy(&nothing.stderr);
    assert!(!nothing.status.success(), "{stderr}");
    assert!(
        stderr.contains("no samples to write") && stderr.contains("coco.jsonl"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(cwd.join("coco.jsonl")).unwrap(),
        coco
    );

    // A prompts directory of one's own replaces the built-in variants.
    let prompts = cwd.join("prompts");
    std::fs::create_dir_all(&prompts).unwrap();
    for entry in std::fs::read_dir(repo.join("configs/prompts")).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap().replace(
            "Answer the question using shape names.",
            "Name the shape, please.",
        );
        std::fs::write(prompts.join(path.file_name().unwrap()), text).unwrap();
    }
    ok(&run(&[
        "data",
        "synth",
        "--out",
        "own",
        "--images",
        "3",
        "--seed",
        "1",
        "--prompts",
        "prompts",
    ]));
    let shapes = std::fs::read_to_string(cwd.join("own/synth-shape.jsonl")).unwrap();
    assert!(shapes.contains("Name the shape, please."), "{shapes}");
    assert!(!shapes.contains("Answer the question using shape names."));

    // A directory without prompt files is refused in one line.
    let empty = run(&[
        "data",
        "synth",
        "--out",
        "none",
        "--images",
        "3",
        "--prompts",
        "world/images",
    ]);
    let stderr = String::from_utf8_lossy(&empty.stderr);
    assert!(!empty.status.success());
    assert!(
        stderr.contains("holds no prompt files") && !stderr.contains("panicked"),
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn region_stats_equal_pycocotools() {
    let out = rgpt(&[
        "region",
        "stats",
        "--annotations",
        "tests/fixtures/datasets/coco/instances_val2017.json",
        "--json",
    ]);
    let ours: serde_json::Value = serde_json::from_str(&ok(&out)).unwrap();
    let expected: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("tests/fixtures/eval_metrics/region_stats.json"))
            .unwrap(),
    )
    .unwrap();
    // Exact: integer areas and boxes, compared as JSON numbers.
    let expected = expected["annotations"].as_object().unwrap();
    let ours = ours.as_object().unwrap();
    assert_eq!(ours.len(), expected.len());
    for (id, want) in expected {
        let got = &ours[id];
        assert_eq!(got["area"], want["area"], "annotation {id}");
        let got_box: Vec<f64> = serde_json::from_value(got["bbox"].clone()).unwrap();
        let want_box: Vec<f64> = serde_json::from_value(want["bbox"].clone()).unwrap();
        assert_eq!(got_box, want_box, "annotation {id}");
    }
}
