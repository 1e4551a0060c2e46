//! `rgpt data` end to end: the synthetic world, a builder on a fixture in
//! the published COCO layout, stats, and clean errors.
mod common;

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
