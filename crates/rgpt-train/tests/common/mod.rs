//! What the trainer tests share: the repository's paths, a run directory
//! with a fine-tuning config on the tiny RGPT fixture, a small from-scratch
//! spec and weight snapshots. Each test binary uses only some of it.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;

use rgpt_data::builders::classification::{build_classification, ClassificationOptions};
use rgpt_data::format::write_samples;
use rgpt_data::readers::coco::CocoDataset;
use rgpt_data::PromptBank;
use rgpt_train::scratch::TinySpec;
use tch::Tensor;

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The committed tiny RGPT checkpoint.
pub fn fixture() -> PathBuf {
    root().join("tests/fixtures/rgpt-tiny")
}

/// A fresh run directory, `rgpt-train-{tag}-{pid}` under the temp dir,
/// holding a small COCO classification set (`coco.jsonl`) and `train.yaml`:
/// a 4-step fine-tuning run on the fixture, followed by the YAML lines of
/// `extra`.
pub fn setup(tag: &str, extra: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rgpt-train-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let coco =
        CocoDataset::read(&root().join("tests/fixtures/datasets/coco/instances_val2017.json"))
            .unwrap();
    let prompts = PromptBank::from_dir(&root().join("configs/prompts")).unwrap();
    let options = ClassificationOptions {
        max_regions_per_sample: 1,
        ..ClassificationOptions::coco()
    };
    let built = build_classification(&coco, &prompts, &options).unwrap();
    write_samples(&dir.join("coco.jsonl"), &built.samples).unwrap();
    let config = format!(
        "model: {{pretrained: {model}}}\n\
         data:\n  files: [{{path: coco.jsonl}}]\n  image_root: {images}\n\
         stage: finetune\nlr: 0.003\nglobal_batch: 4\nmicro_batch: 2\nsteps: 4\n\
         checkpoint_every: 1\noutput_dir: run\nloader_workers: 1\n{extra}",
        model = fixture().display(),
        images = root()
            .join("tests/fixtures/datasets/coco/val2017")
            .display(),
    );
    std::fs::write(dir.join("train.yaml"), config).unwrap();
    dir
}

/// A from-scratch model small enough to build and train in a test.
pub fn small_tiny_spec() -> TinySpec {
    serde_yaml::from_str(
        "{image_size: 32, patch_size: 8, conv_stem: [16, 16, 32], vision_hidden: 32, \
         vision_layers: 1, vision_heads: 2, hidden: 32, layers: 1, heads: 2, intermediate: 64}",
    )
    .unwrap()
}

/// Copies of every variable, by name, to compare with after training.
pub fn snapshot(vs: &tch::nn::VarStore) -> HashMap<String, Tensor> {
    vs.variables()
        .into_iter()
        .map(|(n, v)| (n, v.detach().copy()))
        .collect()
}
