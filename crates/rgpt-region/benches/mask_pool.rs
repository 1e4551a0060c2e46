//! Mask pooling throughput: N = 1, 8, 64 regions on 24x24, 48x48 and 96x96
//! grids of C = 1024 channels (ViT-L width; 96x96 is the 4x-refined 24x24
//! map), for small (~2% of the grid) and large (~50%) regions, dense and
//! sparse. Beside each benchmark it prints the memory-traffic floor: the
//! bytes of features and masks that any implementation must read once.
//! `RGPT_BENCH_THREADS` sets libtorch's threads (default 1).
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use rgpt_region::pool::{mask_pool, PoolStrategy};
use tch::{Device, Kind, Tensor};

const CHANNELS: i64 = 1024;

/// Square-ish box masks covering about `fraction` of the grid, spread out.
fn box_masks(regions: i64, size: i64, fraction: f64) -> Tensor {
    let side = ((fraction * (size * size) as f64).sqrt().round() as i64).clamp(1, size);
    let masks = Tensor::zeros([regions, size, size], (Kind::Float, Device::Cpu));
    for r in 0..regions {
        let y = (r * 7) % (size - side + 1);
        let x = (r * 13) % (size - side + 1);
        let _ = masks
            .get(r)
            .narrow(0, y, side)
            .narrow(1, x, side)
            .fill_(1.0);
    }
    masks
}

fn bench(c: &mut Criterion) {
    let threads = std::env::var("RGPT_BENCH_THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(1);
    tch::set_num_threads(threads);
    tch::manual_seed(0);
    let _guard = tch::no_grad_guard();
    let mut group = c.benchmark_group("mask_pool");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    for size in [24i64, 48, 96] {
        let features = Tensor::randn([1, CHANNELS, size, size], (Kind::Float, Device::Cpu));
        for regions in [1i64, 8, 64] {
            for (label, fraction) in [("small", 0.02), ("large", 0.5)] {
                let masks = box_masks(regions, size, fraction);
                let index = vec![0i64; regions as usize];
                let floor_bytes = (CHANNELS * size * size + regions * size * size) * 4;
                for strategy in [PoolStrategy::Dense, PoolStrategy::Sparse] {
                    let id = format!("{size}x{size}/n{regions}/{label}/{strategy:?}");
                    println!(
                        "{id}: memory-traffic floor {:.2} MB ({:.1} us at 10 GB/s)",
                        floor_bytes as f64 / 1e6,
                        floor_bytes as f64 / 1e4
                    );
                    group.bench_function(BenchmarkId::from_parameter(&id), |b| {
                        b.iter(|| mask_pool(&features, &masks, &index, strategy).expect("pools"))
                    });
                }
            }
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
