//! LoRA fine-tuning from a YAML config on the tiny RGPT fixture: only the
//! adapters of the LLM train (its own weights get no gradient and no
//! optimiser state), checkpoints keep the adapters so a resumed run ends
//! where an uninterrupted one does, and the saved model has them merged in:
//! it loads as a plain RGPT checkpoint and gives the training model's
//! logits (1e-5 absolute on f32: only the order of additions differs).
mod common;

use rgpt_llm::lora::is_adapter_variable;
use rgpt_llm::{Conversation, Role, Template, Tokenizer};
use rgpt_model::prompt::{conversation_segments, Placeholders};
use rgpt_model::rgpt::{ExampleImage, RegionGpt, TrainingExample};
use rgpt_region::RegionSpec;
use rgpt_train::config::TrainConfig;
use rgpt_train::freeze::Part;
use rgpt_train::trainer::Trainer;
use rgpt_vision::preprocess::{load_image, PreprocessorConfig};
use tch::{Device, Kind, Tensor};

use common::{fixture, setup, snapshot};

const LORA: &str = "lora: {rank: 4, alpha: 8, target_modules: [q_proj, v_proj]}\n";

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    f64::try_from((a - b).abs().max()).unwrap()
}

/// Training-forward logits of two fixed examples.
fn logits(model: &RegionGpt) -> Tensor {
    let _guard = tch::no_grad_guard();
    let tokenizer = Tokenizer::from_dir(&fixture()).unwrap();
    let placeholders = Placeholders {
        image: tokenizer.token_to_id("<image>").unwrap(),
        region: tokenizer.token_to_id("<region>").unwrap(),
    };
    let config = PreprocessorConfig::from_file(fixture().join("preprocessor_config.json")).unwrap();
    let processed = config
        .preprocess(&load_image(fixture().join("image.png")).unwrap())
        .unwrap();
    let cases = [
        ("box:2,3,20,18", "A red circle."),
        ("point:30,10,4", "Green."),
    ];
    let mut segments = Vec::new();
    let mut regions: Vec<Vec<RegionSpec>> = Vec::new();
    for (spec, answer) in cases {
        let mut conv = Conversation::new(Template::VicunaV1);
        conv.push(Role::User, Some("<image>\nWhat is <region>?".into()));
        conv.push(Role::Assistant, Some(answer.into()));
        segments.push(conversation_segments(&tokenizer, &conv, placeholders).unwrap());
        regions.push(vec![spec.parse().unwrap()]);
    }
    let examples: Vec<TrainingExample<'_>> = segments
        .iter()
        .zip(&regions)
        .map(|(segments, regions)| TrainingExample {
            segments,
            image: Some(ExampleImage {
                pixel_values: &processed.pixel_values,
                transform: &processed.transform,
            }),
            regions,
            region_names: &[],
            region_targets: &[],
        })
        .collect();
    model
        .llava
        .llm
        .logits(&model.forward_train(&examples).unwrap().hidden)
}

#[test]
fn lora_trains_only_the_adapters_and_saves_a_merged_model() {
    let dir = setup("lora-train", LORA);
    let config = TrainConfig::from_file(&dir.join("train.yaml")).unwrap();
    let mut trainer = Trainer::new(config).unwrap();
    let before = snapshot(&trainer.vs);
    let adapters: Vec<&String> = before.keys().filter(|n| is_adapter_variable(n)).collect();
    // q_proj and v_proj of every layer, A and B each.
    let layers = trainer.model.llava.llm.config().num_hidden_layers;
    assert_eq!(adapters.len(), layers * 2 * 2, "{adapters:?}");
    assert!(adapters
        .iter()
        .all(|n| n.starts_with("language_model.model.layers.")));
    trainer.run(None, &mut |_| {}).unwrap();

    let moments =
        rgpt_weights::Checkpoint::open(dir.join("run/checkpoint/optimizer.safetensors")).unwrap();
    let has_state = |name: &str| moments.contains(&format!("exp_avg.{name}"));
    let vars = trainer.vs.variables();
    let mut trained = 0;
    for (name, old) in &before {
        let var = &vars[name];
        match Part::of(name) {
            Some(Part::Llm) if !is_adapter_variable(name) => {
                assert!(!var.grad().defined(), "{name} got a gradient");
                assert!(var.equal(old), "{name} changed");
                assert!(!has_state(name), "{name} has optimiser state");
            }
            Some(Part::Vision) | None => assert!(var.equal(old), "{name} changed"),
            _ => {
                assert!(has_state(name), "{name} has no optimiser state");
                if name.ends_with(".lora_B.weight") || name.starts_with("multi_modal_projector.") {
                    assert!(!var.equal(old), "{name} did not train");
                    trained += 1;
                }
            }
        }
    }
    assert!(trained > layers * 2, "{trained} variables trained");

    // Merge-on-save: no adapter in the checkpoint, the targets changed, the
    // other LLM weights did not, and it computes what the training model does.
    let saved = trainer.save_model().unwrap();
    let checkpoint = rgpt_weights::Checkpoint::open(&saved).unwrap();
    assert!(checkpoint.names().all(|n| !n.contains("lora")));
    assert_eq!(checkpoint.names().count(), before.len() - adapters.len());
    let q = "language_model.model.layers.0.self_attn.q_proj.weight";
    let k = "language_model.model.layers.0.self_attn.k_proj.weight";
    assert!(max_abs_diff(&checkpoint.tensor(q).unwrap(), &before[q]) > 0.0);
    assert_eq!(
        max_abs_diff(&checkpoint.tensor(k).unwrap(), &before[k]),
        0.0
    );
    assert!(
        trainer.model.llava.llm.has_lora(),
        "saving merged the training model"
    );

    let (loaded, _vs) = RegionGpt::from_pretrained(&saved, Device::Cpu, Kind::Float).unwrap();
    assert!(!loaded.llava.llm.has_lora());
    let ours = logits(&trainer.model);
    let theirs = logits(&loaded);
    let diff = max_abs_diff(&ours, &theirs);
    assert!(diff < 1e-5, "saved model's logits differ by {diff:e}");
}

#[test]
fn an_interrupted_lora_run_resumes_to_the_same_adapters() {
    let dir = setup("lora-resume", LORA);
    let config = TrainConfig::from_file(&dir.join("train.yaml")).unwrap();
    let mut whole = Trainer::new(config.clone()).unwrap();
    whole.run(None, &mut |_| {}).unwrap();

    let mut config2 = config;
    config2.output_dir = dir.join("run2");
    let mut first = Trainer::new(config2.clone()).unwrap();
    first.run(Some(2), &mut |_| {}).unwrap();
    drop(first);
    let checkpoint =
        rgpt_weights::Checkpoint::open(dir.join("run2/checkpoint/model.safetensors")).unwrap();
    assert!(checkpoint.names().any(is_adapter_variable));
    let mut resumed = Trainer::new(config2).unwrap();
    assert!(resumed.resume().unwrap());
    resumed.run(None, &mut |_| {}).unwrap();
    // Bit for bit: every variable, and the final checkpoints' files
    // (adapters, every optimiser tensor, state.json).
    let a = whole.vs.variables();
    let b = resumed.vs.variables();
    assert_eq!(a.len(), b.len());
    for (name, var) in &a {
        assert!(var.equal(&b[name]), "{name} differs after resuming");
    }
    for file in ["model.safetensors", "optimizer.safetensors", "state.json"] {
        let read = |run: &str| std::fs::read(dir.join(run).join("checkpoint").join(file)).unwrap();
        assert!(
            read("run") == read("run2"),
            "checkpoint/{file} differs after resuming"
        );
    }
}

fn config_error(tag: &str, extra: &str) -> String {
    let dir = setup(tag, extra);
    TrainConfig::from_file(&dir.join("train.yaml"))
        .unwrap_err()
        .to_string()
}

#[test]
fn lora_config_mistakes_name_the_field() {
    let module = config_error(
        "module",
        "lora: {rank: 8, alpha: 16, target_modules: [q_proj, qkv_proj]}\n",
    );
    assert!(
        module.contains("lora.target_modules") && module.contains("qkv_proj"),
        "{module}"
    );
    let empty = config_error("empty", "lora: {rank: 8, alpha: 16, target_modules: []}\n");
    assert!(empty.contains("lora.target_modules"), "{empty}");
    let rank = config_error(
        "rank",
        "lora: {rank: 0, alpha: 16, target_modules: [q_proj]}\n",
    );
    assert!(rank.contains("lora.rank"), "{rank}");
    let alpha = config_error(
        "alpha",
        "lora: {rank: 8, alpha: 0, target_modules: [q_proj]}\n",
    );
    assert!(alpha.contains("lora.alpha"), "{alpha}");
    let typo = config_error(
        "typo",
        "lora: {rank: 8, alhpa: 16, target_modules: [q_proj]}\n",
    );
    assert!(typo.contains("alhpa"), "{typo}");
    let dir = setup("stage", LORA);
    let path = dir.join("train.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace("stage: finetune", "stage: pretrain")).unwrap();
    let stage = TrainConfig::from_file(&path).unwrap_err().to_string();
    assert!(stage.contains("lora") && stage.contains("llm"), "{stage}");
}
