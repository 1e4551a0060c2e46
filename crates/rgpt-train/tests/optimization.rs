//! The optimiser, freezing and gradient accumulation on the tiny RGPT
//! fixture: AdamW equals libtorch's, frozen parts get no gradient and no
//! optimiser state, 4 accumulated micro-batches equal one batch of 4, and a
//! few steps lower the loss on a fixed batch.
mod common;

use rgpt_llm::{Conversation, Role, Template, Tokenizer};
use rgpt_model::prompt::{conversation_segments, Placeholders};
use rgpt_model::rgpt::{ExampleImage, RegionGpt, TrainingExample};
use rgpt_model::splice::Segment;
use rgpt_region::RegionSpec;
use rgpt_train::freeze::{set_trainable, Part, Stage};
use rgpt_train::optimizer::{AdamW, AdamWConfig};
use rgpt_train::step::accumulate_gradients;
use rgpt_vision::preprocess::{load_image, ImageTransform, PreprocessorConfig};
use tch::nn::{self, OptimizerConfig};
use tch::{Device, Kind, Tensor};

struct Data {
    segments: Vec<Vec<Segment>>,
    regions: Vec<Vec<RegionSpec>>,
    pixels: Tensor,
    transform: ImageTransform,
}

fn data() -> Data {
    let tokenizer = Tokenizer::from_dir(&common::fixture()).unwrap();
    let placeholders = Placeholders {
        image: tokenizer.token_to_id("<image>").unwrap(),
        region: tokenizer.token_to_id("<region>").unwrap(),
    };
    let specs = [
        "box:2,3,20,18",
        "poly:22,4,38,6,30,26",
        "point:30,10,4",
        "box:0,0,40,30",
    ];
    let answers = [
        "A red circle.",
        "A blue square, quite large.",
        "Green.",
        "The whole picture.",
    ];
    let mut segments = Vec::new();
    let mut regions = Vec::new();
    for (spec, answer) in specs.iter().zip(answers) {
        let mut conv = Conversation::new(Template::VicunaV1);
        conv.push(Role::User, Some("<image>\nWhat is <region>?".into()));
        conv.push(Role::Assistant, Some(answer.into()));
        segments.push(conversation_segments(&tokenizer, &conv, placeholders).unwrap());
        regions.push(vec![spec.parse().unwrap()]);
    }
    let config =
        PreprocessorConfig::from_file(common::fixture().join("preprocessor_config.json")).unwrap();
    let processed = config
        .preprocess(&load_image(common::fixture().join("image.png")).unwrap())
        .unwrap();
    Data {
        segments,
        regions,
        pixels: processed.pixel_values,
        transform: processed.transform,
    }
}

fn examples(data: &Data) -> Vec<TrainingExample<'_>> {
    data.segments
        .iter()
        .zip(&data.regions)
        .map(|(segments, regions)| TrainingExample {
            segments,
            image: Some(ExampleImage {
                pixel_values: &data.pixels,
                transform: &data.transform,
            }),
            regions,
            region_names: &[],
            region_targets: &[],
        })
        .collect()
}

#[test]
fn adamw_equals_libtorch_adamw() {
    tch::manual_seed(1);
    let config = AdamWConfig {
        weight_decay: 0.1,
        ..AdamWConfig::default()
    };
    let ours_vs = nn::VarStore::new(Device::Cpu);
    let theirs_vs = nn::VarStore::new(Device::Cpu);
    let init = Tensor::randn([5, 3], (Kind::Float, Device::Cpu));
    let ours = ours_vs.root().var_copy("w", &init);
    let theirs = theirs_vs.root().var_copy("w", &init);
    let mut adamw = AdamW::new(vec![("w".into(), ours.shallow_clone())], config);
    let mut reference = nn::AdamW {
        beta1: 0.9,
        beta2: 0.999,
        wd: 0.1,
        eps: 1e-8,
        amsgrad: false,
    }
    .build(&theirs_vs, 1e-2)
    .unwrap();
    for step in 0..5 {
        let target = Tensor::randn([5, 3], (Kind::Float, Device::Cpu));
        adamw.zero_grad();
        (&ours - &target).square().sum(Kind::Float).backward();
        adamw.step(1e-2 * (step + 1) as f64);
        reference.set_lr(1e-2 * (step + 1) as f64);
        reference.zero_grad();
        (&theirs - &target).square().sum(Kind::Float).backward();
        reference.step();
    }
    let diff = f64::try_from((&ours - &theirs).abs().max()).unwrap();
    assert!(diff < 1e-6, "{diff}");
}

#[test]
fn a_bf16_variable_learns_through_its_f32_master_copy() {
    // Adam's update with a constant gradient is exactly lr, 1e-3: an
    // eighth of bf16's spacing at 1.0 (2^-7), so a bf16 weight updated in
    // place would round back to 1.0 every step.
    let mut vs = nn::VarStore::new(Device::Cpu);
    let weight = vs.root().ones("w", &[4]);
    vs.bfloat16();
    assert_eq!(weight.kind(), Kind::BFloat16);
    let mut adamw = AdamW::new(
        vec![("w".into(), weight.shallow_clone())],
        AdamWConfig::default(),
    );
    for _ in 0..10 {
        adamw.zero_grad();
        weight.to_kind(Kind::Float).sum(Kind::Float).backward();
        adamw.step(1e-3);
    }
    let (state, _) = adamw.state();
    let master = state
        .iter()
        .find(|(n, _)| n == "master.w")
        .unwrap()
        .1
        .copy();
    assert_eq!(master.kind(), Kind::Float);
    let expected = Tensor::full([4], 1.0 - 10.0 * 1e-3, (Kind::Float, Device::Cpu));
    let drift = f64::try_from((&master - &expected).abs().max()).unwrap();
    assert!(drift < 1e-6, "{drift}");
    assert_eq!(weight.kind(), Kind::BFloat16);
    assert!(weight.equal(&master.to_kind(Kind::BFloat16)));
    assert!(f64::try_from(weight.max()).unwrap() < 1.0);

    // Resuming restores the master, not the rounded weight.
    let mut restored_vs = nn::VarStore::new(Device::Cpu);
    let restored = restored_vs.root().ones("w", &[4]);
    restored_vs.bfloat16();
    let mut resumed = AdamW::new(
        vec![("w".into(), restored.shallow_clone())],
        AdamWConfig::default(),
    );
    let saved: std::collections::BTreeMap<String, Tensor> =
        state.into_iter().map(|(n, t)| (n, t.copy())).collect();
    resumed.load_state(&saved, 10).unwrap();
    assert!(resumed
        .state()
        .0
        .iter()
        .any(|(n, t)| n == "master.w" && t.equal(&master)));
}

#[test]
fn pretraining_freezes_the_tower_and_the_llm() {
    let (model, mut vs) =
        RegionGpt::from_pretrained(&common::fixture(), Device::Cpu, Kind::Float).unwrap();
    vs.unfreeze();
    let trainable = set_trainable(&vs, &Stage::Pretrain.trainable());
    assert!(trainable
        .iter()
        .all(|n| matches!(Part::of(n), Some(Part::Refiner | Part::Connector))));
    let before = common::snapshot(&vs);
    let vars = vs.variables();
    let mut adamw = AdamW::new(
        trainable
            .iter()
            .map(|n| (n.clone(), vars[n].shallow_clone()))
            .collect(),
        AdamWConfig::default(),
    );
    let data = data();
    accumulate_gradients(&model, &[examples(&data)], 0.0).unwrap();
    adamw.step(1e-3);
    for (name, old) in &before {
        let var = &vars[name];
        let part = Part::of(name);
        let frozen = matches!(part, Some(Part::Vision | Part::Llm));
        if frozen {
            assert!(!var.grad().defined(), "{name} got a gradient");
            assert!(var.equal(old), "{name} changed");
            assert!(
                !adamw.names().any(|n| n == name),
                "{name} has optimiser state"
            );
        } else if name.ends_with("weight") {
            assert!(!var.equal(old), "{name} did not train");
        }
    }
}

#[test]
fn four_accumulated_micro_batches_equal_one_batch() {
    let (model, mut vs) =
        RegionGpt::from_pretrained(&common::fixture(), Device::Cpu, Kind::Float).unwrap();
    vs.unfreeze();
    set_trainable(&vs, &Stage::Finetune.trainable());
    let data = data();
    let tokenizer = Tokenizer::from_dir(&common::fixture()).unwrap();
    let names: Vec<Vec<Vec<i64>>> = ["red circle", "blue square", "green", "picture"]
        .iter()
        .map(|name| vec![tokenizer.encode(name, false).unwrap()])
        .collect();
    let grads = |micro: Vec<Vec<TrainingExample<'_>>>, align_weight| {
        for (_, v) in vs.variables() {
            let mut g = v.grad();
            if g.defined() {
                let _ = g.zero_();
            }
        }
        let loss = accumulate_gradients(&model, &micro, align_weight).unwrap();
        let grads: Vec<(String, Tensor)> = vs
            .variables()
            .into_iter()
            .filter(|(_, v)| v.grad().defined())
            .map(|(n, v)| (n, v.grad().copy()))
            .collect();
        (loss, grads)
    };
    // The answers' loss alone, then with the regions' alignment beside it:
    // both are means over the whole step, however it is split.
    for align_weight in [0.0, 2.0] {
        let mut all = examples(&data);
        if align_weight > 0.0 {
            for (example, targets) in all.iter_mut().zip(&names) {
                example.region_targets = targets;
            }
        }
        let (one_loss, one) = grads(vec![all.clone()], align_weight);
        let (four_loss, four) = grads(all.into_iter().map(|e| vec![e]).collect(), align_weight);
        assert!((one_loss.loss - four_loss.loss).abs() < 1e-5);
        assert_eq!(one_loss.target_tokens, four_loss.target_tokens);
        match (one_loss.alignment, four_loss.alignment) {
            (None, None) => assert_eq!(align_weight, 0.0),
            (Some(a), Some(b)) => assert!(a > 0.0 && (a - b).abs() < 1e-5, "{a} / {b}"),
            other => panic!("alignment measured in one split only: {other:?}"),
        }
        assert_eq!(one.len(), four.len());
        let four: std::collections::HashMap<String, Tensor> = four.into_iter().collect();
        for (name, g) in &one {
            let diff = f64::try_from((g - &four[name]).abs().max()).unwrap();
            let scale = f64::try_from(g.abs().max()).unwrap().max(1e-8);
            assert!(diff / scale < 1e-4, "{name}: {diff} (max {scale})");
        }
    }
}

#[test]
fn a_few_steps_lower_the_loss_on_a_fixed_batch() {
    let (model, mut vs) =
        RegionGpt::from_pretrained(&common::fixture(), Device::Cpu, Kind::Float).unwrap();
    vs.unfreeze();
    let trainable = set_trainable(&vs, &Stage::Finetune.trainable());
    let vars = vs.variables();
    let mut adamw = AdamW::new(
        trainable
            .iter()
            .map(|n| (n.clone(), vars[n].shallow_clone()))
            .collect(),
        AdamWConfig::default(),
    );
    let data = data();
    let mut losses = Vec::new();
    for _ in 0..8 {
        adamw.zero_grad();
        let loss = accumulate_gradients(&model, &[examples(&data)], 0.0).unwrap();
        adamw.clip_grad_norm(1.0);
        adamw.step(3e-3);
        losses.push(loss.loss);
    }
    assert!(losses[7] < losses[0] * 0.7, "{losses:?}");
}
