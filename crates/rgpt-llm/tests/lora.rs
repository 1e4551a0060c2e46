//! LoRA on the decoder (PEFT's `LoraLayer`): a fresh adapter changes
//! nothing, a trained one changes the logits, and merging it into the base
//! weights gives the unmerged forward back and leaves no adapter variable.
//! Model: the committed `llama-gqa-theta` fixture (GQA, so k/v adapters have
//! another output size than q/o). Tolerance 1e-5 absolute on f32 logits:
//! merged and unmerged differ only in the order of the additions.
mod common;

use common::{fixture, hidden_states};
use rgpt_llm::lora::{is_adapter_variable, TARGET_MODULES};
use rgpt_llm::{Llama, LoraConfig};
use tch::{nn, Device, Kind, Tensor};

const IDS: [i64; 9] = [1, 17, 250, 3, 99, 512, 7, 42, 640];

fn load() -> (Llama, nn::VarStore) {
    Llama::from_pretrained(&fixture("llama-gqa-theta"), Device::Cpu, Kind::Float).unwrap()
}

fn logits(model: &Llama) -> Tensor {
    model.logits(&hidden_states(model, &IDS))
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    f64::try_from((a - b).abs().max()).unwrap()
}

fn all_modules() -> LoraConfig {
    LoraConfig {
        rank: 4,
        alpha: 8.0,
        target_modules: TARGET_MODULES.iter().map(|m| m.to_string()).collect(),
    }
}

fn adapter_names(vs: &nn::VarStore) -> Vec<String> {
    let mut names: Vec<String> = vs
        .variables()
        .into_keys()
        .filter(|n| is_adapter_variable(n))
        .collect();
    names.sort();
    names
}

#[test]
fn a_fresh_adapter_has_peft_names_and_changes_nothing() {
    let _guard = tch::no_grad_guard();
    let (mut model, vs) = load();
    let base = logits(&model);
    let config: LoraConfig = serde_json::from_str(
        r#"{"r": 8, "lora_alpha": 16, "target_modules": ["q_proj", "v_proj"]}"#,
    )
    .unwrap();
    assert_eq!(config.scaling(), 2.0);
    model.add_lora(&vs.root(), &config, 0).unwrap();
    assert!(model.has_lora());
    let vars = vs.variables();
    let shape = |name: &str| vars[name].size();
    // q: 4 heads x 8, v: 2 kv heads x 8; hidden 32.
    assert_eq!(
        shape("model.layers.0.self_attn.q_proj.lora_A.weight"),
        [8, 32]
    );
    assert_eq!(
        shape("model.layers.0.self_attn.q_proj.lora_B.weight"),
        [32, 8]
    );
    assert_eq!(
        shape("model.layers.1.self_attn.v_proj.lora_A.weight"),
        [8, 32]
    );
    assert_eq!(
        shape("model.layers.1.self_attn.v_proj.lora_B.weight"),
        [16, 8]
    );
    assert_eq!(adapter_names(&vs).len(), 2 * 2 * 2);
    let a = &vars["model.layers.0.self_attn.q_proj.lora_A.weight"];
    // kaiming_uniform(a = sqrt(5)): U(-1/sqrt(in), 1/sqrt(in)), not zero.
    let bound = f64::try_from(a.abs().max()).unwrap();
    assert!(bound > 0.0 && bound <= 1.0 / 32f64.sqrt(), "{bound}");
    assert!(vars["model.layers.0.self_attn.q_proj.lora_A.weight"].requires_grad());
    assert_eq!(max_abs_diff(&logits(&model), &base), 0.0);
}

#[test]
fn the_seed_alone_decides_the_adapters() {
    let adapters = |seed: u64| {
        let (mut model, vs) = load();
        // Draws from libtorch's global generator, as a model built on
        // another thread would, must not reach the adapters.
        let _ = Tensor::randn([1000], (Kind::Float, Device::Cpu));
        model.add_lora(&vs.root(), &all_modules(), seed).unwrap();
        let vars = vs.variables();
        adapter_names(&vs)
            .into_iter()
            .map(|name| vars[&name].detach().copy())
            .collect::<Vec<Tensor>>()
    };
    let (first, again, other) = (adapters(7), adapters(7), adapters(8));
    assert_eq!(first.len(), 2 * TARGET_MODULES.len() * 2);
    for ((a, b), c) in first.iter().zip(&again).zip(&other) {
        assert!(a.equal(b));
        // lora_B starts at zero whatever the seed; lora_A follows it.
        let zero = f64::try_from(a.abs().max()).unwrap() == 0.0;
        assert_eq!(a.equal(c), zero);
    }
}

#[test]
fn merged_lora_equals_the_unmerged_forward() {
    let _guard = tch::no_grad_guard();
    tch::manual_seed(3);
    let (mut model, mut vs) = load();
    let base = logits(&model);
    model.add_lora(&vs.root(), &all_modules(), 0).unwrap();
    // A trained adapter: random, non-zero lora_B everywhere.
    for (name, mut var) in vs.variables() {
        if name.ends_with(".lora_B.weight") {
            var.copy_(&(Tensor::randn(var.size(), (Kind::Float, Device::Cpu)) * 0.05));
        }
    }
    let unmerged = logits(&model);
    let changed = max_abs_diff(&unmerged, &base);
    assert!(
        changed > 1e-2,
        "the adapters changed the logits by {changed}"
    );

    // The non-destructive merge saves what the in-place one leaves.
    let copy = model.merged_var_store(&vs);
    assert!(adapter_names(&copy).is_empty());
    assert!(model.has_lora() && adapter_names(&vs).len() == 2 * 7 * 2);

    model.merge_lora(&mut vs);
    assert!(!model.has_lora());
    assert!(adapter_names(&vs).is_empty(), "{:?}", adapter_names(&vs));
    // No adapter (the only tensors with a dimension of rank 4) is left
    // among the trainable variables either.
    assert!(vs
        .trainable_variables()
        .iter()
        .all(|t| !t.size().contains(&4)));
    let merged = logits(&model);
    let diff = max_abs_diff(&merged, &unmerged);
    assert!(diff < 1e-5, "merged vs unmerged logits differ by {diff:e}");

    let vars = vs.variables();
    let copied = copy.variables();
    assert_eq!(copied.len(), vars.len());
    for (name, var) in &vars {
        let diff = max_abs_diff(var, &copied[name]);
        assert!(diff < 1e-6, "{name}: {diff}");
    }
}

#[test]
fn bad_adapters_are_refused_and_leave_the_model_as_it_was() {
    let (mut model, vs) = load();
    let bad = LoraConfig {
        target_modules: vec!["q_proj".into(), "qkv_proj".into()],
        ..all_modules()
    };
    let err = model.add_lora(&vs.root(), &bad, 0).unwrap_err().to_string();
    assert!(
        err.contains("target_modules") && err.contains("qkv_proj"),
        "{err}"
    );
    let zero = LoraConfig {
        rank: 0,
        ..all_modules()
    };
    let err = model
        .add_lora(&vs.root(), &zero, 0)
        .unwrap_err()
        .to_string();
    assert!(err.contains("rank"), "{err}");
    // Another VarStore than the model's.
    let other = nn::VarStore::new(Device::Cpu);
    let err = model
        .add_lora(&other.root(), &all_modules(), 0)
        .unwrap_err()
        .to_string();
    assert!(err.contains("does not hold"), "{err}");
    assert!(!model.has_lora() && other.variables().is_empty() && adapter_names(&vs).is_empty());
}
