//! `rgpt train` end to end on the tiny fixture: a run from a YAML config,
//! the refusal to reuse an output directory by accident, resume, and the
//! trained model answering through `rgpt generate`.
mod common;

use common::{rgpt, root};

#[test]
fn train_resume_and_answer() {
    let dir = std::env::temp_dir().join(format!("rgpt-train-cli-{}", std::process::id()));
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
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let config = dir.join("train.yaml");
    std::fs::write(
        &config,
        format!(
            "model: {{pretrained: {}}}\ndata:\n  files: [{{path: coco.jsonl}}]\n  image_root: {}\n\
             stage: pretrain\nlr: 0.001\nglobal_batch: 2\nmicro_batch: 1\nsteps: 3\noutput_dir: run\n",
            root().join("tests/fixtures/rgpt-tiny").display(),
            root().join("tests/fixtures/datasets/coco/val2017").display()
        ),
    )
    .unwrap();
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
    assert!(
        resumed.status.success(),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
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
    assert!(
        answer.status.success(),
        "{}",
        String::from_utf8_lossy(&answer.stderr)
    );
}
