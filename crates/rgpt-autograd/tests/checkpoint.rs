//! Activation checkpointing gives the gradients autograd gives without it,
//! to parameters and input, frees its segment with the graph, and passes
//! a segment's failure on as a panic with its message.
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use rgpt_autograd::checkpoint;
use tch::{Device, Kind, Tensor};

fn params() -> (Tensor, Tensor) {
    tch::manual_seed(0);
    let w1 = Tensor::randn([8, 8], (Kind::Double, Device::Cpu)).set_requires_grad(true);
    let w2 = Tensor::randn([8, 8], (Kind::Double, Device::Cpu)).set_requires_grad(true);
    (w1, w2)
}

fn layer(x: &Tensor, w: &Tensor) -> Tensor {
    x.matmul(w).tanh() + x
}

#[test]
fn gradients_equal_those_without_checkpointing() {
    let x = Tensor::randn([3, 8], (Kind::Double, Device::Cpu)).set_requires_grad(true);
    let (w1, w2) = params();
    let plain = layer(&layer(&x, &w1), &w2).square().sum(Kind::Double);
    plain.backward();
    let want = [x.grad().copy(), w1.grad().copy(), w2.grad().copy()];
    for t in [&x, &w1, &w2] {
        let _ = t.grad().zero_();
    }
    let runs = Arc::new(AtomicUsize::new(0));
    let mut h = x.shallow_clone();
    for w in [&w1, &w2] {
        let (w, runs) = (w.shallow_clone(), Arc::clone(&runs));
        h = checkpoint(&h, move |x| {
            runs.fetch_add(1, Ordering::SeqCst);
            layer(x, &w)
        });
    }
    let loss = h.square().sum(Kind::Double);
    assert!(loss.requires_grad());
    assert_eq!(
        runs.load(Ordering::SeqCst),
        2,
        "forward runs each segment once"
    );
    loss.backward();
    assert_eq!(runs.load(Ordering::SeqCst), 4, "backward runs each again");
    for (want, got) in want.iter().zip([x.grad(), w1.grad(), w2.grad()]) {
        assert!(want.allclose(&got, 1e-12, 1e-12, false));
    }
}

#[test]
fn parameters_get_gradients_when_the_input_needs_none() {
    let x = Tensor::randn([3, 8], (Kind::Double, Device::Cpu));
    let (w1, _) = params();
    let w = w1.shallow_clone();
    checkpoint(&x, move |x| layer(x, &w))
        .sum(Kind::Double)
        .backward();
    let got = w1.grad().copy();
    let _ = w1.grad().zero_();
    layer(&x, &w1).sum(Kind::Double).backward();
    assert!(got.allclose(&w1.grad(), 1e-12, 1e-12, false));
}

#[test]
fn without_a_graph_it_is_the_segment() {
    let x = Tensor::randn([3, 8], (Kind::Double, Device::Cpu));
    let (w1, _) = params();
    let w = w1.shallow_clone();
    let out = tch::no_grad(|| checkpoint(&x, move |x| layer(x, &w)));
    assert!(!out.requires_grad());
    assert!(out.equal(&tch::no_grad(|| layer(&x, &w1))));
}

#[test]
fn the_segment_is_freed_with_the_graph() {
    let marker = Rc::new(());
    let x = Tensor::ones([2], (Kind::Float, Device::Cpu)).set_requires_grad(true);
    let held = Rc::clone(&marker);
    let out = checkpoint(&x, move |x| {
        let _ = &held;
        x * 2
    });
    assert_eq!(Rc::strong_count(&marker), 2);
    drop(out);
    assert_eq!(Rc::strong_count(&marker), 1);
}

#[test]
#[should_panic(expected = "activation checkpointing: checkpointed segment: shapes do not fit")]
fn a_failing_segment_panics_with_its_message() {
    let x = Tensor::ones([2], (Kind::Float, Device::Cpu));
    let _ = checkpoint(&x, |_| panic!("shapes do not fit"));
}
