//! Packed sequences give what each sequence gives alone: `forward_packed`
//! over rows that hold several sequences equals, at every real position,
//! the hidden states of a right-padded batch through `forward_embeds` and
//! of each sequence run by itself (the fixtures' own HF-parity path), and
//! so do the gradients that reach the inputs. Tolerance 1e-5 absolute on
//! f32: the paths differ only in the shapes of their matrix products.
mod common;

use common::fixture;
use rgpt_llm::{Llama, Packing};
use tch::{Device, Kind, Tensor};

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    f64::try_from((a - b).abs().max()).unwrap()
}

/// Sequences of `lengths` random embeddings from libtorch's generator. Tests
/// in one process share it, so each test draws once and gives every path
/// the same draw.
fn sequences(model: &Llama, lengths: &[usize]) -> Vec<Tensor> {
    tch::manual_seed(7);
    let hidden = model.config().hidden_size as i64;
    lengths
        .iter()
        .map(|&n| Tensor::randn([n as i64, hidden], (Kind::Float, Device::Cpu)))
        .collect()
}

fn padded(model: &Llama, seqs: &[Tensor]) -> Tensor {
    let longest = seqs.iter().map(|s| s.size()[0]).max().unwrap();
    let hidden = model.config().hidden_size as i64;
    let (rows, masks): (Vec<Tensor>, Vec<Tensor>) = seqs
        .iter()
        .map(|s| {
            let n = s.size()[0];
            let pad = Tensor::zeros([longest - n, hidden], (Kind::Float, Device::Cpu));
            let mask = Tensor::arange(longest, (Kind::Int64, Device::Cpu)).lt(n);
            (Tensor::cat(&[s, &pad], 0), mask)
        })
        .unzip();
    let mut cache = model.new_cache(seqs.len() as i64, longest);
    model
        .forward_embeds(
            &Tensor::stack(&rows, 0),
            Some(&Tensor::stack(&masks, 0)),
            &mut cache,
        )
        .unwrap()
}

#[test]
fn packed_rows_equal_a_padded_batch_and_each_sequence_alone() {
    let _guard = tch::no_grad_guard();
    for name in ["llama-mha-tied", "llama-gqa-theta", "llama-rope-llama3"] {
        let (model, _vs) =
            Llama::from_pretrained(&fixture(name), Device::Cpu, Kind::Float).unwrap();
        let lengths = [5, 9, 3, 4, 9, 2, 6];
        let seqs = sequences(&model, &lengths);
        let packing = Packing::plan(&lengths, model.config()).unwrap();
        assert!(
            packing.rows < lengths.len(),
            "{name}: the sequences must share rows for the test to mean anything"
        );
        let packed = model
            .forward_packed(&packing.pack(&seqs).unwrap(), &packing)
            .unwrap();
        let unpacked = packing.unpack(&packed).unwrap();
        let reference = padded(&model, &seqs);
        for (i, (&n, seq)) in lengths.iter().zip(&seqs).enumerate() {
            let n = n as i64;
            let got = unpacked.get(i as i64).narrow(0, 0, n);
            let diff = max_abs_diff(&got, &reference.get(i as i64).narrow(0, 0, n));
            assert!(diff < 1e-5, "{name}, sequence {i}: packed vs padded {diff}");
            let mut cache = model.new_cache(1, n);
            let alone = model
                .forward_embeds(&seq.unsqueeze(0), None, &mut cache)
                .unwrap();
            let diff = max_abs_diff(&got, &alone.get(0));
            assert!(diff < 1e-5, "{name}, sequence {i}: packed vs alone {diff}");
            // Unpacked rows are zero past each sequence's end.
            let rest = unpacked.get(i as i64).narrow(0, n, 9 - n);
            assert_eq!(f64::try_from(rest.abs().sum(Kind::Float)).unwrap(), 0.0);
        }
    }
}

#[test]
fn packed_gradients_equal_padded_gradients() {
    let (model, _vs) =
        Llama::from_pretrained(&fixture("llama-gqa-theta"), Device::Cpu, Kind::Float).unwrap();
    let lengths = [6, 2, 3, 5];
    // Drawn once and shared by both paths: tests in one process share
    // libtorch's generator, so drawing per path could differ.
    let inputs = sequences(&model, &lengths);
    let hidden = model.config().hidden_size as i64;
    let weights = Tensor::randn([4, 6, hidden], (Kind::Float, Device::Cpu));
    let mask = Tensor::stack(
        &lengths
            .iter()
            .map(|&n| Tensor::arange(6, (Kind::Int64, Device::Cpu)).lt(n as i64))
            .collect::<Vec<_>>(),
        0,
    )
    .unsqueeze(-1);
    let input_grads = |packed: bool| -> Vec<Tensor> {
        let seqs: Vec<Tensor> = inputs
            .iter()
            .map(|s| s.copy().set_requires_grad(true))
            .collect();
        let hidden = if packed {
            let packing = Packing::plan(&lengths, model.config()).unwrap();
            let out = model
                .forward_packed(&packing.pack(&seqs).unwrap(), &packing)
                .unwrap();
            packing.unpack(&out).unwrap()
        } else {
            padded(&model, &seqs)
        };
        // A loss over real positions only, different at each position.
        (hidden * &weights * &mask).sum(Kind::Float).backward();
        seqs.iter().map(|s| s.grad()).collect()
    };
    let packed = input_grads(true);
    let padded = input_grads(false);
    for (i, (a, b)) in packed.iter().zip(&padded).enumerate() {
        let diff = max_abs_diff(a, b);
        assert!(
            diff < 1e-5,
            "sequence {i}: input gradients differ by {diff}"
        );
        assert!(f64::try_from(a.abs().sum(Kind::Float)).unwrap() > 0.0);
    }
}
