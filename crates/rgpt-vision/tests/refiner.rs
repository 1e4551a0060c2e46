//! The feature refinement module (paper Sec. 3.1, Table 6) against PyTorch.
//!
//! tests/fixtures/preprocess/refiner.safetensors comes from
//! scripts/fixtures/preprocess.py (torch 2.11, `torch.manual_seed(0)`): a
//! torch module with the layers of `deconv_no_final_gelu` (ConvTranspose2d
//! -> SAM-style LayerNorm2d(eps 1e-6) -> GELU -> ConvTranspose2d, C = 8)
//! saved under the `feature_refiner.*` names, its inputs and outputs, and
//! `F.interpolate` / `F.adaptive_avg_pool2d` references. The reference's
//! `deconv` (the same with a final GELU) is checked on a real checkpoint in
//! rgpt-model's tests/regiongpt_reference.rs. Tolerance 1e-5 absolute on f32 values
//! of order 1: a few ulps of accumulated rounding from different kernels.
use std::collections::HashMap;
use std::path::PathBuf;

use rgpt_vision::refiner::{
    image_tokens, tokens_to_map, FeatureRefiner, RefinerError, RefinerKind,
};
use tch::{nn, Device, Kind, Tensor};

const C: i64 = 8;
const TOL: f64 = 1e-5;

fn fixture_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/preprocess/refiner.safetensors")
}

fn fixtures() -> HashMap<String, Tensor> {
    Tensor::read_safetensors(fixture_path())
        .expect("fixture refiner.safetensors")
        .into_iter()
        .collect()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size());
    (a - b).abs().max().double_value(&[])
}

/// A refiner of `kind` with the fixture's weights (deconv kinds).
fn loaded(kind: RefinerKind) -> (nn::VarStore, FeatureRefiner) {
    let mut vs = nn::VarStore::new(Device::Cpu);
    let refiner = FeatureRefiner::new(&vs.root(), kind, C);
    if matches!(
        kind,
        RefinerKind::Deconv | RefinerKind::DeconvNoFinalGelu | RefinerKind::DeconvBilinear
    ) {
        vs.load(fixture_path())
            .expect("weights under feature_refiner.*");
    }
    (vs, refiner)
}

const KINDS: [RefinerKind; 6] = [
    RefinerKind::Deconv,
    RefinerKind::DeconvNoFinalGelu,
    RefinerKind::Bilinear4,
    RefinerKind::Bilinear16,
    RefinerKind::DeconvBilinear,
    RefinerKind::None,
];

#[test]
fn output_shapes_for_every_kind() {
    let _guard = tch::no_grad_guard();
    let map = Tensor::randn([2, C, 3, 4], (Kind::Float, Device::Cpu));
    let tokens = Tensor::randn([2, 16, C], (Kind::Float, Device::Cpu));
    for kind in KINDS {
        let (_vs, r) = loaded(kind);
        let s = kind.upscale();
        assert_eq!(
            r.forward(&map).expect("map").size(),
            [2, C, 3 * s, 4 * s],
            "{kind:?}"
        );
        assert_eq!(
            r.forward(&tokens).expect("tokens").size(),
            [2, C, 4 * s, 4 * s],
            "{kind:?}"
        );
    }
}

#[test]
fn kinds_parse_from_their_config_names() {
    let names = r#"["deconv", "deconv_no_final_gelu", "bilinear4", "bilinear16", "deconv+bilinear", "none"]"#;
    let kinds: Vec<RefinerKind> = serde_json::from_str(names).expect("parses");
    assert_eq!(kinds, KINDS);
    for kind in KINDS {
        assert_eq!(
            serde_json::to_value(kind).expect("serialises"),
            serde_json::Value::from(kind.name())
        );
    }
    assert!(serde_json::from_str::<RefinerKind>(r#""bilinear""#).is_err());
}

#[test]
fn none_is_the_identity() {
    let _guard = tch::no_grad_guard();
    let (_vs, r) = loaded(RefinerKind::None);
    let map = Tensor::randn([1, C, 5, 3], (Kind::Float, Device::Cpu));
    assert_eq!(max_diff(&r.forward(&map).expect("forward"), &map), 0.0);
    // Tokens come back as the map they stand for.
    let tokens = Tensor::randn([2, 9, C], (Kind::Float, Device::Cpu));
    let out = r.forward(&tokens).expect("forward");
    for (i, j) in [(0, 0), (1, 2), (2, 1)] {
        let tok = tokens.get(1).get(i * 3 + j);
        let cell = out.get(1).select(1, i).select(1, j);
        assert_eq!(max_diff(&tok, &cell), 0.0);
    }
}

/// align_corners = False bilinear by hand, PyTorch's
/// `area_pixel_compute_source_index` rule: src = (dst + 0.5) / f - 0.5,
/// clamped at 0, neighbours clamped at the last row / column.
fn bilinear_by_hand(x: &Tensor, f: i64) -> Tensor {
    let s = x.size();
    let (b, c, h, w) = (s[0], s[1], s[2], s[3]);
    let v = Vec::<f32>::try_from(x.flatten(0, -1)).expect("f32");
    let (oh, ow) = (h * f, w * f);
    let src = |d: i64, n: i64| {
        let p = ((d as f64 + 0.5) / f as f64 - 0.5).max(0.0);
        let i0 = p.floor() as i64;
        let i1 = (i0 + 1).min(n - 1);
        (i0, i1, p - i0 as f64)
    };
    let mut out = Vec::with_capacity((b * c * oh * ow) as usize);
    for bc in 0..b * c {
        let at = |i: i64, j: i64| f64::from(v[(bc * h * w + i * w + j) as usize]);
        for y in 0..oh {
            let (y0, y1, ly) = src(y, h);
            for xx in 0..ow {
                let (x0, x1, lx) = src(xx, w);
                let top = at(y0, x0) * (1.0 - lx) + at(y0, x1) * lx;
                let bot = at(y1, x0) * (1.0 - lx) + at(y1, x1) * lx;
                out.push((top * (1.0 - ly) + bot * ly) as f32);
            }
        }
    }
    Tensor::from_slice(&out).view([b, c, oh, ow])
}

#[test]
fn bilinear_kinds_equal_upsample_bilinear2d() {
    let _guard = tch::no_grad_guard();
    let t = fixtures();
    let (_vs, r4) = loaded(RefinerKind::Bilinear4);
    let (_vs, r16) = loaded(RefinerKind::Bilinear16);

    let x = &t["input.map"];
    let got = r4.forward(x).expect("forward");
    let d_torch = max_diff(&got, &t["output.map_bilinear4"]);
    let d_hand = max_diff(&got, &bilinear_by_hand(x, 4));
    assert!(
        d_torch < TOL && d_hand < TOL,
        "bilinear4: {d_torch} vs torch, {d_hand} vs hand"
    );

    let x = &t["input.small"];
    let got = r16.forward(x).expect("forward");
    let d_torch = max_diff(&got, &t["output.small_bilinear16"]);
    let d_hand = max_diff(&got, &bilinear_by_hand(x, 16));
    assert!(
        d_torch < TOL && d_hand < TOL,
        "bilinear16: {d_torch} vs torch, {d_hand} vs hand"
    );
}

#[test]
fn deconv_no_final_gelu_matches_pytorch() {
    let _guard = tch::no_grad_guard();
    let t = fixtures();
    let (_vs, r) = loaded(RefinerKind::DeconvNoFinalGelu);
    let d = max_diff(&r.forward(&t["input.map"]).expect("map"), &t["output.map"]);
    assert!(d < TOL, "deconv_no_final_gelu on a 3x4 map: {d}");
    let d = max_diff(
        &r.forward(&t["input.tokens"]).expect("tokens"),
        &t["output.tokens"],
    );
    assert!(d < TOL, "deconv_no_final_gelu on 4x4 tokens: {d}");

    let (_vs, r) = loaded(RefinerKind::DeconvBilinear);
    let got = r.forward(&t["input.small"]).expect("forward");
    let d = max_diff(&got, &t["output.small_deconv_bilinear"]);
    assert!(d < TOL, "deconv+bilinear: {d}");
}

#[test]
fn image_tokens_pool_back_like_adaptive_avg_pool2d() {
    let _guard = tch::no_grad_guard();
    let t = fixtures();
    let (_vs, r) = loaded(RefinerKind::DeconvNoFinalGelu);
    let refined = r.forward(&t["input.map"]).expect("forward"); // [2, 8, 12, 16]
    assert_eq!(r.backbone_grid(&refined).expect("grid"), (3, 4));
    let back = image_tokens(&refined, (3, 4)).expect("pool");
    assert_eq!(back.size(), [2, 12, C]);
    let d = max_diff(&back, &t["pooled.3x4"]);
    assert!(d < TOL, "pool to the backbone grid: {d}");
    let uneven = image_tokens(&refined, (5, 7)).expect("pool");
    assert_eq!(uneven.size(), [2, 35, C]);
    let d = max_diff(&uneven, &t["pooled.5x7"]);
    assert!(d < TOL, "pool to 5x7: {d}");

    // `none`, then pooling to its own grid, gives the tokens back.
    let (_vs, none) = loaded(RefinerKind::None);
    let tokens = &t["input.tokens"];
    let same = image_tokens(&none.forward(tokens).expect("forward"), (4, 4)).expect("pool");
    assert_eq!(max_diff(&same, tokens), 0.0);
}

#[test]
fn tokens_to_map_is_row_major() {
    let tokens = Tensor::arange(2 * 6 * 3, (Kind::Float, Device::Cpu)).view([2, 6, 3]);
    let map = tokens_to_map(&tokens, (2, 3)).expect("2x3 grid");
    assert_eq!(map.size(), [2, 3, 2, 3]);
    // Token 4 = row 1, column 1.
    assert_eq!(
        max_diff(&map.get(1).select(1, 1).select(1, 1), &tokens.get(1).get(4)),
        0.0
    );
    assert!(matches!(
        tokens_to_map(&tokens, (4, 2)),
        Err(RefinerError::Grid { .. })
    ));
}

#[test]
fn bad_shapes_are_errors() {
    let (_vs, r) = loaded(RefinerKind::Deconv);
    // 577 = 24 * 24 + CLS: the caller must drop the CLS token first.
    let with_cls = Tensor::zeros([1, 577, C], (Kind::Float, Device::Cpu));
    assert!(matches!(
        r.forward(&with_cls),
        Err(RefinerError::InputShape { .. })
    ));
    let wrong_c = Tensor::zeros([1, C + 1, 2, 2], (Kind::Float, Device::Cpu));
    assert!(matches!(
        r.forward(&wrong_c),
        Err(RefinerError::InputShape { .. })
    ));
    let flat = Tensor::zeros([C], (Kind::Float, Device::Cpu));
    assert!(r.forward(&flat).is_err());
    assert!(matches!(
        image_tokens(&flat, (2, 2)),
        Err(RefinerError::Rank { .. })
    ));
    let map = Tensor::zeros([1, C, 4, 4], (Kind::Float, Device::Cpu));
    assert!(matches!(
        image_tokens(&map, (0, 2)),
        Err(RefinerError::Grid { .. })
    ));
    let odd = Tensor::zeros([1, C, 6, 4], (Kind::Float, Device::Cpu));
    assert!(r.backbone_grid(&odd).is_err());
}

#[test]
fn variables_are_named_and_trainable_and_gradients_flow() {
    let vs = nn::VarStore::new(Device::Cpu);
    let r = FeatureRefiner::new(&vs.root(), RefinerKind::Deconv, C);
    let mut names: Vec<String> = vs.variables().into_keys().collect();
    names.sort();
    assert_eq!(
        names,
        [
            "feature_refiner.deconv1.bias",
            "feature_refiner.deconv1.weight",
            "feature_refiner.deconv2.bias",
            "feature_refiner.deconv2.weight",
            "feature_refiner.norm.bias",
            "feature_refiner.norm.weight",
        ]
    );
    assert_eq!(vs.trainable_variables().len(), 6);

    let x = Tensor::randn([2, C, 3, 3], (Kind::Float, Device::Cpu));
    let target = Tensor::randn([2, C, 12, 12], (Kind::Float, Device::Cpu));
    let loss = (r.forward(&x).expect("forward") - target)
        .square()
        .mean(Kind::Float);
    loss.backward();
    for (name, v) in vs.variables() {
        let g = v.grad();
        assert!(g.defined(), "{name}: no gradient");
        assert!(
            g.abs().sum(Kind::Float).double_value(&[]) > 0.0,
            "{name}: zero gradient"
        );
    }

    // The non-deconv kinds have nothing to train.
    let vs = nn::VarStore::new(Device::Cpu);
    let _r = FeatureRefiner::new(&vs.root(), RefinerKind::Bilinear16, C);
    assert!(vs.variables().is_empty());
}

#[test]
fn variables_take_the_var_store_kind() {
    let mut vs = nn::VarStore::new(Device::Cpu);
    vs.set_kind(Kind::BFloat16);
    let r = FeatureRefiner::new(&vs.root(), RefinerKind::Deconv, C);
    for (name, v) in vs.variables() {
        assert_eq!(v.kind(), Kind::BFloat16, "{name}");
    }
    let x = Tensor::randn([1, C, 2, 2], (Kind::BFloat16, Device::Cpu));
    let out = tch::no_grad(|| r.forward(&x)).expect("forward");
    assert_eq!(out.kind(), Kind::BFloat16);
}
