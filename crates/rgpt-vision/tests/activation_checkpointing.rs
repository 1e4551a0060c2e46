//! Activation checkpointing of the vision encoder's layers gives the same
//! outputs and the same gradients (every weight, and the pixels) as
//! without it, for CLIP and SigLIP.
use std::cell::RefCell;
use std::path::PathBuf;

use rgpt_vision::clip::ClipVisionModel;
use rgpt_vision::siglip::SiglipVisionModel;
use tch::{nn, Device, Kind, Tensor};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(name)
}

/// What the test needs of a tower, CLIP's and SigLIP's alike.
trait Tower {
    fn image_size(&self) -> i64;
    fn set_activation_checkpointing(&mut self, on: bool);
    fn last_hidden_state(&self, pixels: &Tensor) -> Tensor;
}

impl Tower for ClipVisionModel {
    fn image_size(&self) -> i64 {
        self.config().image_size as i64
    }
    fn set_activation_checkpointing(&mut self, on: bool) {
        ClipVisionModel::set_activation_checkpointing(self, on)
    }
    fn last_hidden_state(&self, pixels: &Tensor) -> Tensor {
        self.forward(pixels).unwrap().last_hidden_state
    }
}

impl Tower for SiglipVisionModel {
    fn image_size(&self) -> i64 {
        self.config().image_size as i64
    }
    fn set_activation_checkpointing(&mut self, on: bool) {
        SiglipVisionModel::set_activation_checkpointing(self, on)
    }
    fn last_hidden_state(&self, pixels: &Tensor) -> Tensor {
        self.forward(pixels).unwrap().last_hidden_state
    }
}

/// Runs the tower twice on seeded pixels, without and with checkpointing,
/// and compares the loss and every gradient.
fn same_gradients(model: impl Tower, mut vs: nn::VarStore, seed: i64) {
    let size = model.image_size();
    tch::manual_seed(seed);
    let pixels = Tensor::randn([2, 3, size, size], (Kind::Float, Device::Cpu));
    let model = RefCell::new(model);
    vs.unfreeze();
    let run = || {
        for (_, var) in vs.variables() {
            let mut grad = var.grad();
            if grad.defined() {
                let _ = grad.zero_();
            }
        }
        let pixels = pixels.detach().set_requires_grad(true);
        let loss = model
            .borrow()
            .last_hidden_state(&pixels)
            .square()
            .mean(Kind::Float);
        loss.backward();
        let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let mut grads: Vec<(String, Tensor)> = vars
            .into_iter()
            .filter(|(_, v)| v.grad().defined())
            .map(|(n, v)| (n, v.grad().copy()))
            .collect();
        grads.push(("pixels".into(), pixels.grad().copy()));
        (f64::try_from(&loss).unwrap(), grads)
    };
    model.borrow_mut().set_activation_checkpointing(false);
    let (loss, plain) = run();
    model.borrow_mut().set_activation_checkpointing(true);
    let (again, checkpointed) = run();
    assert_eq!(loss, again);
    assert!(plain.len() > 10, "{} gradients", plain.len());
    assert_eq!(plain.len(), checkpointed.len());
    for ((name, a), (_, b)) in plain.iter().zip(&checkpointed) {
        let diff = f64::try_from((a - b).abs().max()).unwrap();
        assert!(diff <= 1e-5, "{name}: gradients differ by {diff}");
    }
}

#[test]
fn clip_gradients_are_unchanged() {
    let (model, vs) =
        ClipVisionModel::from_pretrained(&fixture("clip-vision-tiny"), Device::Cpu, Kind::Float)
            .unwrap();
    same_gradients(model, vs, 3);
}

#[test]
fn siglip_gradients_are_unchanged() {
    let (model, vs) = SiglipVisionModel::from_pretrained(
        &fixture("siglip-vision-tiny"),
        Device::Cpu,
        Kind::Float,
    )
    .unwrap();
    same_gradients(model, vs, 4);
}
