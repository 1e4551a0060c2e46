//! Loader throughput (samples/s): what the trainer waits for per batch.
//! Two inputs: 640x480 JPEGs preprocessed to 336 px as LLaVA-1.5 / RGPT do
//! (pad to square, PIL-exact bicubic, normalise), and the synthetic
//! world's 64 px PNGs at the demo's 64 px. Each sample has a two-turn
//! conversation with three regions (two boxes, one polygon), tokenised
//! with a LLaMA tokenizer. Every epoch of 64 samples runs on the loader's
//! worker threads (`RGPT_BENCH_WORKERS`, default 2) with batches of 16.
use std::path::{Path, PathBuf};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use image::{Rgb, RgbImage};
use rgpt_data::{Region, Sample, Turn};
use rgpt_llm::{Template, Tokenizer};
use rgpt_model::prompt::Placeholders;
use rgpt_train::loader::{Loader, LoaderConfig, PromptFormat};
use rgpt_vision::preprocess::PreprocessorConfig;

const SAMPLES: usize = 64;

/// A picture with gradients and blocks, closer to a photo's JPEG cost than
/// noise or a flat colour.
fn picture(width: u32, height: u32, seed: u32) -> RgbImage {
    RgbImage::from_fn(width, height, |x, y| {
        let block = ((x / 37 + y / 23 + seed) % 5) as u8 * 40;
        Rgb([
            ((x * 255) / width) as u8 ^ block,
            ((y * 255) / height) as u8,
            (((x + y + seed) * 3) % 256) as u8,
        ])
    })
}

fn world(dir: &Path, width: u32, height: u32, extension: &str) -> Vec<Sample> {
    std::fs::create_dir_all(dir).unwrap();
    (0..SAMPLES)
        .map(|i| {
            let name = format!("{i:04}.{extension}");
            let path = dir.join(&name);
            if !path.exists() {
                picture(width, height, i as u32).save(&path).unwrap();
            }
            let (w, h) = (f64::from(width), f64::from(height));
            Sample {
                id: format!("bench/{i}"),
                image: Some(name),
                width: Some(width),
                height: Some(height),
                regions: vec![
                    Region::Box([0.1 * w, 0.1 * h, 0.4 * w, 0.5 * h]),
                    Region::Box([0.5 * w, 0.2 * h, 0.9 * w, 0.9 * h]),
                    Region::Polygon(vec![vec![0.2 * w, 0.6 * h, 0.45 * w, 0.7 * h, 0.3 * w, 0.95 * h]]),
                ],
                conversations: vec![
                    Turn::human("<image>\nWhat is <region>? Answer the question using COCO-80 category names."),
                    Turn::gpt("person"),
                    Turn::human("Compare <region> with <region> in one sentence."),
                    Turn::gpt("The first is a large red sofa; the second a small lamp beside it."),
                ],
                task: "bench".into(),
                meta: None,
            }
        })
        .collect()
}

fn format(preprocessor: PreprocessorConfig) -> PromptFormat {
    let model = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/rgpt-tiny");
    let tokenizer = Tokenizer::from_dir(&model).unwrap();
    let placeholders = Placeholders {
        image: tokenizer.token_to_id("<image>").unwrap(),
        region: tokenizer.token_to_id("<region>").unwrap(),
    };
    PromptFormat {
        tokenizer,
        template: Template::VicunaV1,
        placeholders,
        tokenization: rgpt_model::prompt_ids::PromptTokenization::Processor,
        preprocessor,
    }
}

fn bench(c: &mut Criterion) {
    let workers: usize = std::env::var("RGPT_BENCH_WORKERS")
        .ok()
        .and_then(|w| w.parse().ok())
        .unwrap_or(2);
    let root = std::env::temp_dir().join("rgpt-loader-bench");
    let demo_64 = PreprocessorConfig {
        size: serde_json::from_value(serde_json::json!({"shortest_edge": 64})).unwrap(),
        crop_size: serde_json::from_value(serde_json::json!({"height": 64, "width": 64})).unwrap(),
        ..PreprocessorConfig::default()
    };
    let cases = [
        (
            "jpeg_640x480_to_336",
            root.join("jpeg"),
            640,
            480,
            "jpg",
            PreprocessorConfig::clip_vit_large_patch14_336(),
        ),
        ("png_64_synthetic", root.join("png"), 64, 64, "png", demo_64),
    ];
    let mut group = c.benchmark_group("loader");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(20));
    group.throughput(Throughput::Elements(SAMPLES as u64));
    for (name, dir, width, height, extension, preprocessor) in cases {
        let samples = world(&dir, width, height, extension);
        let config = LoaderConfig {
            image_root: dir.clone(),
            batch_size: 16,
            workers,
            strict: true,
            ..LoaderConfig::default()
        };
        let loader = Loader::new(samples, format(preprocessor), config).unwrap();
        group.bench_function(format!("{name}/workers_{workers}"), |b| {
            b.iter(|| {
                let n: usize = loader
                    .batches(0, 0)
                    .into_iter()
                    .map(|batch| batch.unwrap().samples.len())
                    .sum();
                assert_eq!(n, SAMPLES);
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
