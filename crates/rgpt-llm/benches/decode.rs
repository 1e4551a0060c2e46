//! Prefill and per-token decode of the LLaMA decoder, f32 on CPU.
//!
//! Two models: the committed tiny fixture (`llama-mha-tied`, where per-op
//! overhead dominates) and a ~106M-parameter random LLaMA (hidden 768, 8
//! layers, vocab 32000; matmul-bound). `RGPT_BENCH_THREADS` sets libtorch's
//! intra-op threads (default 1, so runs are comparable across machines);
//! `scripts/bench_vs_hf.py` compares the same sizes against HF transformers.
use std::path::PathBuf;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use rgpt_llm::{KvCache, Llama, LlamaConfig};
use tch::{nn, Device, Kind, Tensor};

const PROMPT_LEN: i64 = 32;
const CACHE_TOKENS: i64 = 512;

fn threads() -> i32 {
    std::env::var("RGPT_BENCH_THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(1)
}

fn tiny_fixture() -> (Llama, nn::VarStore) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/llama-mha-tied");
    Llama::from_pretrained(&dir, Device::Cpu, Kind::Float).expect("fixture loads")
}

fn llama_100m() -> (Llama, nn::VarStore) {
    let config: LlamaConfig = serde_json::from_value(serde_json::json!({
        "model_type": "llama",
        "vocab_size": 32000,
        "hidden_size": 768,
        "intermediate_size": 2048,
        "num_hidden_layers": 8,
        "num_attention_heads": 12,
        "max_position_embeddings": 2048
    }))
    .expect("valid config");
    let vs = nn::VarStore::new(Device::Cpu);
    let model = Llama::new(&vs.root(), &config).expect("model builds");
    let _guard = tch::no_grad_guard();
    for (_, mut var) in vs.variables() {
        let _ = var.normal_(0.0, 0.02);
    }
    (model, vs)
}

fn prompt(vocab: i64) -> Tensor {
    Tensor::arange(PROMPT_LEN, (Kind::Int64, Device::Cpu))
        .remainder(vocab)
        .unsqueeze(0)
}

fn bench_model(c: &mut Criterion, name: &str, model: &Llama, samples: usize) {
    let _guard = tch::no_grad_guard();
    let vocab = model.config().vocab_size as i64;
    let ids = prompt(vocab);
    let mut group = c.benchmark_group(name);
    group.sample_size(samples);
    group.bench_function(BenchmarkId::new("prefill", PROMPT_LEN), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let mut cache = model.new_cache(1, PROMPT_LEN);
                let start = Instant::now();
                let logits = model.forward(&ids, None, &mut cache).expect("prefill");
                let _ = std::hint::black_box(logits);
                total += start.elapsed();
            }
            total
        })
    });
    // One decode step at a time on a cache that grows from the prompt; the
    // refill when it is full is not timed.
    group.bench_function("decode_step", |b| {
        let mut cache = model.new_cache(1, CACHE_TOKENS);
        let token = Tensor::from_slice(&[7i64]).unsqueeze(0);
        let refill = |cache: &mut KvCache| {
            cache.reset();
            let _ = model.forward(&ids, None, cache).expect("prefill");
        };
        refill(&mut cache);
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                if cache.len() + 1 > cache.capacity() {
                    refill(&mut cache);
                }
                let start = Instant::now();
                let logits = model.forward(&token, None, &mut cache).expect("decode");
                let _ = std::hint::black_box(logits);
                total += start.elapsed();
            }
            total
        })
    });
    group.finish();
}

fn decode(c: &mut Criterion) {
    tch::set_num_threads(threads());
    let (tiny, _vs) = tiny_fixture();
    bench_model(c, "tiny_fixture", &tiny, 100);
    let (big, _vs) = llama_100m();
    bench_model(c, "llama_100m", &big, 20);
}

criterion_group!(benches, decode);
criterion_main!(benches);
