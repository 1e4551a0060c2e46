//! One training step of the demo's tiny LLaMA (configs/demo-tiny.yaml's
//! `model:` section, as `tiny::build_tiny_with_tokenizer` builds it): hidden
//! 256, 2 layers, 4 heads (4 KV heads), intermediate 688, RMSNorm eps 1e-6,
//! RoPE theta 10000, tied embeddings, f32 on CPU, with a fixed vocabulary of
//! 1024 (the demo's is its trained tokenizer's: 480 BPE ids until the
//! fourteenth round of docs/experiments/demo-journal.md, 159 words since; a
//! larger head costs both sides alike).
//!
//! The step is the trainer's for a text-only micro-batch of 32 sequences of
//! 96 tokens whose first 80 labels are `IGNORE_INDEX` (the prompt): zero
//! the gradients, embed, `forward_embeds` through a fresh KV cache with the
//! padding mask (as `RegionGpt::forward_train` does),
//! `causal_lm_loss_from_hidden` (LM-head logits at the 16 x 32 labelled
//! positions only, as the trainer takes them), backward,
//! `AdamW::clip_grad_norm(1.0)` and `AdamW::step(1e-3)` with weight decay 0.
//! Weights are initialised as `tiny::initialise` does (transformers'
//! normal(0, 0.02), unit norms).
//!
//! `train_step/step` is the whole step, one step per sample (throughput in
//! samples/s; tokens/s is 96x that). After it, one JSON line gives the
//! medians of its phases (forward + loss, backward, clip + AdamW) over the
//! same steps, to show where the time goes. libtorch runs on `RGPT_BENCH_THREADS` intra-op threads
//! (default 2, the count `scripts/bench_train_step.py` gives PyTorch);
//! `scripts/bench_train.sh` runs both and compares them.
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use rgpt_llm::{Llama, LlamaConfig};
use rgpt_model::loss::causal_lm_loss_from_hidden;
use rgpt_model::splice::IGNORE_INDEX;
use rgpt_train::optimizer::{AdamW, AdamWConfig};
use tch::{nn, Device, Kind, Tensor};

const BATCH: i64 = 32;
const SEQ: i64 = 96;
const PROMPT: i64 = 80;
const VOCAB: i64 = 1024;
const LR: f64 = 1e-3;
const MAX_GRAD_NORM: f64 = 1.0;

fn threads() -> i32 {
    std::env::var("RGPT_BENCH_THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(2)
}

/// The demo's LLaMA, as `scratch.rs` configures and initialises it.
fn tiny_llama() -> (Llama, nn::VarStore) {
    let config: LlamaConfig = serde_json::from_value(serde_json::json!({
        "model_type": "llama", "hidden_size": 256, "intermediate_size": 688,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 4,
        "vocab_size": VOCAB, "max_position_embeddings": 1024, "rms_norm_eps": 1e-6,
        "bos_token_id": 1, "eos_token_id": 2, "tie_word_embeddings": true,
        "rope_theta": 10000.0,
    }))
    .expect("valid config");
    let vs = nn::VarStore::new(Device::Cpu);
    let model = Llama::new(&vs.root(), &config).expect("model builds");
    rgpt_train::scratch::initialise(&vs, 0);
    (model, vs)
}

struct Batch {
    ids: Tensor,    // [batch, seq] i64
    labels: Tensor, // [batch, seq] i64, IGNORE_INDEX on the prompt
    mask: Tensor,   // [batch, seq] bool, all real (no padding)
}

fn batch() -> Batch {
    let ids = Tensor::randint(VOCAB, [BATCH, SEQ], (Kind::Int64, Device::Cpu));
    let labels = ids.copy();
    let _ = labels.narrow(1, 0, PROMPT).fill_(IGNORE_INDEX);
    let mask = Tensor::ones([BATCH, SEQ], (Kind::Bool, Device::Cpu));
    Batch { ids, labels, mask }
}

/// Wall time of each phase of one step.
#[derive(Default, Clone, Copy)]
struct Phases {
    forward: Duration,
    backward: Duration,
    optimizer: Duration,
}

fn step(model: &Llama, optimizer: &mut AdamW, batch: &Batch) -> Phases {
    let start = Instant::now();
    optimizer.zero_grad();
    let mut cache = model.new_cache(BATCH, SEQ);
    let hidden = model
        .forward_embeds(&model.embed(&batch.ids), Some(&batch.mask), &mut cache)
        .expect("forward");
    let (loss, _) = causal_lm_loss_from_hidden(&hidden, &batch.labels, |h| model.logits(h));
    let forward = start.elapsed();
    loss.backward();
    let backward = start.elapsed();
    optimizer.clip_grad_norm(MAX_GRAD_NORM);
    optimizer.step(LR);
    let optimizer_end = start.elapsed();
    Phases {
        forward,
        backward: backward - forward,
        optimizer: optimizer_end - backward,
    }
}

fn bench(c: &mut Criterion) {
    tch::set_num_threads(threads());
    tch::manual_seed(0);
    let (model, vs) = tiny_llama();
    let batch = batch();
    let mut params: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    params.sort_by(|a, b| a.0.cmp(&b.0));
    let mut optimizer = AdamW::new(params, AdamWConfig::default());

    // Every step's phases, warm-up included (a few steps of 20+; the
    // medians below shrug them off).
    let mut phases: Vec<Phases> = Vec::new();
    let mut group = c.benchmark_group("train_step");
    group
        .sample_size(20)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(3))
        .measurement_time(Duration::from_secs(30));
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("step", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    let p = step(&model, &mut optimizer, &batch);
                    phases.push(p);
                    p.forward + p.backward + p.optimizer
                })
                .sum()
        })
    });
    group.finish();

    // The phase medians, one JSON line beside criterion's report, in the
    // keys `scripts/bench_train_step.py` prints.
    let median = |pick: fn(&Phases) -> Duration| {
        let mut secs: Vec<f64> = phases.iter().map(|p| pick(p).as_secs_f64()).collect();
        secs.sort_by(f64::total_cmp);
        secs.get(secs.len() / 2).copied().unwrap_or(f64::NAN)
    };
    println!(
        "{}",
        serde_json::json!({
            "peer": "rgpt",
            "threads": tch::get_num_threads(),
            "steps": phases.len(),
            "forward_loss_s": median(|p| p.forward),
            "backward_s": median(|p| p.backward),
            "clip_adamw_s": median(|p| p.optimizer),
        })
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
