//! `rgpt demo`: a bad config is refused before any work starts, and
//! `--quick` trains a tiny RGPT from nothing and shows it learned: it
//! classifies held-out regions far better than with the regions shuffled
//! between questions, the pre-trained tower reads shape and colour off
//! held-out regions well above chance, and every stage's loss falls. It writes what the issue lists,
//! leaves a model `rgpt generate` can use, and on a rerun retrains nothing.
mod common;

use common::{ok, rgpt};

#[test]
fn a_demo_config_with_an_unknown_task_is_refused_before_any_work() {
    let dir = std::env::temp_dir().join(format!("rgpt-demo-bad-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let text = std::fs::read_to_string(common::root().join("configs/demo-quick.yaml")).unwrap();
    let bad = dir.join("bad.yaml");
    std::fs::write(&bad, text.replace("synth-rec:", "synth-recc:")).unwrap();
    let out = rgpt(&[
        "demo",
        "--config",
        bad.to_str().unwrap(),
        "--out",
        dir.join("run").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("synth-recc"), "{stderr}");
    assert!(
        !dir.join("run/world").exists(),
        "work started before the check"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn read_json(path: &std::path::Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_json::from_str(&text).unwrap()
}

/// configs/demo-quick.yaml's stages, in order.
const STAGES: [&str; 3] = ["language", "pretrain", "finetune"];

/// Lines in every stage's metrics log: a rerun that retrains appends.
fn logged_steps(run: &std::path::Path) -> usize {
    STAGES
        .iter()
        .map(|stage| {
            std::fs::read_to_string(run.join(stage).join("metrics.jsonl"))
                .unwrap()
                .lines()
                .count()
        })
        .sum()
}

#[test]
fn the_quick_demo_learns_and_leaves_a_usable_model() {
    let dir = std::env::temp_dir().join(format!("rgpt-demo-quick-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let run = dir.join("run");
    let run_arg = run.to_str().unwrap();
    // Run from a directory outside the repository: the configs and
    // prompts are built into the binary.
    let elsewhere = dir.join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rgpt"))
        .current_dir(&elsewhere)
        .args(["demo", "--quick", "--out", run_arg])
        .output()
        .unwrap();
    let stdout = ok(&out);
    assert!(stdout.contains("held-out results"), "{stdout}");
    assert!(stdout.contains("RGPT:"), "no dialogue printed: {stdout}");
    // The closing table gives each phase's wall time.
    for phase in [
        "| tower pre-training time |",
        "| `language` stage time |",
        "| `pretrain` stage time |",
        "| `finetune` stage time |",
        "| evaluation time |",
    ] {
        assert!(stdout.contains(phase), "no `{phase}` row: {stdout}");
    }

    let results = read_json(&run.join("results.json"));
    for key in [
        "region_cls_acc",
        "rec_acc",
        "caption_cider",
        "train_seconds",
        "eval_seconds",
    ] {
        assert!(results[key].is_number(), "results.json lacks {key}");
    }
    for size in ["small", "medium", "large"] {
        assert!(
            results["by_size"][size]["region_cls_acc"].is_number(),
            "results.json lacks by_size.{size}"
        );
    }
    // The decoder reads its regions: held-out shape classification beats
    // the same questions asked about other questions' regions (the demo's
    // control, `region_cls_shuffled_acc`) by a clear margin. A decoder
    // that ignores regions scores the same on both, whatever it learned
    // from the image and the question.
    let shape = |key: &str| results[key].as_f64().unwrap_or_else(|| panic!("no {key}"));
    let (cls, shuffled) = (shape("region_cls_acc"), shape("region_cls_shuffled_acc"));
    assert!(
        cls >= 0.6 && cls >= shuffled + 0.3,
        "shape {cls:.3} against {shuffled:.3} with the regions shuffled"
    );
    // Six shapes and six colours: chance is 1/6 for each. `tower.accuracy`
    // is [head, accuracy] pairs, on held-out regions.
    let tower: std::collections::HashMap<String, f64> = results["tower"]["accuracy"]
        .as_array()
        .unwrap()
        .iter()
        .map(|pair| {
            (
                pair[0].as_str().unwrap().to_string(),
                pair[1].as_f64().unwrap(),
            )
        })
        .collect();
    assert!(
        tower["shape"] >= 0.4,
        "tower shape accuracy {}",
        tower["shape"]
    );
    assert!(
        tower["color"] >= 0.8,
        "tower colour accuracy {}",
        tower["color"]
    );
    // Losses, as means over a stage's first and last tenth of steps (one
    // batch is noisy): the language stage, from random weights, more than
    // halves its loss; the image stages, which start from trained parts,
    // still lower theirs by over a tenth.
    for (stage, factor) in [("language", 0.5), ("pretrain", 0.9), ("finetune", 0.9)] {
        let losses: Vec<f64> = std::fs::read_to_string(run.join(stage).join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|line| {
                let step: serde_json::Value = serde_json::from_str(line).unwrap();
                step["loss"].as_f64().unwrap()
            })
            .collect();
        let tenth = (losses.len() / 10).max(1);
        let mean = |window: &[f64]| window.iter().sum::<f64>() / window.len() as f64;
        let (first, last) = (
            mean(&losses[..tenth]),
            mean(&losses[losses.len() - tenth..]),
        );
        assert!(last < first * factor, "{stage}: loss {first} -> {last}");
    }

    let png = std::fs::read(run.join("samples.png")).unwrap();
    assert!(png.starts_with(b"\x89PNG"), "samples.png is not a PNG");

    // The trained model is an ordinary checkpoint.
    let image = run.join("world/test/images/000000.png");
    let answer = ok(&rgpt(&[
        "generate",
        "--model",
        run.join("model").to_str().unwrap(),
        "--image",
        image.to_str().unwrap(),
        "--region",
        "box:0,0,32,32",
        "--prompt",
        "What is in the region <region>? Answer the question using shape names.",
        "--max-new-tokens",
        "8",
    ]));
    assert!(!answer.trim().is_empty(), "rgpt generate answered nothing");

    // A rerun finds every phase done and trains nothing more.
    let steps = logged_steps(&run);
    let tower = std::fs::metadata(run.join("tower/vision_tower.safetensors"))
        .unwrap()
        .modified()
        .unwrap();
    let again = ok(&rgpt(&["demo", "--quick", "--out", run_arg]));
    assert!(again.contains("held-out results"), "{again}");
    assert_eq!(logged_steps(&run), steps, "the rerun trained again");
    let tower_again = std::fs::metadata(run.join("tower/vision_tower.safetensors"))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(tower, tower_again, "the rerun pre-trained the tower again");
    let _ = std::fs::remove_dir_all(&dir);
}
