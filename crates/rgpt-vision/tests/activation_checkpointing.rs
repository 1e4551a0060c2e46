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

/// Runs `forward` twice, without and with checkpointing (`set`), and
/// compares the loss and every gradient.
fn same_gradients(
    vs: &mut nn::VarStore,
    pixels: &Tensor,
    mut set: impl FnMut(bool),
    forward: impl Fn(&Tensor) -> Tensor,
) {
    vs.unfreeze();
    let run = || {
        for (_, var) in vs.variables() {
            let mut grad = var.grad();
            if grad.defined() {
                let _ = grad.zero_();
            }
        }
        let pixels = pixels.detach().set_requires_grad(true);
        let loss = forward(&pixels).square().mean(Kind::Float);
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
    set(false);
    let (loss, plain) = run();
    set(true);
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
    let (model, mut vs) =
        ClipVisionModel::from_pretrained(&fixture("clip-vision-tiny"), Device::Cpu, Kind::Float)
            .unwrap();
    let size = model.config().image_size as i64;
    tch::manual_seed(3);
    let pixels = Tensor::randn([2, 3, size, size], (Kind::Float, Device::Cpu));
    let model = RefCell::new(model);
    same_gradients(
        &mut vs,
        &pixels,
        |on| model.borrow_mut().set_activation_checkpointing(on),
        |x| model.borrow().forward(x).unwrap().last_hidden_state,
    );
}

#[test]
fn siglip_gradients_are_unchanged() {
    let (model, mut vs) = SiglipVisionModel::from_pretrained(
        &fixture("siglip-vision-tiny"),
        Device::Cpu,
        Kind::Float,
    )
    .unwrap();
    let size = model.config().image_size as i64;
    tch::manual_seed(4);
    let pixels = Tensor::randn([2, 3, size, size], (Kind::Float, Device::Cpu));
    let model = RefCell::new(model);
    same_gradients(
        &mut vs,
        &pixels,
        |on| model.borrow_mut().set_activation_checkpointing(on),
        |x| model.borrow().forward(x).unwrap().last_hidden_state,
    );
}
