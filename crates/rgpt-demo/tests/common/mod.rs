//! What the demo's tests share: a small from-scratch spec and weight
//! snapshots (as rgpt-train's tests have them).
#![allow(dead_code)]

use std::collections::HashMap;

use rgpt_train::scratch::TinySpec;
use tch::Tensor;

/// A from-scratch model small enough to build and train in a test.
pub fn small_tiny_spec() -> TinySpec {
    serde_yaml::from_str(
        "{image_size: 32, patch_size: 8, conv_stem: [16, 16, 32], vision_hidden: 32, \
         vision_layers: 1, vision_heads: 2, hidden: 32, layers: 1, heads: 2, intermediate: 64}",
    )
    .unwrap()
}

/// Copies of every variable, by name, to compare with after training.
pub fn snapshot(vs: &tch::nn::VarStore) -> HashMap<String, Tensor> {
    vs.variables()
        .into_iter()
        .map(|(n, v)| (n, v.detach().copy()))
        .collect()
}
