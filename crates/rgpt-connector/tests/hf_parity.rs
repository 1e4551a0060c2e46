//! The connector against transformers' `LlavaMultiModalProjector`.
//!
//! Reference: `scripts/fixtures/connector.py` (run by `scripts/gen_fixtures.py`;
//! transformers 5.23.0, torch 2.11.0, seed 0) saves random projector weights
//! with an input batch and the projector's output. f32, tolerance 1e-5
//! relative: two matmuls of width 24 leave ~1e-7 of reordering noise.
use std::path::PathBuf;

use rgpt_connector::{Connector, ConnectorConfig};
use tch::{nn, Device, Tensor};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/connector")
        .join(name)
}

#[test]
fn matches_llava_multi_modal_projector() {
    let _guard = tch::no_grad_guard();
    for act in ["gelu", "gelu_pytorch_tanh"] {
        let config: ConnectorConfig = serde_json::from_value(serde_json::json!({
            "vision_hidden_size": 16,
            "text_hidden_size": 24,
            "projector_hidden_act": act,
        }))
        .unwrap();
        let vs = nn::VarStore::new(Device::Cpu);
        let connector = Connector::new(&(vs.root() / "multi_modal_projector"), &config).unwrap();
        let path = fixture(&format!("{act}.safetensors"));
        let checkpoint = rgpt_weights::Checkpoint::open(&path).unwrap();
        checkpoint.load_into(&vs).unwrap();
        let input = checkpoint.tensor("input").unwrap();
        let expected = checkpoint.tensor("output").unwrap();
        let output = connector.forward(&input);
        assert_eq!(output.size(), [2, 5, 24]);
        let rel = f64::try_from((&output - &expected).norm() / expected.norm()).unwrap();
        assert!(rel < 1e-5, "{act}: relative error {rel:e}");
    }
}

#[test]
fn fresh_connector_is_trainable_and_projects_any_leading_shape() {
    let config: ConnectorConfig = serde_json::from_value(serde_json::json!({
        "vision_hidden_size": 8, "text_hidden_size": 4
    }))
    .unwrap();
    let vs = nn::VarStore::new(Device::Cpu);
    let connector = Connector::new(&vs.root(), &config).unwrap();
    assert_eq!(vs.trainable_variables().len(), 4);
    let regions = Tensor::randn([3, 8], (tch::Kind::Float, Device::Cpu));
    let out = connector.forward(&regions);
    assert_eq!(out.size(), [3, 4]);
    out.sum(tch::Kind::Float).backward();
    for var in vs.trainable_variables() {
        assert!(
            var.grad().defined(),
            "every projector weight gets a gradient"
        );
    }
}

#[test]
fn unknown_activation_is_an_error() {
    let config: ConnectorConfig = serde_json::from_value(serde_json::json!({
        "vision_hidden_size": 8, "text_hidden_size": 4, "projector_hidden_act": "swish"
    }))
    .unwrap();
    let vs = nn::VarStore::new(Device::Cpu);
    let err = Connector::new(&vs.root(), &config).unwrap_err();
    assert!(err.to_string().contains("`swish` is not supported"));
}
