//! The CUDA mask-pool kernel against the CPU, on a GPU: random features in
//! f32, bf16 and f16, grids and channel counts that are not multiples of
//! the kernel's tiles, boxes (the box kernel) and arbitrary masks (the CSR
//! kernel), several images. The kernel's output starts as NaN, so every
//! element it fails to write shows. `mask_pool` picks the kernel for CUDA
//! features without a gradient, and a dense form for features that need
//! one, whose gradient is the CPU's.
//!
//! This needs a GPU: `scripts/gpu_check.sh` runs it on the GPU machine
//! (`scripts/test.sh` compiles every kernel with NVRTC instead). Without a
//! CUDA device it fails, saying so.
use rgpt_region::csr::RegionCsr;
use rgpt_region::pool::{mask_pool, PoolStrategy};
use tch::{Device, Kind, Tensor};

fn gpu() -> Device {
    assert!(
        tch::Cuda::is_available(),
        "no CUDA device: this test runs on the GPU machine (scripts/gpu_check.sh)"
    );
    Device::Cuda(0)
}

/// Masks for `images` images of `h x w`: per image a box, a one-cell box,
/// and a random blob with uneven weights.
fn masks(images: i64, h: i64, w: i64) -> (Tensor, Vec<i64>) {
    let masks = Tensor::zeros([images * 3, h, w], (Kind::Float, Device::Cpu));
    let mut index = Vec::new();
    for image in 0..images {
        let r = image * 3;
        let _ = masks
            .get(r)
            .narrow(0, h / 4, h / 2)
            .narrow(1, w / 5, w / 2)
            .fill_(1.0);
        let _ = masks.get(r + 1).get(h - 1).get(w - 1).fill_(1.0);
        let blob = Tensor::rand([h, w], (Kind::Float, Device::Cpu));
        let blob = blob.where_self(&blob.gt(0.6), &Tensor::zeros_like(&blob));
        masks.get(r + 2).copy_(&blob);
        let _ = masks.get(r + 2).get(0).get(0).fill_(0.3);
        index.extend([image; 3]);
    }
    (masks, index)
}

#[test]
fn the_kernel_matches_the_cpu_for_every_dtype_and_shape() {
    let device = gpu();
    let _guard = tch::no_grad_guard();
    tch::manual_seed(11);
    for (images, channels, h, w) in [
        (1, 1024, 96, 96),
        (2, 33, 7, 9),
        (3, 100, 24, 24),
        (1, 5, 1, 3),
    ] {
        let (masks, index) = masks(images, h, w);
        let csr = RegionCsr::from_masks(&masks, &index).unwrap();
        for kind in [Kind::Float, Kind::BFloat16, Kind::Half] {
            let features =
                Tensor::randn([images, channels, h, w], (Kind::Float, Device::Cpu)).to_kind(kind);
            let want = csr.pool_on_cpu(&features.to_kind(Kind::Float)).unwrap();
            let got = rgpt_region::cuda::pool(&features.to_device(device), &csr).unwrap();
            let got: Vec<Vec<f64>> =
                Vec::try_from(got.to_kind(Kind::Double).to_device(Device::Cpu)).unwrap();
            for (r, (g, w)) in got.iter().zip(&want).enumerate() {
                for (c, (g, w)) in g.iter().zip(w).enumerate() {
                    assert!(
                        (g - w).abs() <= 1e-4 * (1.0 + w.abs()),
                        "{kind:?} {images}x{channels}x{h}x{w}: region {r} channel {c}: {g} against {w}"
                    );
                }
            }
            // The box kernel: the box regions alone.
            let boxes = masks.narrow(0, 0, 2);
            let box_csr = RegionCsr::from_masks(&boxes, &[0, 0]).unwrap();
            assert!(box_csr.boxes().is_some());
            let got = rgpt_region::cuda::pool(&features.to_device(device), &box_csr).unwrap();
            let want = box_csr.pool_on_cpu(&features.to_kind(Kind::Float)).unwrap();
            let got: Vec<Vec<f64>> =
                Vec::try_from(got.to_kind(Kind::Double).to_device(Device::Cpu)).unwrap();
            for (g, w) in got.iter().flatten().zip(want.iter().flatten()) {
                assert!(
                    (g - w).abs() <= 1e-4 * (1.0 + w.abs()),
                    "{kind:?} box: {g} against {w}"
                );
            }
        }
    }
}

#[test]
fn mask_pool_takes_the_kernel_without_a_gradient_and_a_dense_form_with_one() {
    let device = gpu();
    tch::manual_seed(12);
    let (masks, index) = masks(2, 24, 24);
    let features = Tensor::randn([2, 64, 24, 24], (Kind::Float, Device::Cpu));
    let cpu = mask_pool(&features, &masks, &index, PoolStrategy::Dense).unwrap();
    let on_gpu = features.to_device(device);
    let kernel = tch::no_grad(|| mask_pool(&on_gpu, &masks, &index, PoolStrategy::Auto).unwrap());
    let diff = f64::try_from((kernel.to_device(Device::Cpu) - &cpu).abs().max()).unwrap();
    assert!(diff < 1e-4, "kernel against dense: {diff}");
    // With a gradient: the same values, and the CPU's gradient.
    let weights = Tensor::randn([6, 64], (Kind::Float, Device::Cpu));
    let grad = |features: Tensor| {
        let features = features.set_requires_grad(true);
        let pooled = mask_pool(&features, &masks, &index, PoolStrategy::Auto).unwrap();
        (pooled * weights.to_device(features.device()))
            .sum(Kind::Float)
            .backward();
        features.grad().to_device(Device::Cpu)
    };
    let diff = f64::try_from(
        (grad(features.to_device(device)) - grad(features.shallow_clone()))
            .abs()
            .max(),
    )
    .unwrap();
    assert!(diff < 1e-5, "gradients differ by {diff}");
}
