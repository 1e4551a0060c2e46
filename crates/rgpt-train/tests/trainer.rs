//! The training loop from a YAML config on the tiny RGPT fixture: config
//! errors are caught before work starts, metrics are written, and a run
//! interrupted and resumed ends with the same weights as one that was not.
mod common;

use std::path::Path;

use rgpt_data::PromptBank;
use rgpt_train::config::TrainConfig;
use rgpt_train::schedule::Schedule;
use rgpt_train::trainer::Trainer;

use common::{root, setup, snapshot};

fn weights(trainer: &Trainer) -> Vec<(String, tch::Tensor)> {
    let mut vars: Vec<_> = trainer.vs.variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    vars
}

/// Every variable of `a` equals `b`'s of the same name, bit for bit, and
/// neither has a variable the other lacks.
fn assert_same_weights(a: &Trainer, b: &Trainer, what: &str) {
    let (a, b) = (weights(a), weights(b));
    assert!(!a.is_empty());
    let names = |w: &[(String, tch::Tensor)]| w.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(names(&a), names(&b), "{what}: other variables");
    for ((name, x), (_, y)) in a.iter().zip(&b) {
        assert!(x.equal(y), "{name} differs {what}");
    }
}

/// The two runs' last checkpoints hold the same bytes: weights, every
/// optimiser tensor, and state.json (step, data position, optimiser steps).
fn assert_same_checkpoints(a: &Path, b: &Path) {
    for file in ["model.safetensors", "optimizer.safetensors", "state.json"] {
        let read = |run: &Path| std::fs::read(run.join("checkpoint").join(file)).unwrap();
        assert!(
            read(a) == read(b),
            "checkpoint/{file} differs after resuming"
        );
    }
}

#[test]
fn an_interrupted_run_resumes_to_the_same_weights() {
    let dir = setup("resume", "");
    let config = TrainConfig::from_file(&dir.join("train.yaml")).unwrap();
    let mut whole = Trainer::new(config.clone()).unwrap();
    let mut losses = Vec::new();
    whole.run(None, &mut |m| losses.push(m.loss)).unwrap();
    assert_eq!(whole.state.step, 4);
    let metrics = std::fs::read_to_string(dir.join("run/metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 4);
    for line in metrics.lines() {
        let record: serde_json::Value = serde_json::from_str(line).unwrap();
        let memory = record["memory_mb"].as_f64();
        assert!(memory.is_some_and(|mb| mb > 0.0), "{line}");
    }
    assert!(losses.iter().all(|l| l.is_finite()));

    let mut config2 = config;
    config2.output_dir = dir.join("run2");
    let mut first = Trainer::new(config2.clone()).unwrap();
    first.run(Some(2), &mut |_| {}).unwrap();
    assert_eq!(first.state.step, 2);
    drop(first);
    let mut resumed = Trainer::new(config2).unwrap();
    assert!(resumed.resume().unwrap());
    assert_eq!(resumed.state.step, 2);
    let mut resumed_losses = Vec::new();
    resumed
        .run(None, &mut |m| resumed_losses.push(m.loss))
        .unwrap();
    // Bit for bit, as the README says: the losses after resuming, every
    // weight, and the final checkpoints' files (weights, every optimiser
    // tensor, state.json with the step and data position).
    assert_eq!(resumed_losses, losses[2..], "the losses after resuming");
    assert_same_weights(&whole, &resumed, "after resuming");
    assert_same_checkpoints(&dir.join("run"), &dir.join("run2"));
    let model = resumed.save_model().unwrap();
    assert!(model.join("config.json").is_file() && model.join("tokenizer.json").is_file());
}

/// Steps logged after the last checkpoint run again on resume; the log
/// keeps each step once (before issue 25 they were logged twice).
#[test]
fn a_resumed_run_logs_each_step_once() {
    let dir = setup("resume-log", "");
    let mut config = TrainConfig::from_file(&dir.join("train.yaml")).unwrap();
    config.checkpoint_every = 2;
    let mut first = Trainer::new(config.clone()).unwrap();
    first.run(Some(3), &mut |_| {}).unwrap();
    drop(first);
    let log = dir.join("run/metrics.jsonl");
    // Step 3 was logged, then lost with the interruption; a torn line too.
    let mut text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(text.lines().count(), 3);
    text.push_str("{\"step\": 4, \"lo");
    std::fs::write(&log, text).unwrap();
    let mut resumed = Trainer::new(config).unwrap();
    assert!(resumed.resume().unwrap());
    assert_eq!(resumed.state.step, 2);
    resumed.run(None, &mut |_| {}).unwrap();
    let steps: Vec<u64> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|line| {
            serde_json::from_str::<serde_json::Value>(line).unwrap()["step"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(steps, [1, 2, 3, 4]);
}

#[test]
fn the_schedule_sets_each_steps_learning_rate() {
    // 4 steps, warm-up 0.03: one warm-up step at lr 0, then the schedule.
    for (name, schedule) in [
        ("cosine", Schedule::Cosine),
        ("constant", Schedule::Constant),
    ] {
        let dir = setup(&format!("schedule-{name}"), &format!("schedule: {name}\n"));
        let config = TrainConfig::from_file(&dir.join("train.yaml")).unwrap();
        assert_eq!(config.schedule, schedule);
        let mut trainer = Trainer::new(config).unwrap();
        let mut lrs = Vec::new();
        trainer.run(None, &mut |m| lrs.push(m.lr)).unwrap();
        let expected: Vec<f64> = (0..4).map(|s| schedule.lr(0.003, s, 4, 0.03)).collect();
        assert_eq!(lrs, expected, "{name}");
        let after_warmup = &lrs[1..];
        match schedule {
            Schedule::Constant => assert!(after_warmup.iter().all(|&lr| lr == 0.003)),
            Schedule::Cosine => assert!(after_warmup.windows(2).all(|w| w[1] < w[0])),
        }
    }
}

#[test]
fn held_out_samples_with_missing_images_are_refused_before_any_work() {
    let dir = setup("eval-missing", "eval: {files: [val.jsonl], every: 2}\n");
    let coco = std::fs::read_to_string(dir.join("coco.jsonl")).unwrap();
    let first: serde_json::Value = serde_json::from_str(coco.lines().next().unwrap()).unwrap();
    let image = first["image"].as_str().unwrap();
    std::fs::write(dir.join("val.jsonl"), coco.replacen(image, "gone.jpg", 1)).unwrap();
    let config = TrainConfig::from_file(&dir.join("train.yaml")).unwrap();
    let err = Trainer::new(config)
        .err()
        .expect("a missing held-out image");
    let err = err.to_string();
    assert!(
        err.contains("eval.files") && err.contains("1 of") && err.contains("gone.jpg"),
        "{err}"
    );
    assert!(!dir.join("run").exists(), "work started before the check");
}

#[test]
fn held_out_samples_with_missing_mask_files_are_refused_before_any_work() {
    let dir = setup(
        "eval-missing-mask",
        "eval: {files: [val.jsonl], every: 2}\n",
    );
    let coco = std::fs::read_to_string(dir.join("coco.jsonl")).unwrap();
    let mut first: rgpt_data::format::Sample =
        serde_json::from_str(coco.lines().next().unwrap()).unwrap();
    first.regions[0] = rgpt_data::format::Region::Mask("masks/gone.png".into());
    std::fs::write(
        dir.join("val.jsonl"),
        serde_json::to_string(&first).unwrap() + "\n",
    )
    .unwrap();
    let config = TrainConfig::from_file(&dir.join("train.yaml")).unwrap();
    let err = Trainer::new(config)
        .err()
        .expect("a missing held-out mask file")
        .to_string();
    assert!(
        err.contains("eval.files") && err.contains("1 of") && err.contains("masks/gone.png"),
        "{err}"
    );
    assert!(!dir.join("run").exists(), "work started before the check");
}

#[test]
fn held_out_loss_is_scored_on_the_named_steps_without_changing_training() {
    let dir = setup(
        "eval",
        "eval: {files: [coco.jsonl], every: 3, max_samples: 6}\n",
    );
    let config = TrainConfig::from_file(&dir.join("train.yaml")).unwrap();
    let mut scored = Trainer::new(config.clone()).unwrap();
    let mut seen = Vec::new();
    scored
        .run(None, &mut |m| seen.push((m.step, m.eval_loss)))
        .unwrap();
    // Every third step and the last.
    let steps: Vec<u64> = seen.iter().filter(|s| s.1.is_some()).map(|s| s.0).collect();
    assert_eq!(steps, [3, 4]);
    // Evaluation records in metrics.jsonl, which `rgpt plot` draws.
    let log = rgpt_train::metrics::MetricsLog::read(&dir.join("run/metrics.jsonl")).unwrap();
    assert_eq!(log.steps.len(), 4);
    let logged: Vec<(u64, f64)> = seen.iter().filter_map(|s| Some((s.0, s.1?))).collect();
    assert_eq!(log.eval["held_out_loss"], logged);
    // The last score is the final weights' loss on those samples, and
    // scoring twice gives the same number: no gradient, no state.
    let last = seen[3].1.unwrap();
    assert!(last.is_finite() && last > 0.0);
    assert_eq!(scored.eval_loss().unwrap(), Some(last));
    assert_ne!(
        seen[2].1,
        Some(last),
        "the weights changed between steps 3 and 4"
    );

    let mut plain_config = config;
    plain_config.eval = None;
    plain_config.output_dir = dir.join("plain");
    let mut plain = Trainer::new(plain_config).unwrap();
    plain
        .run(None, &mut |m| assert!(m.eval_loss.is_none()))
        .unwrap();
    assert_eq!(plain.eval_loss().unwrap(), None);
    assert_same_weights(&scored, &plain, "when evaluation is on");
}

#[test]
fn a_bf16_run_keeps_frozen_parts_in_bf16_and_resumes_exactly() {
    // Pre-training: the tower and the LLM are frozen.
    let dir = setup("bf16", "dtype: bf16\ndevice: cpu\n");
    let text = std::fs::read_to_string(dir.join("train.yaml")).unwrap();
    std::fs::write(
        dir.join("train.yaml"),
        text.replace("stage: finetune", "stage: pretrain"),
    )
    .unwrap();
    let config = TrainConfig::from_file(&dir.join("train.yaml")).unwrap();
    let mut whole = Trainer::new(config.clone()).unwrap();
    let before = snapshot(&whole.vs);
    let mut losses = Vec::new();
    whole.run(None, &mut |m| losses.push(m.loss)).unwrap();
    assert!(losses.iter().all(|l| l.is_finite()), "{losses:?}");
    let mut trained = 0;
    for (name, new) in weights(&whole) {
        let old = &before[&name];
        assert_eq!(new.kind(), tch::Kind::BFloat16, "{name}");
        let frozen = name.starts_with("vision_tower.") || name.starts_with("language_model.");
        if frozen {
            assert!(old.equal(&new) && !new.grad().defined(), "{name} trained");
        } else {
            trained += usize::from(!old.equal(&new));
        }
    }
    assert!(trained > 0);

    let mut config2 = config;
    config2.output_dir = dir.join("run2");
    let mut first = Trainer::new(config2.clone()).unwrap();
    first.run(Some(2), &mut |_| {}).unwrap();
    drop(first);
    let mut resumed = Trainer::new(config2).unwrap();
    assert!(resumed.resume().unwrap());
    resumed.run(None, &mut |_| {}).unwrap();
    assert_same_weights(&whole, &resumed, "after resuming");
    assert_same_checkpoints(&dir.join("run"), &dir.join("run2"));
}

fn config_error(tag: &str, edit: impl Fn(&str) -> String) -> String {
    let dir = setup(tag, "");
    let path = dir.join("train.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, edit(&text)).unwrap();
    TrainConfig::from_file(Path::new(&path))
        .unwrap_err()
        .to_string()
}

#[test]
fn config_mistakes_are_caught_before_any_work() {
    let typo = config_error("typo", |t| t.replace("micro_batch", "mikro_batch"));
    assert!(typo.contains("mikro_batch"), "{typo}");
    let zero_lr = config_error("lr", |t| t.replace("lr: 0.003", "lr: 0"));
    assert!(zero_lr.contains("lr"), "{zero_lr}");
    let device = config_error("device", |t| format!("{t}device: tpu\n"));
    assert!(
        device.contains("device") && device.contains("tpu"),
        "{device}"
    );
    if tch::Cuda::device_count() < 8 {
        let gpu = config_error("gpu", |t| format!("{t}device: cuda:7\n"));
        assert!(gpu.contains("device") && gpu.contains("CUDA GPU"), "{gpu}");
    }
    let every = config_error("every", |t| {
        format!("{t}eval: {{files: [coco.jsonl], every: 0}}\n")
    });
    assert!(every.contains("eval.every"), "{every}");
    let held_out = config_error("held-out", |t| {
        format!("{t}eval: {{files: [val.jsonl], every: 10}}\n")
    });
    assert!(
        held_out.contains("eval.files") && held_out.contains("val.jsonl"),
        "{held_out}"
    );
    let indivisible = config_error("batch", |t| t.replace("global_batch: 4", "global_batch: 5"));
    assert!(
        indivisible.contains("not a multiple of micro_batch"),
        "{indivisible}"
    );
    let align = config_error("align", |t| format!("{t}align_regions: -1\n"));
    assert!(align.contains("align_regions"), "{align}");
    let missing = config_error("data", |t| t.replace("coco.jsonl", "nope.jsonl"));
    assert!(missing.contains("nope.jsonl does not exist"), "{missing}");
    // Accepted silently before issue 25.
    let clip = config_error("clip", |t| {
        format!(
            "{t}grad_clip: -1
"
        )
    });
    assert!(clip.contains("grad_clip") && clip.contains("-1"), "{clip}");
    let epochs = config_error("epochs", |t| {
        format!(
            "{t}epochs: 0
"
        )
    });
    assert!(epochs.contains("epochs"), "{epochs}");
}

/// The paper's configs parse with every field known; they only fail on
/// the data and weights a user has not downloaded yet.
#[test]
fn the_paper_configs_parse_and_name_what_is_missing() {
    for (name, lr, batch) in [
        ("rgpt-7b-pretrain", 1e-3, 256),
        ("rgpt-7b-finetune", 2e-5, 128),
    ] {
        let path = root().join(format!("configs/{name}.yaml"));
        let text = std::fs::read_to_string(&path).unwrap();
        let config: TrainConfig = serde_yaml::from_str(&text).unwrap();
        assert_eq!((config.lr, config.global_batch), (lr, batch));
        assert_eq!(config.warmup_ratio, 0.03);
        assert_eq!(config.optimizer.weight_decay, 0.0);
        let err = TrainConfig::from_file(&path).unwrap_err().to_string();
        assert!(
            err.contains("does not exist") || err.contains("not a model directory"),
            "{err}"
        );
    }
}

/// A model trained from nothing on the synthetic world: its tokenizer is
/// trained on the world's text, the loss falls, and the saved model is a
/// normal RGPT checkpoint that loads and answers.
#[test]
fn a_tiny_model_trains_from_scratch_on_the_synthetic_world() {
    let dir = std::env::temp_dir().join(format!("rgpt-train-tiny-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let prompts = PromptBank::from_dir(&root().join("configs/prompts")).unwrap();
    let world = rgpt_data::synth::SynthConfig {
        images: 16,
        seed: 1,
        ..Default::default()
    };
    rgpt_data::synth::write_world(&world, &prompts, &dir.join("world")).unwrap();
    std::fs::write(
        dir.join("train.yaml"),
        "model:\n  tiny: {vision_hidden: 32, vision_layers: 2, vision_heads: 2, hidden: 64, \
         layers: 2, heads: 2, intermediate: 128, vocab_size: 400}\n\
         data:\n  files: [{path: world/synth-shape.jsonl}, {path: world/synth-color.jsonl}]\n  \
         image_root: world\nstage: {custom: [vision, refiner, connector, llm]}\nlr: 0.003\n\
         global_batch: 8\nmicro_batch: 4\nsteps: 10\ncheckpoint_every: 100\noutput_dir: run\n\
         loader_workers: 1\n",
    )
    .unwrap();
    let config = TrainConfig::from_file(&dir.join("train.yaml")).unwrap();
    let mut trainer = Trainer::new(config).unwrap();
    let mut losses = Vec::new();
    trainer.run(None, &mut |m| losses.push(m.loss)).unwrap();
    assert!(losses[9] < losses[0] * 0.8, "{losses:?}");
    let model = trainer.save_model().unwrap();
    let generator =
        rgpt_model::chat::RegionGenerator::load(&model, tch::Device::Cpu, tch::Kind::Float)
            .unwrap();
    let image = rgpt_vision::preprocess::load_image(dir.join("world/images/000000.png")).unwrap();
    let region: rgpt_region::RegionSpec = "box:0,0,32,32".parse().unwrap();
    let config = rgpt_llm::generation::GenerationConfig {
        max_new_tokens: 3,
        ..generator.default_config()
    };
    generator
        .complete(
            "What colour is <region>?",
            &image,
            &[region],
            rgpt_llm::Template::VicunaV1,
            &config,
            &mut |_| {},
        )
        .unwrap();

    // The same tiny model in bf16: built on the CPU in f32, then every
    // weight moves to the run's dtype.
    let text = std::fs::read_to_string(dir.join("train.yaml")).unwrap();
    let text = text.replace("output_dir: run", "output_dir: run-bf16\ndtype: bf16");
    std::fs::write(dir.join("bf16.yaml"), text).unwrap();
    let config = TrainConfig::from_file(&dir.join("bf16.yaml")).unwrap();
    let mut half = Trainer::new(config).unwrap();
    assert!(half
        .vs
        .variables()
        .values()
        .all(|v| v.kind() == tch::Kind::BFloat16));
    let mut losses = Vec::new();
    half.run(Some(2), &mut |m| losses.push(m.loss)).unwrap();
    assert!(
        losses.len() == 2 && losses.iter().all(|l| l.is_finite()),
        "{losses:?}"
    );
}

/// A diverging run stops at the first non-finite loss, names the step, and
/// leaves the checkpoint of the last good step in place.
#[test]
fn a_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint() {
    let dir = setup("nan", "");
    let path = dir.join("train.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let text = text
        .replace("lr: 0.003", "lr: 1.0e+9")
        .replace("steps: 4", "steps: 40")
        + "grad_clip: 0\nwarmup_ratio: 0\n";
    std::fs::write(&path, text).unwrap();
    let config = TrainConfig::from_file(&path).unwrap();
    let mut trainer = Trainer::new(config).unwrap();
    let err = trainer.run(None, &mut |_| {}).unwrap_err();
    let rgpt_train::TrainError::NonFiniteLoss { step, .. } = err else {
        panic!("expected a non-finite loss, got {err}")
    };
    assert!(err_message_names_step(step));
    assert_eq!(trainer.state.step, step - 1);
    let saved: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("run/checkpoint/state.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(saved["run"]["step"].as_u64(), Some(step - 1));
}

fn err_message_names_step(step: u64) -> bool {
    let err = rgpt_train::TrainError::NonFiniteLoss {
        step,
        loss: f64::NAN,
    };
    err.to_string()
        .starts_with(&format!("step {step}: the loss is NaN"))
}

#[test]
fn numbered_regions_take_the_tokenizers_number_tokens() {
    let bare = || {
        let mut tokenizer =
            rgpt_llm::Tokenizer::train_bpe(["a red circle".to_string()].iter(), 100, false)
                .unwrap();
        tokenizer
            .add_special_tokens(&["<image>", "<region>"])
            .unwrap();
        tokenizer
    };
    let spec = rgpt_train::scratch::TinySpec {
        number_regions: true,
        ..common::small_tiny_spec()
    };
    // The demo's BPE learns `▁[1`, `▁[2`, ... from `Region [k]`; here they
    // are added, three of them.
    let mut tokenizer = bare();
    tokenizer
        .add_special_tokens(&["\u{2581}[1", "\u{2581}[2", "\u{2581}[3"])
        .unwrap();
    let (model, _vs, _) =
        rgpt_train::scratch::build_tiny_with_tokenizer(&spec, &tokenizer, 0).unwrap();
    let expected: Vec<i64> = (1..=3)
        .map(|k| tokenizer.token_to_id(&format!("\u{2581}[{k}")).unwrap())
        .collect();
    assert_eq!(model.section.extensions.region_index_tokens, expected);
    // Off, the regions carry no number.
    let (plain, _vs, _) =
        rgpt_train::scratch::build_tiny_with_tokenizer(&common::small_tiny_spec(), &tokenizer, 0)
            .unwrap();
    assert!(plain.section.extensions.region_index_tokens.is_empty());
    // A tokenizer that splits punctuation off writes `[`, `2`, `]`: the
    // bare numbers number the regions.
    let mut split = bare();
    split.add_special_tokens(&["1", "2"]).unwrap();
    let (model, _vs, _) = rgpt_train::scratch::build_tiny_with_tokenizer(&spec, &split, 0).unwrap();
    let expected: Vec<i64> = ["1", "2"].map(|k| split.token_to_id(k).unwrap()).to_vec();
    assert_eq!(model.section.extensions.region_index_tokens, expected);

    // A tokenizer without `▁[1` or `1` cannot number regions.
    let err = match rgpt_train::scratch::build_tiny_with_tokenizer(&spec, &bare(), 0) {
        Ok(_) => panic!("numbering needs the number tokens"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("number_regions") && err.contains("\u{2581}[1"),
        "{err}"
    );
}

#[test]
fn aligned_regions_move_towards_their_names_codes() {
    let dir = std::env::temp_dir().join(format!("rgpt-train-align-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let prompts = PromptBank::from_dir(&root().join("configs/prompts")).unwrap();
    for (name, text_regions) in [
        ("named", rgpt_data::synth::text::TextRegions::ColourShape),
        ("plain", rgpt_data::synth::text::TextRegions::Words),
    ] {
        let world = rgpt_data::synth::SynthConfig {
            images: 16,
            seed: 2,
            text: true,
            text_regions,
            ..Default::default()
        };
        rgpt_data::synth::write_world(&world, &prompts, &dir.join(name)).unwrap();
    }
    let config = |world: &str, run: &str| {
        format!(
            "model:\n  tiny: {{vision_hidden: 32, vision_layers: 2, vision_heads: 2, hidden: 64, \
             layers: 2, heads: 2, intermediate: 128, vocab_size: 400}}\n\
             data:\n  files: [{{path: {world}/synth-shape.jsonl}}, {{path: {world}/synth-rec.jsonl}}]\n  \
             image_root: {world}\nstage: pretrain\nlr: 0.003\nalign_regions: 1.0\n\
             global_batch: 8\nmicro_batch: 4\nsteps: 10\ncheckpoint_every: 100\noutput_dir: {run}\n\
             loader_workers: 1\n"
        )
    };
    std::fs::write(dir.join("align.yaml"), config("named", "run")).unwrap();
    let mut trainer =
        Trainer::new(TrainConfig::from_file(&dir.join("align.yaml")).unwrap()).unwrap();
    let mut alignment = Vec::new();
    trainer
        .run(None, &mut |m| {
            alignment.push(m.align_loss.expect("recorded"))
        })
        .unwrap();
    assert!(alignment[9] < alignment[0] * 0.5, "{alignment:?}");
    let metrics = std::fs::read_to_string(dir.join("run/metrics.jsonl")).unwrap();
    assert!(
        metrics.lines().all(|l| l.contains("\"align_loss\"")),
        "{metrics}"
    );

    // A world that names no regions is refused, naming the sample and the
    // setting.
    std::fs::write(dir.join("plain.yaml"), config("plain", "run-plain")).unwrap();
    let mut trainer =
        Trainer::new(TrainConfig::from_file(&dir.join("plain.yaml")).unwrap()).unwrap();
    let err = trainer.run(None, &mut |_| {}).unwrap_err().to_string();
    assert!(
        err.contains("align_regions") && err.contains("synth-") && err.contains("region_names"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Unusable samples are counted before the run starts and reported in the
/// first metrics record (before issue 25 they were counted only as they
/// failed, and reported only when every sample did); `data.strict` refuses
/// the run on the first.
#[test]
fn unusable_samples_are_reported_at_the_start_or_refused_with_strict() {
    let dir = setup("skips", "");
    let coco = dir.join("coco.jsonl");
    let mut samples = rgpt_data::format::read_all_samples(&coco).unwrap();
    let usable = samples.len();
    let mut missing_image = samples[0].clone();
    missing_image.id = "gone".into();
    missing_image.image = Some("no_such_image.jpg".into());
    let mut mismatched = samples[0].clone();
    mismatched.id = "mismatched".into();
    mismatched.conversations[0].value = mismatched.conversations[0].value.replace("<image>", "");
    samples.push(missing_image);
    samples.push(mismatched);
    rgpt_data::format::write_samples(&coco, &samples).unwrap();

    let config = TrainConfig::from_file(&dir.join("train.yaml")).unwrap();
    let mut trainer = Trainer::new(config.clone()).unwrap();
    let skipped = trainer.skipped().clone();
    assert_eq!(skipped.total(), 2, "{skipped}");
    assert_eq!(skipped.count("image missing"), 1, "{skipped}");
    assert_eq!(skipped.count("invalid sample"), 1, "{skipped}");
    assert!(
        skipped.to_string().contains("no_such_image.jpg"),
        "{skipped}"
    );
    trainer.run(Some(1), &mut |_| {}).unwrap();
    let first = std::fs::read_to_string(dir.join("run/metrics.jsonl")).unwrap();
    let first: serde_json::Value = serde_json::from_str(first.lines().next().unwrap()).unwrap();
    assert_eq!(
        first["skipped"]["reasons"]["image missing"]["count"], 1,
        "{first}"
    );
    drop(trainer);

    let mut strict = config;
    strict.data.strict = true;
    strict.output_dir = dir.join("strict");
    let e = Trainer::new(strict)
        .err()
        .expect("strict refuses")
        .to_string();
    // The first unusable sample in the run's (mixed) order is the error.
    assert!(
        e.contains("data.strict") && (e.contains("gone") || e.contains("mismatched")),
        "{e}"
    );
    assert!(usable >= 2);
}
