//! docs/reproduce.md cannot rot: every command in its `sh` blocks runs
//! here, in order and with its flags, from a folder laid out as the recipe
//! asks, holding tiny stand-ins: the tiny CLIP, SigLIP and LLaMA fixtures
//! for the real weights, the datasets' fixtures for the real annotations,
//! and generated images of the annotated sizes for the real images. The
//! paper's configs are the repository's, unchanged.
mod common;

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::root;
use serde_json::Value;

/// The commands of the `sh` blocks, continuation lines joined.
fn commands(doc: &str) -> Vec<String> {
    let mut commands = Vec::new();
    let mut in_block = false;
    let mut pending = String::new();
    for line in doc.lines() {
        if line.starts_with("```") {
            in_block = line == "```sh";
            continue;
        }
        let line = line.trim();
        if !in_block || line.is_empty() || line.starts_with('#') {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(part) => pending.push_str(part),
            None => {
                pending.push_str(line);
                commands.push(std::mem::take(&mut pending));
            }
        }
    }
    commands
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// A plain image of `width` x `height` at `path` (JPEG or PNG by its
/// extension), unless one is there.
fn image(path: &Path, width: u32, height: u32, shade: u8) {
    if path.exists() {
        return;
    }
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let pixels = image::RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([shade, (x * 7 % 256) as u8, (y * 5 % 256) as u8])
    });
    pixels.save(path).unwrap();
}

/// Images for every entry of a COCO-layout `images` list, under `dir`.
fn coco_images(annotations: &Path, dir: &Path) {
    for (i, entry) in read_json(annotations)["images"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
    {
        let size = |key: &str| entry[key].as_u64().unwrap() as u32;
        let name = entry["file_name"].as_str().unwrap();
        image(&dir.join(name), size("width"), size("height"), 40 * i as u8);
    }
}

/// The folder docs/reproduce.md's commands run in.
fn workspace() -> PathBuf {
    let work = std::env::temp_dir().join(format!("rgpt-reproduce-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    let fixtures = root().join("tests/fixtures");
    let datasets = fixtures.join("datasets");
    let copy = |from: &Path, to: &str| {
        let to = work.join(to);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(from, &to).unwrap();
    };
    for config in ["rgpt-7b-pretrain.yaml", "rgpt-7b-finetune.yaml"] {
        copy(
            &root().join("configs").join(config),
            &format!("configs/{config}"),
        );
    }
    std::fs::create_dir_all(work.join("models")).unwrap();
    for (model, fixture) in [
        ("clip-vit-large-patch14-336", "clip-vision-tiny"),
        ("vicuna-7b-v1.5", "llama-mha-tied"),
        ("siglip-so400m-patch14-384", "siglip-vision-tiny"),
    ] {
        symlink(fixtures.join(fixture), work.join("models").join(model)).unwrap();
    }
    let coco = datasets.join("coco/instances_val2017.json");
    copy(&coco, "datasets/coco/annotations/instances_train2017.json");
    copy(&coco, "datasets/coco/annotations/instances_val2017.json");
    coco_images(&coco, &work.join("datasets/coco/train2017"));
    coco_images(&coco, &work.join("datasets/coco/val2017"));

    let refcocog = datasets.join("refcocog/instances.json");
    copy(&refcocog, "datasets/refcocog/instances.json");
    copy(
        &datasets.join("refcocog/refs(umd).p"),
        "datasets/refcocog/refs(umd).p",
    );
    coco_images(&refcocog, &work.join("datasets/coco/train2014"));
    // Proposals in COCO's results layout: every annotated box, shifted a
    // little, as a detector would find it.
    let proposals: Vec<Value> = read_json(&refcocog)["annotations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let b: Vec<f64> = serde_json::from_value(a["bbox"].clone()).unwrap();
            serde_json::json!({
                "image_id": a["image_id"], "category_id": a["category_id"],
                "bbox": [b[0] + 1.0, b[1], b[2], b[3]], "score": 0.9,
            })
        })
        .collect();
    std::fs::write(
        work.join("datasets/refcocog/proposals_val.json"),
        serde_json::to_string(&proposals).unwrap(),
    )
    .unwrap();

    let vg = datasets.join("vg/region_descriptions.json");
    copy(&vg, "datasets/vg/region_descriptions.json");
    copy(&vg, "datasets/vg/test_region_descriptions.json");
    for entry in read_json(&vg).as_array().unwrap() {
        let id = entry["id"].as_u64().unwrap();
        image(
            &work.join(format!("datasets/vg/images/{id}.jpg")),
            128,
            96,
            90,
        );
    }

    let v3det = datasets.join("v3det/v3det_2023_v1_train.json");
    copy(
        &v3det,
        "datasets/v3det/annotations/v3det_2023_v1_train.json",
    );
    coco_images(&v3det, &work.join("datasets/v3det"));

    let llava = datasets.join("llava/llava_mini.json");
    copy(&llava, "datasets/llava/blip_laion_cc_sbu_558k.json");
    for entry in read_json(&llava).as_array().unwrap() {
        if let Some(name) = entry["image"].as_str() {
            image(&work.join("datasets/llava/images").join(name), 96, 96, 150);
        }
    }

    let pope = datasets.join("pope/coco_pope_random.json");
    for split in ["random", "popular", "adversarial"] {
        copy(&pope, &format!("datasets/pope/coco_pope_{split}.json"));
    }
    for line in std::fs::read_to_string(&pope).unwrap().lines() {
        let question: Value = serde_json::from_str(line).unwrap();
        let name = question["image"].as_str().unwrap();
        image(&work.join("datasets/coco/val2014").join(name), 96, 80, 200);
    }
    work
}

#[test]
fn every_command_of_the_recipe_runs() {
    let doc = std::fs::read_to_string(root().join("docs/reproduce.md")).unwrap();
    let commands = commands(&doc);
    assert!(commands.len() >= 25, "{} commands", commands.len());
    let work = workspace();
    let bin = Path::new(env!("CARGO_BIN_EXE_rgpt")).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    for command in &commands {
        let output = Command::new("sh")
            .args(["-c", command])
            .current_dir(&work)
            .env("PATH", &path)
            .env("OMP_NUM_THREADS", "1")
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "docs/reproduce.md: `{command}` failed:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    // The recipe's products are where the doc says.
    for product in [
        "runs/rgpt-7b-pretrain/model/model.safetensors",
        "runs/rgpt-7b-finetune/model/model.safetensors",
        "runs/rgpt-7b-siglip-finetune/model/model.safetensors",
        "runs/eval/coco-cls",
        "runs/eval/refcocog-cap",
        "runs/eval/vg-cap",
        "runs/eval/rec-val",
        "runs/eval/pope-adversarial",
        "runs/eval/coco-cls-siglip",
    ] {
        assert!(work.join(product).exists(), "no {product}");
    }
    // Every built sample found its image through the prefixes: neither
    // stage skipped one.
    for run in ["rgpt-7b-pretrain", "rgpt-7b-finetune"] {
        let metrics = std::fs::read_to_string(work.join("runs").join(run).join("metrics.jsonl"));
        let first: Value = serde_json::from_str(metrics.unwrap().lines().next().unwrap()).unwrap();
        let reasons = &first["skipped"]["reasons"];
        assert!(
            reasons.as_object().is_some_and(|r| r.is_empty()),
            "{run}: {first}"
        );
    }
    let _ = std::fs::remove_dir_all(&work);
}
