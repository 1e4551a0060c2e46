//! The region path of an RGPT checkpoint (`model_type: rgpt`, refiner
//! `deconv`, default `mask_pool`) against RegionGPT's reference: NVIDIA
//! SpatialRGPT's `regiongpt` extractor (GitHub `AnjieCheng/SpatialRGPT`,
//! commit 16715d4, `llava/model/region_extractor/base_extractor.py`, with
//! the mask preparation of its `llava/mm_utils.py`), restated by
//! scripts/fixtures/regiongpt_extractor.py (torch 2.11, transformers 5.23,
//! Pillow 13.0, pycocotools 2.0.11; f32) on tests/fixtures/rgpt-tiny. Its
//! outputs are tests/fixtures/regiongpt/{cases.json, tensors.safetensors}.
//!
//! Cases: two boxes, a 1-pixel box that vanishes in the mask's resize (zero
//! feature, as the reference gives) beside a 2x2 box smaller than one
//! refined cell, polygons (one of two parts), a mask PNG, and a portrait
//! image padded left and right (the checkpoint's 40x30 image, padded above
//! and below, serves the others).
//!
//! Tolerances: processed masks are integers from the same Pillow arithmetic
//! and must be equal; masks on the grid 1e-6 (one bilinear kernel, f32);
//! refined maps and pooled features 1e-5 absolute on values of order 1 (a
//! few ulps through different conv / matmul kernels); greedy tokens equal and
//! top-5 log-probs within 1e-4, as the LLaVA parity tests; pooling bf16
//! features 2e-2 relative to the feature scale (bf16 keeps 8 bits).
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rgpt_llm::generation::GenerationConfig;
use rgpt_model::rgpt::{RegionGpt, RegionPrompt};
use rgpt_region::pool::{mask_pool_reference, reference_grid_masks};
use rgpt_region::{rasterize, RegionSpec};
use rgpt_vision::preprocess::{load_image, ImageTransform, PreprocessorConfig};
use serde::Deserialize;
use tch::{Device, Kind, Tensor};

#[derive(Deserialize)]
struct Fixture {
    region_token_id: i64,
    cases: HashMap<String, Case>,
}

#[derive(Deserialize)]
struct Case {
    image: String,
    prompt_ids: Vec<i64>,
    regions: Vec<String>,
    greedy_tokens: Vec<i64>,
    top_logprobs: Vec<Vec<Top>>,
}

#[derive(Deserialize)]
struct Top {
    id: i64,
    logprob: f32,
}

const CASES: [&str; 5] = ["boxes", "small_box", "polygons", "mask_png", "portrait"];

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn checkpoint() -> PathBuf {
    fixtures().join("rgpt-tiny")
}

fn expected() -> Fixture {
    let text = std::fs::read_to_string(fixtures().join("regiongpt/cases.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn tensors() -> HashMap<String, Tensor> {
    Tensor::read_safetensors(fixtures().join("regiongpt/tensors.safetensors"))
        .unwrap()
        .into_iter()
        .collect()
}

/// The case's regions; `mask:` paths are relative to tests/fixtures.
fn regions(case: &Case) -> Vec<RegionSpec> {
    case.regions
        .iter()
        .map(|spec| match spec.strip_prefix("mask:") {
            Some(path) => format!("mask:{}", fixtures().join(path).display()),
            None => spec.clone(),
        })
        .map(|spec| spec.parse().unwrap())
        .collect()
}

fn image(path: &Path) -> (Tensor, ImageTransform) {
    let config =
        PreprocessorConfig::from_file(checkpoint().join("preprocessor_config.json")).unwrap();
    let processed = config.preprocess(&load_image(path).unwrap()).unwrap();
    (processed.pixel_values.unsqueeze(0), processed.transform)
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size());
    f64::try_from(
        (a.to_kind(Kind::Float) - b.to_kind(Kind::Float))
            .abs()
            .max(),
    )
    .unwrap()
}

#[test]
fn refined_maps_masks_and_pooled_features_match_the_reference() {
    let _guard = tch::no_grad_guard();
    let (model, _vs) = RegionGpt::from_pretrained(&checkpoint(), Device::Cpu, Kind::Float).unwrap();
    let fixture = expected();
    let t = tensors();
    for name in CASES {
        let case = &fixture.cases[name];
        let (pixels, transform) = image(&fixtures().join(&case.image));
        let (refined, _) = model.encode_image(&pixels).unwrap();
        let which = if case.image.contains("tall") {
            "portrait"
        } else {
            "landscape"
        };
        let d = max_diff(&refined.get(0), &t[&format!("{which}.refined")]);
        assert!(
            d < 1e-5,
            "{name}: refined map (deconv with its final GELU): {d:e}"
        );

        let specs = regions(case);
        let (width, height) = transform.original_size;
        let processed: Vec<Tensor> = specs
            .iter()
            .map(|s| {
                let bitmap = rasterize(s, height, width).unwrap();
                transform.preprocess_mask(&bitmap.data).unwrap()
            })
            .collect();
        let processed = Tensor::stack(&processed, 0);
        assert_eq!(
            max_diff(&processed, &t[&format!("{name}.processed")]),
            0.0,
            "{name}: masks through the image's preprocessing"
        );
        let grid = reference_grid_masks(&processed, 16, 16).unwrap();
        let d = max_diff(&grid, &t[&format!("{name}.grid")]);
        assert!(d < 1e-6, "{name}: masks on the refined grid: {d:e}");

        let pooled = model.region_features(&refined, &transform, &specs).unwrap();
        let d = max_diff(&pooled, &t[&format!("{name}.pooled")]);
        assert!(d < 1e-5, "{name}: pooled features: {d:e}");
    }
}

#[test]
fn a_region_that_vanishes_in_the_resize_pools_to_zero() {
    let _guard = tch::no_grad_guard();
    let (model, _vs) = RegionGpt::from_pretrained(&checkpoint(), Device::Cpu, Kind::Float).unwrap();
    let case = &expected().cases["small_box"];
    let (pixels, transform) = image(&fixtures().join(&case.image));
    let (refined, _) = model.encode_image(&pixels).unwrap();
    let pooled = model
        .region_features(&refined, &transform, &regions(case))
        .unwrap();
    // The 1-pixel box: a zero mask, 0 / (0 + 1e-8), a zero feature.
    assert_eq!(f64::try_from(pooled.get(0).abs().max()).unwrap(), 0.0);
    // The 2x2 box weighs on one refined cell: its feature is that cell's.
    let grid = &tensors()["small_box.grid"];
    let cell = i64::try_from(grid.get(1).flatten(0, 1).argmax(None, false)).unwrap();
    let expected = refined.get(0).flatten(1, 2).select(1, cell);
    assert!(max_diff(&pooled.get(1), &expected) < 1e-6);
}

#[test]
fn greedy_answers_and_top5_logprobs_match_the_reference() {
    let (model, _vs) = RegionGpt::from_pretrained(&checkpoint(), Device::Cpu, Kind::Float).unwrap();
    let fixture = expected();
    let config = GenerationConfig {
        max_new_tokens: 8,
        ignore_eos: true,
        top_logprobs: 5,
        ..GenerationConfig::default()
    };
    for name in CASES {
        let case = &fixture.cases[name];
        let (pixels, transform) = image(&fixtures().join(&case.image));
        let specs = regions(case);
        let prompt = RegionPrompt {
            prompt_ids: &case.prompt_ids,
            pixel_values: &pixels,
            transform: &transform,
            regions: &specs,
        };
        let out = model
            .generate(
                &prompt,
                fixture.region_token_id,
                &config,
                None,
                &mut |_, _| {},
            )
            .unwrap();
        let seq = &out.sequences[0];
        assert_eq!(seq.token_ids, case.greedy_tokens, "{name}: greedy tokens");
        for (step, (ours, theirs)) in seq.top_logprobs.iter().zip(&case.top_logprobs).enumerate() {
            assert_eq!(ours.len(), 5);
            for (o, t) in ours.iter().zip(theirs) {
                assert_eq!(o.id, t.id, "{name}, step {step}");
                assert!(
                    (o.logprob - t.logprob).abs() < 1e-4,
                    "{name}, step {step}: {} vs {}",
                    o.logprob,
                    t.logprob
                );
            }
        }
    }
}

/// bf16 features: the reference resizes the mask in f32, casts it to the
/// features' dtype and normalises and contracts there.
#[test]
fn bf16_features_pool_as_the_reference_casts() {
    let _guard = tch::no_grad_guard();
    let t = tensors();
    for name in ["boxes", "polygons", "portrait"] {
        let which = if name == "portrait" {
            "portrait"
        } else {
            "landscape"
        };
        let refined = t[&format!("{which}.refined")]
            .unsqueeze(0)
            .to_kind(Kind::BFloat16);
        let processed = &t[&format!("{name}.processed")];
        let index = vec![0i64; processed.size()[0] as usize];
        let pooled = mask_pool_reference(&refined, processed, &index).unwrap();
        assert_eq!(pooled.kind(), Kind::BFloat16);
        let reference = &t[&format!("{name}.pooled_bf16")];
        let scale = f64::try_from(reference.to_kind(Kind::Float).abs().max()).unwrap();
        let d = max_diff(&pooled, reference);
        assert!(
            d <= 2e-2 * scale,
            "{name}: bf16 pooled {d:e} (scale {scale})"
        );
        // And the f32 result within bf16's precision of it.
        let d = max_diff(&pooled, &t[&format!("{name}.pooled")]);
        assert!(d <= 2e-2 * scale, "{name}: bf16 vs f32 {d:e}");
    }
}

/// Today's area-weighted pooling and refiner stay available by name, and
/// a checkpoint that names them does not follow the reference.
#[test]
fn the_area_setting_and_the_old_refiner_are_other_paths() {
    let _guard = tch::no_grad_guard();
    let dir = std::env::temp_dir().join(format!("rgpt-area-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(checkpoint()).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.join(path.file_name().unwrap())).unwrap();
    }
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(checkpoint().join("config.json")).unwrap())
            .unwrap();
    config["rgpt"]["mask_pool"] = "area".into();
    config["rgpt"]["refiner"] = "deconv_no_final_gelu".into();
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let (old, _vs) = RegionGpt::from_pretrained(&dir, Device::Cpu, Kind::Float).unwrap();
    let (new, _vs2) = RegionGpt::from_pretrained(&checkpoint(), Device::Cpu, Kind::Float).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();

    let case = &expected().cases["boxes"];
    let (pixels, transform) = image(&fixtures().join(&case.image));
    let (refined_old, _) = old.encode_image(&pixels).unwrap();
    let (refined_new, _) = new.encode_image(&pixels).unwrap();
    // The reference's refiner is the old one followed by GELU.
    assert!(max_diff(&refined_old.gelu("none"), &refined_new) < 1e-6);
    let specs = regions(case);
    let area = old
        .region_features(&refined_new, &transform, &specs)
        .unwrap();
    let reference = new
        .region_features(&refined_new, &transform, &specs)
        .unwrap();
    assert!(
        max_diff(&area, &reference) > 1e-3,
        "area and reference weights pooled the same"
    );
    // A region smaller than a cell is no error for area pooling either.
    let small = regions(&expected().cases["small_box"]);
    let pooled = old
        .region_features(&refined_new, &transform, &small)
        .unwrap();
    assert!(f64::try_from(pooled.get(0).abs().max()).unwrap() > 0.0);
}

#[test]
fn masks_that_do_not_fit_are_clear_errors() {
    let (_, transform) = image(&fixtures().join("rgpt-tiny/image.png"));
    let err = transform.preprocess_mask(&[0u8; 10]).unwrap_err();
    assert!(
        err.to_string().contains("10 pixels for a 40x30 image"),
        "{err}"
    );
    // A grid of another aspect ratio than the masks': the reference's
    // single scale cannot reach it.
    let masks = Tensor::ones([1, 28, 28], (Kind::Float, Device::Cpu));
    let err = reference_grid_masks(&masks, 16, 12).unwrap_err();
    assert!(err.to_string().contains("mask_pool: area"), "{err}");
    let features = Tensor::zeros([1, 4, 16, 16], (Kind::Float, Device::Cpu));
    let err = mask_pool_reference(&features, &masks, &[1]).unwrap_err();
    assert!(err.to_string().contains("batch has 1 images"), "{err}");
}
