//! `rgpt generate` end to end: it streams text, prints the JSON report the
//! issue specifies, and answers bad input with one clear line and a non-zero
//! exit, never a panic.
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tch::Tensor;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(name)
}

/// Runs `rgpt generate --model MODEL ARGS...`.
fn generate(model: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rgpt"))
        .arg("generate")
        .arg("--model")
        .arg(model)
        .args(args)
        .output()
        .expect("rgpt runs")
}

/// A fresh copy of a fixture model under the temp dir, to be damaged.
fn scratch_copy(name: &str, tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rgpt-cli-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(fixture(name)).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.join(path.file_name().unwrap())).unwrap();
    }
    dir
}

/// Asserts a failure with a single `error:` line that contains `needle`.
fn assert_clean_error(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "expected failure, got success; stderr: {stderr}"
    );
    assert!(
        !stderr.contains("panicked") && !stderr.contains("backtrace"),
        "panic: {stderr}"
    );
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(lines.len() <= 3, "expected a short error, got: {stderr}");
    assert!(stderr.contains(needle), "expected `{needle}` in: {stderr}");
}

fn rewrite_weights(dir: &Path, edit: impl Fn(&str, Tensor) -> Option<(String, Tensor)>) {
    let checkpoint = rgpt_weights::Checkpoint::open(dir).unwrap();
    let mut names: Vec<String> = checkpoint.names().map(str::to_string).collect();
    names.sort();
    let tensors: Vec<(String, Tensor)> = names
        .iter()
        .filter_map(|n| edit(n, checkpoint.tensor(n).unwrap()))
        .collect();
    drop(checkpoint);
    Tensor::write_safetensors(&tensors, dir.join("model.safetensors")).unwrap();
}

#[test]
fn streams_text_and_reports_json() {
    let model = fixture("llama-mha-tied");
    let out = generate(
        &model,
        &[
            "--prompt",
            "Hello there",
            "--max-new-tokens",
            "6",
            "--device",
            "cpu",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let streamed = String::from_utf8(out.stdout).unwrap();

    let out = generate(
        &model,
        &[
            "--prompt",
            "Hello there",
            "--max-new-tokens",
            "6",
            "--device",
            "cpu",
            "--json",
            "--top-logprobs",
            "3",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let tokens = report["token_ids"].as_array().unwrap();
    assert!(!tokens.is_empty() && tokens.len() <= 6);
    assert_eq!(
        report["top_logprobs"].as_array().unwrap().len(),
        tokens.len()
    );
    assert_eq!(report["top_logprobs"][0].as_array().unwrap().len(), 3);
    assert!(report["timing"]["prefill_ms"].as_f64().unwrap() > 0.0);
    assert!(report["timing"]["decode_tokens_per_s"].is_number());
    // The vicuna_v1 template wraps the prompt: BOS, the system prompt, then USER:.
    let prompt_ids = report["prompt_ids"].as_array().unwrap();
    assert_eq!(prompt_ids[0], 1);
    assert!(prompt_ids.len() > 20);
    assert_eq!(
        streamed.trim_end_matches('\n'),
        report["text"].as_str().unwrap()
    );

    let raw = generate(
        &model,
        &[
            "--prompt",
            "Hello there",
            "--raw",
            "--max-new-tokens",
            "2",
            "--json",
        ],
    );
    let raw: serde_json::Value = serde_json::from_slice(&raw.stdout).unwrap();
    let tokenizer = rgpt_llm::Tokenizer::from_dir(&fixture("llama-mha-tied")).unwrap();
    let expected: Vec<serde_json::Value> = tokenizer
        .encode("Hello there", true)
        .unwrap()
        .into_iter()
        .map(Into::into)
        .collect();
    assert_eq!(
        raw["prompt_ids"].as_array().unwrap(),
        &expected,
        "--raw feeds the prompt untemplated"
    );
}

#[test]
fn missing_model_dir() {
    let out = generate(Path::new("/nonexistent/model"), &["--prompt", "hi"]);
    assert_clean_error(&out, "/nonexistent/model does not exist");
}

#[test]
fn missing_config_file() {
    let dir = scratch_copy("llama-mha-tied", "noconfig");
    std::fs::remove_file(dir.join("config.json")).unwrap();
    let out = generate(&dir, &["--prompt", "hi"]);
    assert_clean_error(&out, "config.json");
}

#[test]
fn missing_weights() {
    let dir = scratch_copy("llama-mha-tied", "noweights");
    std::fs::remove_file(dir.join("model.safetensors")).unwrap();
    let out = generate(&dir, &["--prompt", "hi"]);
    assert_clean_error(&out, "no weights found");
}

#[test]
fn unsupported_architecture() {
    let dir = scratch_copy("llama-mha-tied", "arch");
    let path = dir.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    config["model_type"] = "gpt2".into();
    std::fs::write(&path, config.to_string()).unwrap();
    let out = generate(&dir, &["--prompt", "hi"]);
    assert_clean_error(&out, "unsupported architecture `gpt2`");
}

#[test]
fn missing_tensor_is_named() {
    let dir = scratch_copy("llama-mha-tied", "missing");
    rewrite_weights(&dir, |name, t| {
        (name != "model.layers.1.mlp.up_proj.weight").then(|| (name.to_string(), t))
    });
    let out = generate(&dir, &["--prompt", "hi"]);
    assert_clean_error(&out, "`model.layers.1.mlp.up_proj.weight` is missing");
}

#[test]
fn misshaped_tensor_names_both_shapes() {
    let dir = scratch_copy("llama-mha-tied", "shape");
    rewrite_weights(&dir, |name, t| {
        let t = if name == "model.layers.0.self_attn.k_proj.weight" {
            t.narrow(0, 0, 16).contiguous()
        } else {
            t
        };
        Some((name.to_string(), t))
    });
    let out = generate(&dir, &["--prompt", "hi"]);
    assert_clean_error(&out, "`model.layers.0.self_attn.k_proj.weight` has shape [16, 32] in the checkpoint but the model expects [32, 32]");
}

#[test]
fn truncated_safetensors() {
    let dir = scratch_copy("llama-mha-tied", "truncated");
    let path = dir.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let out = generate(&dir, &["--prompt", "hi"]);
    assert_clean_error(&out, "invalid safetensors file");
}

#[test]
fn empty_prompt() {
    let out = generate(&fixture("llama-mha-tied"), &["--prompt", "  "]);
    assert_clean_error(&out, "the prompt is empty");
}

#[test]
fn zero_max_new_tokens() {
    let model = fixture("llama-mha-tied");
    let out = generate(&model, &["--prompt", "hi", "--max-new-tokens", "0"]);
    assert_clean_error(&out, "--max-new-tokens");
}

#[test]
fn zero_threads() {
    // It used to panic in libtorch's set_num_threads.
    let model = fixture("llama-mha-tied");
    let out = generate(&model, &["--prompt", "hi", "--threads", "0"]);
    assert_clean_error(&out, "--threads");
}

#[test]
fn prompt_longer_than_context() {
    // The fixture's max_position_embeddings is 256.
    let prompt = "the quick brown fox ".repeat(200);
    let out = generate(&fixture("llama-mha-tied"), &["--prompt", &prompt]);
    assert_clean_error(&out, "max_position_embeddings is 256");
}

#[test]
fn cuda_without_cuda() {
    if rgpt_llm::device::cuda_available() {
        // Where there is a GPU, the same request must run on it.
        let out = generate(
            &fixture("llama-mha-tied"),
            &[
                "--prompt",
                "hi",
                "--device",
                "cuda",
                "--max-new-tokens",
                "2",
            ],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        return;
    }
    let out = generate(
        &fixture("llama-mha-tied"),
        &["--prompt", "hi", "--device", "cuda"],
    );
    assert_clean_error(&out, "CUDA is not available");
}

#[test]
fn unknown_dtype() {
    let out = generate(
        &fixture("llama-mha-tied"),
        &["--prompt", "hi", "--dtype", "f8"],
    );
    assert_clean_error(&out, "unknown dtype `f8`");
}

#[test]
fn answers_about_an_image_and_its_regions() {
    let model = fixture("rgpt-tiny");
    let image = model.join("image.png");
    let image = image.to_str().unwrap();
    let one = generate(
        &model,
        &[
            "--image",
            image,
            "--region",
            "box:8,5,24,20",
            "--prompt",
            "What is <region>?",
            "--max-new-tokens",
            "6",
            "--json",
        ],
    );
    assert!(
        one.status.success(),
        "{}",
        String::from_utf8_lossy(&one.stderr)
    );
    let one: serde_json::Value = serde_json::from_slice(&one.stdout).unwrap();
    assert_eq!(one["token_ids"].as_array().unwrap().len(), 6);
    let two = generate(
        &model,
        &[
            "--image",
            image,
            "--region",
            "box:8,5,24,20",
            "--region",
            "poly:30,2,39,2,39,28,30,28",
            "--prompt",
            "Compare <region> and <region>.",
            "--max-new-tokens",
            "6",
        ],
    );
    assert!(
        two.status.success(),
        "{}",
        String::from_utf8_lossy(&two.stderr)
    );
    assert!(
        !String::from_utf8(two.stdout).unwrap().trim().is_empty(),
        "an answer is printed"
    );
}

#[test]
fn bad_regions_and_images() {
    let model = fixture("rgpt-tiny");
    let image = model.join("image.png");
    let image = image.to_str().unwrap();
    let out = generate(
        &model,
        &[
            "--image",
            image,
            "--region",
            "box:8,5,24",
            "--prompt",
            "What is <region>?",
        ],
    );
    assert_clean_error(&out, "invalid --region `box:8,5,24`");
    let out = generate(
        &model,
        &[
            "--image",
            image,
            "--region",
            "box:8,5,24,20",
            "--prompt",
            "<region> or <region>?",
        ],
    );
    assert_clean_error(&out, "2 <region> placeholder(s) but 1 region(s)");
    let out = generate(
        &model,
        &[
            "--image",
            image,
            "--region",
            "box:100,100,120,120",
            "--prompt",
            "What is <region>?",
        ],
    );
    assert_clean_error(&out, "region 0:");
    // A 45x33 mask (non-zero = inside) for the 40x30 image.
    let wrong_size = fixture("llava-tiny").join("image.png");
    let mask = format!("mask:{}", wrong_size.display());
    let out = generate(
        &model,
        &[
            "--image",
            image,
            "--region",
            &mask,
            "--prompt",
            "What is <region>?",
        ],
    );
    assert_clean_error(
        &out,
        "size 33x45 (height x width) differs from the 30x40 image",
    );
    let rle = r#"rle:{"size":[20,20],"counts":[10,390]}"#;
    let out = generate(
        &model,
        &[
            "--image",
            image,
            "--region",
            rle,
            "--prompt",
            "What is <region>?",
        ],
    );
    assert_clean_error(
        &out,
        "size 20x20 (height x width) differs from the 30x40 image",
    );
    let out = generate(
        &model,
        &[
            "--image",
            image,
            "--region",
            "poly:1,1,5,5",
            "--prompt",
            "What is <region>?",
        ],
    );
    assert_clean_error(&out, "poly:1,1,5,5");
    let out = generate(
        &model,
        &["--image", "/nonexistent/image.png", "--prompt", "hi"],
    );
    assert_clean_error(&out, "/nonexistent/image.png");
    let corrupt = fixture("preprocess").join("corrupt.png");
    let out = generate(
        &model,
        &["--image", corrupt.to_str().unwrap(), "--prompt", "hi"],
    );
    assert_clean_error(&out, "corrupt.png");
}

#[test]
fn compose_writes_a_loadable_rgpt_checkpoint() {
    let out = std::env::temp_dir().join(format!("rgpt-cli-compose-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let status = Command::new(env!("CARGO_BIN_EXE_rgpt"))
        .args(["compose", "--vision"])
        .arg(fixture("clip-vision-tiny"))
        .arg("--llm")
        .arg(fixture("llama-mha-tied"))
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    for file in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ] {
        assert!(out.join(file).is_file(), "{file}");
    }
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["model_type"], "rgpt");
    // The CLIP fixture ships no image processor; the checkpoint gets the
    // tower's, so a question about an image runs on it at once.
    let preprocessor: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("preprocessor_config.json")).unwrap(),
    )
    .unwrap();
    let side = config["vision_config"]["image_size"].clone();
    assert_eq!(preprocessor["crop_size"]["height"], side);
    assert_eq!(preprocessor["image_aspect_ratio"], "pad");
    let image = fixture("rgpt-tiny").join("image.png");
    let answered = generate(
        &out,
        &[
            "--image",
            image.to_str().unwrap(),
            "--region",
            "box:2,3,20,18",
            "--prompt",
            "What is <region>?",
            "--max-new-tokens",
            "2",
        ],
    );
    assert!(
        answered.status.success(),
        "{}",
        String::from_utf8_lossy(&answered.stderr)
    );
    // A second compose into the same place is refused without --overwrite.
    let compose_again = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_rgpt"))
            .args(["compose", "--vision"])
            .arg(fixture("clip-vision-tiny"))
            .arg("--llm")
            .arg(fixture("llama-mha-tied"))
            .arg("--out")
            .arg(&out)
            .args(extra)
            .output()
            .unwrap()
    };
    assert_clean_error(
        &compose_again(&[]),
        "already holds a checkpoint: pass --overwrite",
    );
    assert!(compose_again(&["--overwrite"]).status.success());
    let bad = Command::new(env!("CARGO_BIN_EXE_rgpt"))
        .args(["compose", "--refiner", "cubic", "--vision"])
        .arg(fixture("clip-vision-tiny"))
        .arg("--llm")
        .arg(fixture("llama-mha-tied"))
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert_clean_error(&bad, "unknown refiner `cubic`: use one of deconv,");
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--refiner"));
}
