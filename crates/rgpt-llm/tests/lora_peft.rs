//! LoRA against PEFT itself, not only against our own unmerged path: an
//! adapter PEFT saved is loaded into our LoRA variables (PEFT's names less
//! its `base_model.model.` prefix), and our unmerged logits, our merged
//! weights (from both merge paths) and the merged model's logits must equal
//! what PEFT computed. A scaling or orientation error shared by our two paths fails
//! here. Reference: scripts/fixtures/lora_peft.py (peft 0.22.0, transformers
//! 5.23.0, torch 2.11.0; `LoraConfig(r=4, lora_alpha=8)` on all seven
//! projections of the committed `llama-gqa-theta`, seeded non-zero lora_A
//! and lora_B), in tests/fixtures/lora_peft. Tolerance 1e-5 absolute on
//! f32 logits of magnitude below 5 and on weights: the paths differ only in
//! the order of f32 operations (PEFT's own merged and unmerged logits
//! differ by 2.6e-6; ours and PEFT's by 1.3e-6, the merged weights not at
//! all), while the adapter moves the logits by 2.6.
mod common;

use std::collections::{BTreeMap, HashMap};

use common::{fixture, hidden_states};
use rgpt_llm::lora::{is_adapter_variable, TARGET_MODULES};
use rgpt_llm::{Llama, LoraConfig};
use serde_json::Value;
use tch::{Device, Kind, Tensor};

const TOLERANCE: f64 = 1e-5;
/// What PEFT puts before the model's own variable names when it saves.
const PEFT_PREFIX: &str = "base_model.model.";

fn json(path: &str) -> Value {
    let path = fixture("lora_peft").join(path);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn safetensors(path: &str) -> BTreeMap<String, Tensor> {
    let path = fixture("lora_peft").join(path);
    Tensor::read_safetensors(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .into_iter()
        .collect()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size());
    f64::try_from((a - b).abs().max()).unwrap()
}

/// PEFT's adapter_config.json as our `LoraConfig`, after checking that it
/// asks for nothing `lora.rs` leaves out.
fn peft_config() -> LoraConfig {
    let config = json("adapter/adapter_config.json");
    assert_eq!(config["peft_type"], "LORA");
    for off in ["use_rslora", "use_dora", "fan_in_fan_out", "lora_bias"] {
        assert_eq!(config[off], false, "{off}");
    }
    assert_eq!(config["lora_dropout"], 0.0);
    assert_eq!(config["bias"], "none");
    assert_eq!(config["rank_pattern"], serde_json::json!({}));
    assert_eq!(config["alpha_pattern"], serde_json::json!({}));
    let target_modules: Vec<String> = config["target_modules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap().to_string())
        .collect();
    let mut all: Vec<String> = TARGET_MODULES.iter().map(|m| m.to_string()).collect();
    all.sort();
    assert_eq!(target_modules, all);
    let lora = LoraConfig {
        rank: config["r"].as_u64().unwrap() as usize,
        alpha: config["lora_alpha"].as_f64().unwrap(),
        target_modules,
    };
    // alpha != r, so a missing or squared scaling changes the result.
    assert_eq!((lora.rank, lora.alpha), (4, 8.0));
    lora
}

#[test]
fn lora_matches_peft_unmerged_merged_and_in_the_merged_weights() {
    let _guard = tch::no_grad_guard();
    let expected = json("expected.json");
    let ids: Vec<i64> = expected["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    assert_eq!(ids, [1, 17, 250, 3, 99, 512, 7, 42, 640]);
    let reference = safetensors("tensors.safetensors");
    let peft_logits = |name: &str| {
        let t = &reference[name];
        assert_eq!(t.size(), [ids.len() as i64, 800], "{name}");
        t
    };

    let (mut model, mut vs) =
        Llama::from_pretrained(&fixture("llama-gqa-theta"), Device::Cpu, Kind::Float).unwrap();
    let logits = |model: &Llama| model.logits(&hidden_states(model, &ids));
    let base = logits(&model);
    let diff = max_abs_diff(&base, peft_logits("base_logits"));
    assert!(
        diff < TOLERANCE,
        "base logits differ from transformers' by {diff:e}"
    );

    // PEFT's saved adapter into our variables, every one of them.
    let config = peft_config();
    model.add_lora(&vs.root(), &config, 0).unwrap();
    let ours = vs.variables();
    let ours_names: Vec<&String> = ours.keys().filter(|n| is_adapter_variable(n)).collect();
    let layers = model.config().num_hidden_layers;
    assert_eq!(ours_names.len(), layers * TARGET_MODULES.len() * 2);
    let adapter = safetensors("adapter/adapter_model.safetensors");
    assert_eq!(adapter.len(), ours_names.len(), "{:?}", adapter.keys());
    for (peft_name, value) in &adapter {
        let name = peft_name
            .strip_prefix(PEFT_PREFIX)
            .unwrap_or_else(|| panic!("{peft_name} lacks {PEFT_PREFIX}"));
        let mut var = ours
            .get(name)
            .unwrap_or_else(|| panic!("PEFT's {peft_name} has no variable {name}"))
            .shallow_clone();
        // lora_A [r, in], lora_B [out, r] on both sides: copy_ would
        // broadcast, so the shapes are checked first.
        assert_eq!(var.size(), value.size(), "{name}");
        assert!(
            f64::try_from(value.abs().max()).unwrap() > 0.0,
            "{name} is zero"
        );
        var.copy_(value);
    }

    // (a) The unmerged adapter.
    let unmerged = logits(&model);
    let changed = max_abs_diff(&unmerged, &base);
    assert!(
        changed > 1e-2,
        "the adapter changed the logits by only {changed}"
    );
    let diff = max_abs_diff(&unmerged, peft_logits("unmerged_logits"));
    assert!(
        diff < TOLERANCE,
        "unmerged logits differ from PEFT's by {diff:e}"
    );

    // (c) The merged weights, from both merge paths, against
    // merge_and_unload's.
    let merged_weights: Vec<(&str, &Tensor)> = reference
        .iter()
        .filter_map(|(name, t)| name.strip_prefix("merged.").map(|n| (n, t)))
        .collect();
    assert_eq!(merged_weights.len(), layers * TARGET_MODULES.len());
    let check_weights = |vars: &HashMap<String, Tensor>, which: &str| {
        for (name, peft) in &merged_weights {
            let ours = vars
                .get(*name)
                .unwrap_or_else(|| panic!("{which}: no {name}"));
            let diff = max_abs_diff(ours, peft);
            assert!(
                diff < TOLERANCE,
                "{which}: {name} differs from PEFT's by {diff:e}"
            );
        }
    };
    let copy = model.merged_var_store(&vs);
    check_weights(&copy.variables(), "merged_var_store");
    model.merge_lora(&mut vs);
    assert!(!model.has_lora());
    let vars = vs.variables();
    assert!(!vars.keys().any(|n| is_adapter_variable(n)));
    check_weights(&vars, "merge_lora");

    // (b) The merged model.
    let merged = logits(&model);
    let diff = max_abs_diff(&merged, peft_logits("merged_logits"));
    assert!(
        diff < TOLERANCE,
        "merged logits differ from PEFT's by {diff:e}"
    );
}
