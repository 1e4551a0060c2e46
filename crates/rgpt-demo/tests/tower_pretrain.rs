//! Vision-tower pre-training on the synthetic world: it trains the tower
//! and nothing else, and a few steps already read colour off pooled
//! regions far better than chance.
mod common;

use rgpt_data::synth::{SynthConfig, SynthWorld};
use rgpt_demo::tower_pretrain::{pretrain_tower, TowerPretrainConfig};
use rgpt_train::scratch::build_tiny;

use common::{small_tiny_spec as spec, snapshot};

#[test]
fn tower_pretraining_trains_only_the_tower_and_learns_colour() {
    let (model, vs, _, preprocessor) = build_tiny(&spec(), &[], 0).unwrap();
    let before = snapshot(&vs);
    let world = SynthWorld::new(SynthConfig {
        image_size: 32,
        min_size: 8,
        max_size: 14,
        max_shapes: 3,
        ..SynthConfig::default()
    })
    .unwrap();
    let config = TowerPretrainConfig {
        steps: 40,
        batch_images: 16,
        lr: 3e-3,
        warmup_ratio: 0.05,
        train_images: 500,
        seed: 0,
        pool_upscale: 1,
    };
    let mut losses = Vec::new();
    let report = pretrain_tower(
        &model,
        &vs,
        &world,
        &preprocessor,
        &config,
        1000..1060,
        &mut |s| losses.push(s.loss),
    )
    .unwrap();
    assert_eq!(losses.len(), 40);
    assert!(losses[35..].iter().sum::<f64>() < losses[..5].iter().sum::<f64>());
    let colour = report
        .accuracy
        .iter()
        .find(|(n, _)| n == "color")
        .unwrap()
        .1;
    assert!(colour > 0.5, "colour accuracy {colour} (chance 1/6)");

    let after = vs.variables();
    let mut tower_changed = false;
    for (name, old) in &before {
        let same = after[name].equal(old);
        if name.starts_with("vision_tower.") {
            tower_changed |= !same;
        } else {
            assert!(same, "{name} changed during tower pre-training");
        }
        assert!(!after[name].requires_grad(), "{name} is left trainable");
    }
    assert!(tower_changed);
}

#[test]
fn tower_pretraining_refuses_zero_steps() {
    let (model, vs, _, preprocessor) = build_tiny(&spec(), &[], 0).unwrap();
    let world = SynthWorld::new(SynthConfig::default()).unwrap();
    let config = TowerPretrainConfig {
        steps: 0,
        batch_images: 16,
        lr: 1e-3,
        warmup_ratio: 0.0,
        train_images: 10,
        seed: 0,
        pool_upscale: 1,
    };
    let err = pretrain_tower(
        &model,
        &vs,
        &world,
        &preprocessor,
        &config,
        10..12,
        &mut |_| {},
    )
    .unwrap_err();
    assert!(err.to_string().contains("steps"), "{err}");
}
