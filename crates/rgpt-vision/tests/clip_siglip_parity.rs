//! Parity of the CLIP and SigLIP vision towers with Hugging Face transformers.
//!
//! Reference: `scripts/fixtures/vision_towers.py` (transformers 5.23.0, torch
//! 2.11.0, f32, one thread, seeds 1234/1235), which saves tiny random-weight
//! `CLIPVisionModel` / `CLIPModel` / `SiglipVisionModel` fixtures and records,
//! from the models as transformers reloads them, every hidden state,
//! `last_hidden_state` and `pooler_output` for a seeded input at the
//! configured size (batch 2) and at a non-square size with
//! `interpolate_pos_encoding=True` (batch 1). Tolerance (f32): 1e-4 relative
//! L2 norm, far above the ~1e-6 reordering noise between two f32 BLAS paths
//! and far below any real bug (a wrong activation, norm or interpolation mode
//! moves the outputs by >1e-2).
use std::collections::HashMap;
use std::path::PathBuf;

use rgpt_vision::clip::{select_features, ClipVisionConfig, ClipVisionModel, FeatureSelect};
use rgpt_vision::error::VisionError;
use rgpt_vision::siglip::{SiglipVisionConfig, SiglipVisionModel};
use tch::{Device, Kind, Tensor};

const TOLERANCE: f64 = 1e-4;
const CASES: [&str; 2] = ["native", "interpolated"];

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(name)
}

/// The reference tensors of a fixture, by name (`{case}.hidden_states.{i}`, ...).
fn expected(name: &str) -> HashMap<String, Tensor> {
    let path = fixture(name).join("expected.safetensors");
    Tensor::read_safetensors(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .into_iter()
        .collect()
}

fn get<'a>(tensors: &'a HashMap<String, Tensor>, key: &str) -> &'a Tensor {
    tensors
        .get(key)
        .unwrap_or_else(|| panic!("expected.safetensors has no `{key}`"))
}

/// ||a - b|| / ||b||, computed in f32.
fn relative_error(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size(), "shapes differ");
    let a = a.to_kind(Kind::Float);
    f64::try_from((&a - b).norm() / b.norm()).unwrap()
}

fn assert_close(ours: &Tensor, theirs: &Tensor, what: &str) -> f64 {
    let rel = relative_error(ours, theirs);
    assert!(rel < TOLERANCE, "{what}: relative error {rel:e}");
    rel
}

fn check_clip(model: &ClipVisionModel, fixture_name: &str) {
    let reference = expected("clip-vision-tiny");
    for case in CASES {
        let pixels = get(&reference, &format!("{case}.pixel_values"));
        let out = model.forward(pixels).unwrap();
        assert_eq!(out.hidden_states.len(), 4, "embeddings + 3 layers");
        for (i, h) in out.hidden_states.iter().enumerate() {
            let theirs = get(&reference, &format!("{case}.hidden_states.{i}"));
            assert_close(
                h,
                theirs,
                &format!("{fixture_name} {case} hidden_states[{i}]"),
            );
        }
        assert_close(
            &out.last_hidden_state,
            get(&reference, &format!("{case}.last_hidden_state")),
            &format!("{fixture_name} {case} last_hidden_state"),
        );
        assert_close(
            &out.pooler_output,
            get(&reference, &format!("{case}.pooler_output")),
            &format!("{fixture_name} {case} pooler_output"),
        );
    }
}

#[test]
fn clip_hidden_states_match_transformers_at_both_sizes() {
    let _guard = tch::no_grad_guard();
    let (model, _vs) =
        ClipVisionModel::from_pretrained(&fixture("clip-vision-tiny"), Device::Cpu, Kind::Float)
            .unwrap();
    check_clip(&model, "clip-vision-tiny");
}

/// A full `CLIPModel` directory, as openai/clip-vit-large-patch14-336 ships:
/// model_type `clip`, the vision config nested, weights under
/// `vision_model.` next to a text tower that must be ignored.
#[test]
fn clip_loads_a_full_clip_model_directory() {
    let _guard = tch::no_grad_guard();
    let dir = fixture("clip-full-tiny");
    let config = ClipVisionConfig::from_file(&dir.join("config.json")).unwrap();
    assert_eq!(
        (
            config.hidden_size,
            config.num_hidden_layers,
            config.patch_size,
            config.image_size
        ),
        (32, 3, 7, 28)
    );
    assert_eq!(config.hidden_act, "quick_gelu");
    let (model, vs) = ClipVisionModel::from_pretrained(&dir, Device::Cpu, Kind::Float).unwrap();
    assert!(vs
        .variables()
        .keys()
        .all(|name| name.starts_with("vision_model.")));
    check_clip(&model, "clip-full-tiny");
}

#[test]
fn siglip_hidden_states_match_transformers_at_both_sizes() {
    let _guard = tch::no_grad_guard();
    let (model, _vs) = SiglipVisionModel::from_pretrained(
        &fixture("siglip-vision-tiny"),
        Device::Cpu,
        Kind::Float,
    )
    .unwrap();
    assert!(model.config().vision_use_head);
    let reference = expected("siglip-vision-tiny");
    for case in CASES {
        let pixels = get(&reference, &format!("{case}.pixel_values"));
        let out = model.forward(pixels).unwrap();
        assert_eq!(out.hidden_states.len(), 4, "embeddings + 3 layers");
        for (i, h) in out.hidden_states.iter().enumerate() {
            let theirs = get(&reference, &format!("{case}.hidden_states.{i}"));
            assert_close(h, theirs, &format!("siglip {case} hidden_states[{i}]"));
        }
        assert_close(
            &out.last_hidden_state,
            get(&reference, &format!("{case}.last_hidden_state")),
            &format!("siglip {case} last_hidden_state"),
        );
        let pooled = out.pooler_output.expect("the fixture has a head");
        assert_close(
            &pooled,
            get(&reference, &format!("{case}.pooler_output")),
            &format!("siglip {case} pooler_output"),
        );
    }
}

#[test]
fn select_features_picks_the_layer_and_drops_cls() {
    let _guard = tch::no_grad_guard();
    let (model, _vs) =
        ClipVisionModel::from_pretrained(&fixture("clip-vision-tiny"), Device::Cpu, Kind::Float)
            .unwrap();
    let reference = expected("clip-vision-tiny");
    let pixels = get(&reference, "native.pixel_values");
    let out = model.forward(pixels).unwrap();
    // 28 / 7 = 4 -> 16 patches + CLS; -2 is the penultimate layer's output,
    // hidden_states[2] of 4.
    let penultimate = get(&reference, "native.hidden_states.2");

    let patches = out.select_features(-2, FeatureSelect::Default).unwrap();
    assert_eq!(patches.size(), [2, 16, 32]);
    assert_close(&patches, &penultimate.narrow(1, 1, 16), "patch features");

    let full = select_features(&out.hidden_states, -2, FeatureSelect::Full).unwrap();
    assert_eq!(full.size(), [2, 17, 32]);
    assert_close(&full, penultimate, "cls_patch features");

    // Non-negative layers index from the embeddings.
    let first = out.select_features(0, FeatureSelect::Full).unwrap();
    assert_close(&first, get(&reference, "native.hidden_states.0"), "layer 0");
    assert_eq!(
        "cls_patch".parse::<FeatureSelect>().unwrap(),
        FeatureSelect::Full
    );
    assert_eq!(
        "patch".parse::<FeatureSelect>().unwrap(),
        FeatureSelect::Default
    );
    assert_eq!(FeatureSelect::default(), FeatureSelect::Default);

    for layer in [4, -5] {
        let err = out
            .select_features(layer, FeatureSelect::Default)
            .unwrap_err();
        assert!(
            matches!(err, VisionError::InvalidInput(ref m) if m.contains(&layer.to_string())),
            "{err}"
        );
    }
}

/// A scratch directory holding one `config.json`.
fn config_dir(tag: &str, json: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rgpt-vision-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("config.json"), json).unwrap();
    dir
}

#[test]
fn unsupported_model_types_are_named_in_the_error() {
    let dir = config_dir("llama", r#"{"model_type": "llama", "hidden_size": 32}"#);
    let path = dir.join("config.json");
    let err = ClipVisionConfig::from_file(&path).unwrap_err();
    assert!(
        matches!(err, VisionError::UnsupportedArchitecture { ref found, .. } if found == "llama"),
        "{err}"
    );
    assert!(err.to_string().contains("`llama`"), "{err}");
    // A SigLIP config is not a CLIP one, and the other way round.
    let err = ClipVisionConfig::from_file(&fixture("siglip-vision-tiny").join("config.json"))
        .unwrap_err();
    assert!(err.to_string().contains("siglip_vision_model"), "{err}");
    let err =
        SiglipVisionModel::from_pretrained(&fixture("clip-vision-tiny"), Device::Cpu, Kind::Float)
            .unwrap_err();
    assert!(err.to_string().contains("clip_vision_model"), "{err}");
    let err = ClipVisionModel::from_pretrained(&dir, Device::Cpu, Kind::Float).unwrap_err();
    assert!(
        matches!(err, VisionError::UnsupportedArchitecture { .. }),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn config_errors_name_the_file() {
    let dir = config_dir(
        "badact",
        r#"{"model_type": "clip_vision_model", "hidden_act": "relu6"}"#,
    );
    let path = dir.join("config.json");
    let err = ClipVisionConfig::from_file(&path).unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, VisionError::Config { .. }), "{message}");
    assert!(
        message.contains("relu6") && message.contains("config.json"),
        "{message}"
    );
    std::fs::remove_dir_all(&dir).unwrap();

    let missing = fixture("no-such-model").join("config.json");
    let err = SiglipVisionConfig::from_file(&missing).unwrap_err();
    assert!(
        matches!(
            err,
            VisionError::Weights(rgpt_weights::WeightsError::Io { .. })
        ),
        "{err}"
    );
    assert!(err.to_string().contains("no-such-model"), "{err}");
}

/// HF's defaults, and the nested `vision_config_dict` that older CLIP configs
/// carry (HF builds the vision config from it, defaults filling the rest).
#[test]
fn configs_follow_hf_defaults_and_legacy_keys() {
    let dir = config_dir(
        "legacy",
        r#"{"model_type": "clip",
            "vision_config": {"hidden_size": 64, "hidden_act": "gelu"},
            "vision_config_dict": {"hidden_size": 1024, "num_attention_heads": 16,
                                   "patch_size": 14, "image_size": 336}}"#,
    );
    let config = ClipVisionConfig::from_file(&dir.join("config.json")).unwrap();
    assert_eq!(
        (config.hidden_size, config.patch_size, config.image_size),
        (1024, 14, 336)
    );
    assert_eq!(config.hidden_act, "quick_gelu");
    assert_eq!(config.num_positions(), 577);
    std::fs::remove_dir_all(&dir).unwrap();

    let dir = config_dir(
        "siglipfull",
        r#"{"model_type": "siglip", "vision_config": {"patch_size": 14}}"#,
    );
    let config = SiglipVisionConfig::from_file(&dir.join("config.json")).unwrap();
    assert_eq!(
        (config.hidden_size, config.patch_size, config.image_size),
        (768, 14, 224)
    );
    assert_eq!(config.hidden_act, "gelu_pytorch_tanh");
    assert!(config.vision_use_head);
    assert_eq!(config.layer_norm_eps, 1e-6);
    std::fs::remove_dir_all(&dir).unwrap();

    let large = ClipVisionConfig::clip_vit_large_patch14_336();
    assert_eq!((large.num_positions(), large.hidden_size), (577, 1024));
    assert_eq!(
        SiglipVisionConfig::siglip_so400m_patch14_384().num_positions(),
        729
    );
}

#[test]
fn wrong_pixel_shapes_are_errors_not_panics() {
    let _guard = tch::no_grad_guard();
    let (clip, _clip_vs) =
        ClipVisionModel::from_pretrained(&fixture("clip-vision-tiny"), Device::Cpu, Kind::Float)
            .unwrap();
    let (siglip, _siglip_vs) = SiglipVisionModel::from_pretrained(
        &fixture("siglip-vision-tiny"),
        Device::Cpu,
        Kind::Float,
    )
    .unwrap();
    let bad: [&[i64]; 5] = [
        &[3, 28, 28],       // no batch dimension
        &[1, 4, 28, 28],    // wrong channel count
        &[1, 3, 3, 28],     // smaller than one patch
        &[0, 3, 28, 28],    // empty batch
        &[1, 1, 3, 28, 28], // 5-D
    ];
    for shape in bad {
        let pixels = Tensor::zeros(shape, (Kind::Float, Device::Cpu));
        let err = clip.forward(&pixels).unwrap_err();
        assert!(
            matches!(err, VisionError::InvalidInput(_)),
            "{shape:?}: {err}"
        );
        assert!(err.to_string().contains(&format!("{shape:?}")), "{err}");
        let err = siglip.forward(&pixels).unwrap_err();
        assert!(
            matches!(err, VisionError::InvalidInput(_)),
            "{shape:?}: {err}"
        );
    }
    // Integer pixels are cast, as HF casts to the patch conv's dtype.
    let pixels = Tensor::zeros([1, 3, 28, 28], (Kind::Uint8, Device::Cpu));
    assert_eq!(
        clip.forward(&pixels).unwrap().last_hidden_state.size(),
        [1, 17, 32]
    );
}

/// A model declared in bf16 keeps bf16 variables (the VarStore's kind), and
/// its outputs stay near the f32 reference.
#[test]
fn half_precision_stays_close_to_the_f32_reference() {
    let _guard = tch::no_grad_guard();
    let (model, _vs) = SiglipVisionModel::from_pretrained(
        &fixture("siglip-vision-tiny"),
        Device::Cpu,
        Kind::BFloat16,
    )
    .unwrap();
    assert_eq!(model.kind(), Kind::BFloat16);
    let reference = expected("siglip-vision-tiny");
    let out = model
        .forward(get(&reference, "native.pixel_values"))
        .unwrap();
    assert_eq!(out.last_hidden_state.kind(), Kind::BFloat16);
    let rel = relative_error(
        &out.last_hidden_state,
        get(&reference, "native.last_hidden_state"),
    );
    assert!(rel < 5e-2, "bf16 relative error {rel:e}");
}
