//! `rgpt train` end to end on the tiny fixture: a run from a YAML config,
//! the refusal to reuse an output directory by accident, resume, and the
//! trained model answering through `rgpt generate`.
mod common;

use std::path::PathBuf;

use common::{ok, rgpt, root};

/// A fresh directory `rgpt-{tag}-{pid}` under the temp dir with COCO
/// classification data built by `rgpt data build` and `train.yaml`: a
/// pre-training run of the tiny fixture into `run/`, ending with the YAML
/// lines `tail`. Returns the directory and the config's path.
fn run_dir(tag: &str, tail: &str) -> (PathBuf, PathBuf) {
    let dir = std::env::temp_dir().join(format!("rgpt-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let data = dir.join("coco.jsonl");
    let out = rgpt(&[
        "data",
        "build",
        "coco-cls",
        "--instances",
        "tests/fixtures/datasets/coco/instances_val2017.json",
        "--out",
        data.to_str().unwrap(),
    ]);
    ok(&out);
    let config = dir.join("train.yaml");
    std::fs::write(
        &config,
        format!(
            "model: {{pretrained: {}}}\ndata:\n  files: [{{path: coco.jsonl}}]\n  image_root: {}\n\
             stage: pretrain\nlr: 0.001\nglobal_batch: 2\nmicro_batch: 1\noutput_dir: run\n{tail}",
            root().join("tests/fixtures/rgpt-tiny").display(),
            root()
                .join("tests/fixtures/datasets/coco/val2017")
                .display()
        ),
    )
    .unwrap();
    (dir, config)
}

#[test]
fn train_resume_and_answer() {
    let (dir, config) = run_dir("train-cli", "steps: 3\n");
    let config = config.to_str().unwrap();
    let first = rgpt(&["train", "--config", config]);
    let stderr = String::from_utf8_lossy(&first.stderr);
    assert!(first.status.success(), "{stderr}");
    assert!(
        stderr.contains("step 3/3: loss"),
        "plain progress lines off a terminal: {stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("run/metrics.jsonl"))
            .unwrap()
            .lines()
            .count(),
        3
    );

    let again = rgpt(&["train", "--config", config]);
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(
        !again.status.success() && stderr.contains("already holds a run"),
        "{stderr}"
    );
    let resumed = rgpt(&["train", "--config", config, "--resume"]);
    ok(&resumed);
    assert!(String::from_utf8_lossy(&resumed.stderr).contains("resuming at step 3 of 3"));

    let model = dir.join("run/model");
    let answer = rgpt(&[
        "generate",
        "--model",
        model.to_str().unwrap(),
        "--image",
        "tests/fixtures/datasets/coco/val2017/000000000139.jpg",
        "--region",
        "box:10,8,30,40",
        "--prompt",
        "What is <region>?",
        "--max-new-tokens",
        "3",
        "--device",
        "cpu",
    ]);
    ok(&answer);
}

/// Ctrl-C stops `rgpt train` after the step in progress, checkpointed,
/// and says how to resume; resuming gives the uninterrupted run's losses,
/// checkpoint and model, bit for bit. (Before issue 25 a Ctrl-C killed the run and
/// lost the steps since the last checkpoint, without a word.)
#[test]
fn ctrl_c_checkpoints_and_says_how_to_resume_exactly() {
    const STEPS: u64 = 400;
    let tail = format!("steps: {STEPS}\ncheckpoint_every: 1000\n");
    let (dir, config) = run_dir("train-sigint", &tail);
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_rgpt"))
        .args(["train", "--config"])
        .arg(&config)
        .current_dir(root())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let metrics = dir.join("run/metrics.jsonl");
    let logged = || {
        std::fs::read_to_string(&metrics)
            .map(|t| t.lines().count())
            .unwrap_or(0)
    };
    let started = std::time::Instant::now();
    while logged() < 2 {
        assert!(
            started.elapsed().as_secs() < 120,
            "the run logged no steps in 2 minutes"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let signal = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(signal.success());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(
        stderr.contains("interrupted after step")
            && stderr.contains(&format!(
                "resume with: rgpt train --config {} --resume",
                config.display()
            )),
        "{stderr}"
    );
    // The checkpoint holds every logged step, though checkpoint_every is
    // far off.
    let state: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("run/checkpoint/state.json")).unwrap(),
    )
    .unwrap();
    let step = state["run"]["step"].as_u64().unwrap();
    assert!((2..STEPS).contains(&step), "{state}");
    assert_eq!(logged() as u64, step);

    // `rgpt train --resume` finishes it as if it had never stopped: the
    // same losses at every step, and the same checkpoint (weights, every
    // optimiser tensor, state.json) and model, byte for byte, as a run
    // that was not interrupted.
    let resumed = rgpt(&["train", "--config", config.to_str().unwrap(), "--resume"]);
    ok(&resumed);
    let (whole_dir, whole_config) = run_dir("train-whole", &tail);
    let whole = rgpt(&["train", "--config", whole_config.to_str().unwrap()]);
    ok(&whole);
    let losses = |run: &std::path::Path| -> Vec<(u64, f64)> {
        std::fs::read_to_string(run.join("run/metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|line| {
                let record: serde_json::Value = serde_json::from_str(line).unwrap();
                (
                    record["step"].as_u64().unwrap(),
                    record["loss"].as_f64().unwrap(),
                )
            })
            .collect()
    };
    let (cut, uncut) = (losses(&dir), losses(&whole_dir));
    assert_eq!(cut.len() as u64, STEPS);
    assert_eq!(cut, uncut, "the losses differ after resuming");
    for file in [
        "checkpoint/model.safetensors",
        "checkpoint/optimizer.safetensors",
        "checkpoint/state.json",
        "model/model.safetensors",
    ] {
        let read = |run: &std::path::Path| std::fs::read(run.join("run").join(file)).unwrap();
        assert!(
            read(&dir) == read(&whole_dir),
            "run/{file} differs after resuming"
        );
    }
    let _ = std::fs::remove_dir_all(&whole_dir);
    let _ = std::fs::remove_dir_all(&dir);
}
