//! A tiny model's initial weights depend on the seed alone: not on
//! libtorch's global generator, which other threads (tests building models
//! in parallel, anything sampling) draw from at the same time.
mod common;

use std::collections::HashMap;

use rgpt_train::scratch::build_tiny;
use tch::Tensor;

use common::{small_tiny_spec, snapshot};

fn weights(seed: u64) -> HashMap<String, Tensor> {
    let (_model, vs, _, _) = build_tiny(&small_tiny_spec(), &[], seed).unwrap();
    snapshot(&vs)
}

fn assert_same(first: &HashMap<String, Tensor>, again: &HashMap<String, Tensor>, what: &str) {
    assert_eq!(first.len(), again.len());
    for (name, value) in first {
        assert!(value.equal(&again[name]), "{name} differs {what}");
    }
}

#[test]
fn the_same_seed_builds_the_same_model() {
    // Each build's variable map iterates in another order (std's HashMap
    // seeds every map differently), so this fails unless the init order is
    // fixed.
    let (first, again, other) = (weights(0), weights(0), weights(1));
    assert_same(&first, &again, "with the same seed");
    // Another seed: every randomly drawn variable changes (norms and
    // biases of the decoder and tower start as constants; the refiner's and
    // connector's biases are drawn, as PyTorch draws them).
    let mut drawn = 0;
    for (name, value) in &first {
        let constant = f64::try_from(value.max() - value.min()).unwrap() == 0.0;
        if !constant {
            drawn += 1;
            assert!(!value.equal(&other[name]), "{name} ignores the seed");
        }
    }
    assert!(drawn > 20, "{drawn}");
    for name in [
        "multi_modal_projector.linear_1.bias",
        "feature_refiner.deconv1.weight",
    ] {
        let value = first.get(name).unwrap_or_else(|| panic!("no {name}"));
        assert!(!value.equal(&other[name]), "{name} ignores the seed");
    }
}

#[test]
fn the_seed_alone_decides_while_other_threads_draw() {
    let alone = weights(7);
    // Four builds at once, while another thread keeps drawing from (and
    // reseeding) libtorch's global generator: every build must still give
    // the weights of the build made alone.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let noise = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut seed = 100;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                tch::manual_seed(seed);
                let _ = Tensor::randn([64, 64], (tch::Kind::Float, tch::Device::Cpu));
                seed += 1;
            }
        })
    };
    let builds: Vec<_> = (0..4).map(|_| std::thread::spawn(|| weights(7))).collect();
    for build in builds {
        assert_same(&alone, &build.join().unwrap(), "when built beside others");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    noise.join().unwrap();
}
