//! LLaVA greedy generation with an image against transformers.
//!
//! Reference: `scripts/fixtures/llava.py` (run by `scripts/gen_fixtures.py`;
//! transformers 5.23.0, torch 2.11.0, seed 21, f32): a tiny random
//! `LlavaForConditionalGeneration` (CLIP 28 px / patch 7 -> 16 image tokens,
//! LLaMA decoder), the prompt's ids, a fixed `pixel_values` tensor (so no
//! resizing is involved), greedy tokens and top-5 log-probs per step.
//! Tolerance: log-probs 1e-4 absolute, as for the text-only decoder.
use std::path::{Path, PathBuf};

use rgpt_llm::generation::GenerationConfig;
use rgpt_llm::Tokenizer;
use rgpt_model::llava::Llava;
use rgpt_vision::preprocess::{load_image, PreprocessorConfig};
use serde::Deserialize;
use tch::{Device, Kind, Tensor};

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/llava-tiny")
}

#[derive(Deserialize)]
struct Expected {
    prompt: String,
    prompt_ids: Vec<i64>,
    greedy_tokens: Vec<i64>,
    top_logprobs: Vec<Vec<Top>>,
    /// Only the CLIP fixture has the resized-image case.
    #[serde(default)]
    resized_greedy_tokens: Vec<i64>,
    #[serde(default)]
    resized_top_logprobs: Vec<Vec<Top>>,
}

#[derive(Deserialize)]
struct Top {
    id: i64,
    logprob: f32,
}

fn expected() -> Expected {
    serde_json::from_str(&std::fs::read_to_string(fixture().join("expected.json")).unwrap())
        .unwrap()
}

fn pixel_values() -> Tensor {
    rgpt_weights::Checkpoint::open(fixture().join("pixel_values.safetensors"))
        .unwrap()
        .tensor("pixel_values")
        .unwrap()
}

fn run(dir: &Path, prompt_ids: &[i64]) -> rgpt_llm::generation::SequenceOutput {
    run_on(dir, prompt_ids, &pixel_values())
}

fn run_on(dir: &Path, prompt_ids: &[i64], pixels: &Tensor) -> rgpt_llm::generation::SequenceOutput {
    let (model, _vs) = Llava::from_pretrained(dir, Device::Cpu, Kind::Float).unwrap();
    let config = GenerationConfig {
        max_new_tokens: 10,
        ignore_eos: true,
        top_logprobs: 5,
        ..GenerationConfig::default()
    };
    let out = model
        .generate(prompt_ids, pixels, &config, None, &mut |_, _| {})
        .unwrap();
    out.sequences.into_iter().next().unwrap()
}

#[test]
fn greedy_generation_with_an_image_matches_transformers() {
    let expected = expected();
    let tokenizer = Tokenizer::from_dir(&fixture()).unwrap();
    assert_eq!(
        tokenizer.encode(&expected.prompt, true).unwrap(),
        expected.prompt_ids
    );
    let seq = run(&fixture(), &expected.prompt_ids);
    assert_same(&seq, &expected.greedy_tokens, &expected.top_logprobs);
}

/// A 45x33 PNG through our preprocessing (bicubic resize to 28, centre
/// crop) against transformers' `CLIPImageProcessorPil` + model. Our resize
/// is bit-identical to Pillow's (crates/rgpt-vision/tests/preprocess.rs), so
/// the resize case keeps the same 1e-4 tolerance as the no-resize one.
#[test]
fn greedy_generation_with_a_resized_image_matches_transformers() {
    let expected = expected();
    let config = PreprocessorConfig::from_file(fixture().join("preprocessor_config.json")).unwrap();
    let image = load_image(fixture().join("image.png")).unwrap();
    let processed = config.preprocess(&image).unwrap();
    assert_eq!(
        processed.transform.resized_size,
        (38, 28),
        "45x33 resized to a shortest edge of 28"
    );
    let seq = run_on(
        &fixture(),
        &expected.prompt_ids,
        &processed.pixel_values.unsqueeze(0),
    );
    assert_same(
        &seq,
        &expected.resized_greedy_tokens,
        &expected.resized_top_logprobs,
    );
}

fn assert_same(
    seq: &rgpt_llm::generation::SequenceOutput,
    tokens: &[i64],
    top_logprobs: &[Vec<Top>],
) {
    assert_eq!(seq.token_ids, tokens);
    // A zip of unequal or empty lists would compare nothing.
    assert!(!top_logprobs.is_empty());
    assert_eq!(seq.top_logprobs.len(), top_logprobs.len());
    for (step, (ours, theirs)) in seq.top_logprobs.iter().zip(top_logprobs).enumerate() {
        assert!(!theirs.is_empty(), "step {step}: the fixture has no top-k");
        assert_eq!(ours.len(), theirs.len(), "step {step}");
        for (o, t) in ours.iter().zip(theirs) {
            assert_eq!(o.id, t.id, "step {step}");
            assert!(
                (o.logprob - t.logprob).abs() < 1e-4,
                "step {step}: {} vs {}",
                o.logprob,
                t.logprob
            );
        }
    }
}

/// The hub's llava-hf layout nests the tower under `vision_tower.vision_model.`;
/// renamed at load, it must give the same tokens.
#[test]
fn hub_layout_loads_the_same_model() {
    let dir = std::env::temp_dir().join(format!("rgpt-llava-hub-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(fixture().join("config.json"), dir.join("config.json")).unwrap();
    let checkpoint = rgpt_weights::Checkpoint::open(fixture()).unwrap();
    let mut names: Vec<String> = checkpoint.names().map(str::to_string).collect();
    names.sort();
    let tensors: Vec<(String, Tensor)> = names
        .iter()
        .map(|n| {
            let hub = match n.strip_prefix("vision_tower.") {
                Some(rest) => format!("vision_tower.vision_model.{rest}"),
                None => n.clone(),
            };
            (hub, checkpoint.tensor(n).unwrap())
        })
        .collect();
    Tensor::write_safetensors(&tensors, dir.join("model.safetensors")).unwrap();
    let expected = expected();
    assert_eq!(
        run(&dir, &expected.prompt_ids).token_ids,
        expected.greedy_tokens
    );
}

/// The same LLaVA with a SigLIP tower (`scripts/fixtures/llava.py`,
/// `generate_siglip`, seed 22): no CLS token, `full` feature selection.
#[test]
fn greedy_generation_with_a_siglip_tower_matches_transformers() {
    let dir = fixture().with_file_name("llava-siglip-tiny");
    let expected: Expected =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let tokenizer = Tokenizer::from_dir(&dir).unwrap();
    assert_eq!(
        tokenizer.encode(&expected.prompt, true).unwrap(),
        expected.prompt_ids
    );
    let pixels = rgpt_weights::Checkpoint::open(dir.join("pixel_values.safetensors"))
        .unwrap()
        .tensor("pixel_values")
        .unwrap();
    let (model, _vs) = Llava::from_pretrained(&dir, Device::Cpu, Kind::Float).unwrap();
    assert!(matches!(
        model.vision,
        rgpt_vision::tower::VisionTower::Siglip(_)
    ));
    let seq = run_on(&dir, &expected.prompt_ids, &pixels);
    assert_same(&seq, &expected.greedy_tokens, &expected.top_logprobs);
}
