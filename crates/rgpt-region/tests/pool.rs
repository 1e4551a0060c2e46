//! Mask pooling and grid projection against direct computations: a per-pixel
//! loop in f64 for pooling (both implementations, 1e-5 relative, f32 sums
//! of at most 36 cells), and hand-computed coverage fractions for projection.
use rgpt_region::pool::{mask_pool, PoolStrategy};
use rgpt_region::projection::{project_mask, GridGeometry};
use rgpt_region::RegionError;
use tch::{Device, Kind, Tensor};

/// sum_p w_p z_p / sum_p w_p, one pixel at a time.
fn reference_pool(features: &Tensor, masks: &Tensor, image_index: &[i64]) -> Vec<Vec<f64>> {
    let (_, c, h, w) = features.size4().unwrap();
    let f: Vec<f64> = Vec::try_from(features.to_kind(Kind::Double).flatten(0, -1)).unwrap();
    let m: Vec<f64> = Vec::try_from(masks.to_kind(Kind::Double).flatten(0, -1)).unwrap();
    image_index
        .iter()
        .enumerate()
        .map(|(r, &b)| {
            let mut acc = vec![0.0; c as usize];
            let mut total = 0.0;
            for y in 0..h {
                for x in 0..w {
                    let weight = m[((r as i64 * h + y) * w + x) as usize];
                    total += weight;
                    for (ch, a) in acc.iter_mut().enumerate() {
                        *a += weight * f[(((b * c + ch as i64) * h + y) * w + x) as usize];
                    }
                }
            }
            acc.into_iter().map(|a| a / total).collect()
        })
        .collect()
}

fn assert_close(pooled: &Tensor, reference: &[Vec<f64>], what: &str) {
    let got: Vec<Vec<f64>> = Vec::try_from(pooled.to_kind(Kind::Double)).unwrap();
    for (r, (g, e)) in got.iter().zip(reference).enumerate() {
        for (a, b) in g.iter().zip(e) {
            assert!(
                (a - b).abs() <= 1e-5 * (1.0 + b.abs()),
                "{what}: region {r}: {a} vs {b}"
            );
        }
    }
}

#[test]
fn dense_and_sparse_equal_a_pixel_loop_on_random_masks() {
    tch::manual_seed(11);
    let opts = (Kind::Float, Device::Cpu);
    for (batch, regions, size) in [(1, 1, 4), (2, 7, 6), (3, 12, 9)] {
        let features = Tensor::randn([batch, 5, size, size], opts);
        // Binary masks of varied density, and fractional (projected) weights.
        let density = Tensor::rand([regions, 1, 1], opts);
        let binary = Tensor::rand([regions, size, size], opts)
            .lt_tensor(&density)
            .to_kind(Kind::Float);
        let _ = binary.narrow(1, 0, 1).narrow(2, 0, 1).fill_(1.0); // never empty
        let fractional = Tensor::rand([regions, size, size], opts) * &binary;
        let image_index: Vec<i64> = (0..regions).map(|r| (r * 7 + 3) % batch).collect();
        for (name, masks) in [("binary", &binary), ("fractional", &fractional)] {
            let reference = reference_pool(&features, masks, &image_index);
            for strategy in [
                PoolStrategy::Dense,
                PoolStrategy::Sparse,
                PoolStrategy::Auto,
            ] {
                let pooled = mask_pool(&features, masks, &image_index, strategy).unwrap();
                assert_eq!(pooled.size(), [regions, 5]);
                assert_close(
                    &pooled,
                    &reference,
                    &format!("{name} {strategy:?} b{batch} n{regions}"),
                );
            }
        }
    }
}

#[test]
fn pooling_keeps_the_feature_dtype() {
    let features = Tensor::randn([1, 4, 3, 3], (Kind::BFloat16, Device::Cpu));
    let masks = Tensor::ones([2, 3, 3], (Kind::Float, Device::Cpu));
    let pooled = mask_pool(&features, &masks, &[0, 0], PoolStrategy::Auto).unwrap();
    assert_eq!(pooled.kind(), Kind::BFloat16);
}

#[test]
fn bad_pooling_input_is_an_error_naming_the_region() {
    let features = Tensor::randn([2, 4, 3, 3], (Kind::Float, Device::Cpu));
    let masks = Tensor::ones([2, 3, 3], (Kind::Float, Device::Cpu));
    let empty = Tensor::zeros([2, 3, 3], (Kind::Float, Device::Cpu));
    let _ = empty.get(0).fill_(1.0);
    assert!(matches!(
        mask_pool(&features, &empty, &[0, 1], PoolStrategy::Dense),
        Err(RegionError::EmptyRegion { region: 1 })
    ));
    assert!(matches!(
        mask_pool(&features, &masks, &[0, 2], PoolStrategy::Dense),
        Err(RegionError::ImageIndex {
            region: 1,
            image: 2,
            batch: 2
        })
    ));
    assert!(matches!(
        mask_pool(&features, &masks, &[0], PoolStrategy::Dense),
        Err(RegionError::IndexCount {
            masks: 2,
            indices: 1
        })
    ));
    let wrong = Tensor::ones([2, 4, 3], (Kind::Float, Device::Cpu));
    assert!(matches!(
        mask_pool(&features, &wrong, &[0, 1], PoolStrategy::Dense),
        Err(RegionError::MaskShape { .. })
    ));
    let flat = Tensor::ones([4, 9], (Kind::Float, Device::Cpu));
    assert!(matches!(
        mask_pool(&flat, &masks, &[0, 1], PoolStrategy::Dense),
        Err(RegionError::FeatureShape(_))
    ));
}

fn grid(t: &Tensor) -> Vec<Vec<f32>> {
    Vec::try_from(t).unwrap()
}

#[test]
fn box_projection_on_a_4x4_grid_matches_a_hand_computation() {
    // A 16x16 image, 4x4 cells of 4x4 pixels. The box covers pixel columns
    // 2..10 and rows 0..4: half of cell column 0, all of column 1, half of
    // column 2, in cell row 0 only.
    let mask = Tensor::zeros([16, 16], (Kind::Uint8, Device::Cpu));
    let _ = mask.narrow(0, 0, 4).narrow(1, 2, 8).fill_(1);
    let projected = project_mask(&mask, &GridGeometry::identity(16, 16, 4, 4), 0).unwrap();
    assert_eq!(
        grid(&projected),
        vec![
            vec![0.5, 1.0, 0.5, 0.0],
            vec![0.0; 4],
            vec![0.0; 4],
            vec![0.0; 4]
        ]
    );
}

#[test]
fn a_region_smaller_than_a_cell_keeps_its_weight() {
    let mask = Tensor::zeros([16, 16], (Kind::Uint8, Device::Cpu));
    let _ = mask.get(5).get(9).fill_(1);
    let projected = project_mask(&mask, &GridGeometry::identity(16, 16, 4, 4), 0).unwrap();
    // Pixel (y 5, x 9) lies in cell (1, 2) and covers 1/16 of it.
    assert_eq!(grid(&projected)[1][2], 1.0 / 16.0);
    assert_eq!(
        f64::try_from(projected.sum(Kind::Float)).unwrap(),
        1.0 / 16.0
    );
}

#[test]
fn scaled_and_offset_geometry() {
    // An 8x4 image padded to 8x8 (4 rows of padding on top), then scaled 2x
    // to 16x16; 4x4 grid. Original pixel (0, 0) lands on processed
    // [0, 2] x [8, 10]: a quarter of cell (row 2, column 0).
    let geometry = GridGeometry {
        scale_x: 2.0,
        scale_y: 2.0,
        offset_x: 0.0,
        offset_y: 8.0,
        processed_width: 16.0,
        processed_height: 16.0,
        grid_width: 4,
        grid_height: 4,
    };
    let mask = Tensor::zeros([4, 8], (Kind::Uint8, Device::Cpu));
    let _ = mask.get(0).get(0).fill_(1);
    let projected = project_mask(&mask, &geometry, 0).unwrap();
    let mut expected = vec![vec![0.0f32; 4]; 4];
    expected[2][0] = 0.25;
    assert_eq!(grid(&projected), expected);
    // The whole image covers exactly the bottom half of the grid.
    let full = Tensor::ones([4, 8], (Kind::Uint8, Device::Cpu));
    let projected = grid(&project_mask(&full, &geometry, 0).unwrap());
    assert_eq!(projected[..2], vec![vec![0.0; 4]; 2]);
    assert_eq!(projected[2..], vec![vec![1.0; 4]; 2]);
}

#[test]
fn a_region_cropped_away_is_an_error() {
    // Centre crop keeps processed x in [0, 16) of a 24-pixel-wide resize:
    // offset -4 drops original columns 0..4 (scale 1).
    let geometry = GridGeometry {
        offset_x: -4.0,
        ..GridGeometry::identity(16, 16, 4, 4)
    };
    let mask = Tensor::zeros([16, 24], (Kind::Uint8, Device::Cpu));
    let _ = mask.narrow(1, 0, 4).fill_(1);
    assert!(matches!(
        project_mask(&mask, &geometry, 3),
        Err(RegionError::EmptyRegion { region: 3 })
    ));
    let empty = Tensor::zeros([16, 16], (Kind::Uint8, Device::Cpu));
    assert!(project_mask(&empty, &GridGeometry::identity(16, 16, 4, 4), 0).is_err());
}

#[test]
fn a_rasterised_box_projects_like_its_pixels() {
    use rgpt_region::{project_bitmap, rasterize};
    let spec: rgpt_region::RegionSpec = "box:2,0,10,4".parse().unwrap();
    let bitmap = rasterize(&spec, 16, 16).unwrap();
    let projected = project_bitmap(&bitmap, &GridGeometry::identity(16, 16, 4, 4), 0).unwrap();
    assert_eq!(grid(&projected)[0], vec![0.5, 1.0, 0.5, 0.0]);
}

/// The CSR the CUDA kernel reads: per region its covered cells with
/// weights normalised as `mask_pool` normalises them, so pooling it (the
/// kernel's arithmetic, on the CPU in f64) gives `mask_pool`'s answer; a
/// full rectangle of equal weights is a box, anything else is not.
#[test]
fn the_kernel_csr_pools_like_mask_pool() {
    use rgpt_region::csr::RegionCsr;
    let _guard = tch::no_grad_guard();
    tch::manual_seed(5);
    let features = Tensor::randn([2, 6, 7, 9], (Kind::Float, Device::Cpu));
    let masks = Tensor::zeros([4, 7, 9], (Kind::Float, Device::Cpu));
    let _ = masks.get(0).narrow(0, 1, 3).narrow(1, 2, 4).fill_(1.0); // a box
    let _ = masks.get(1).narrow(0, 0, 7).narrow(1, 0, 9).fill_(0.5); // the whole grid
    let _ = masks.get(2).narrow(0, 2, 2).narrow(1, 2, 2).fill_(1.0); // a box, then not:
    let _ = masks.get(2).get(2).get(2).fill_(0.25); // uneven weights
    let _ = masks.get(3).get(0).get(0).fill_(1.0); // an L of three cells
    let _ = masks.get(3).get(1).get(0).fill_(1.0);
    let _ = masks.get(3).get(1).get(1).fill_(1.0);
    let image_index = [0, 1, 1, 0];
    let csr = RegionCsr::from_masks(&masks, &image_index).unwrap();
    assert_eq!(csr.row_ptr, vec![0, 12, 75, 79, 82]);
    for r in 0..4 {
        let (_, weights) = csr.row(r);
        assert!((weights.iter().map(|&w| f64::from(w)).sum::<f64>() - 1.0).abs() < 1e-6);
    }
    assert_eq!(csr.as_box(0), Some([1, 4, 2, 6]));
    assert_eq!(csr.as_box(1), Some([0, 7, 0, 9]));
    assert_eq!(csr.as_box(2), None);
    assert_eq!(csr.as_box(3), None);
    assert_eq!(csr.boxes(), None);
    let from_csr = csr.pool_on_cpu(&features).unwrap();
    for strategy in [PoolStrategy::Dense, PoolStrategy::Sparse] {
        let pooled = mask_pool(&features, &masks, &image_index, strategy).unwrap();
        assert_close(&pooled, &from_csr, &format!("{strategy:?} against the CSR"));
    }
    // An empty region is refused by name, as mask_pool refuses it.
    let _ = masks.get(3).zero_();
    assert!(matches!(
        RegionCsr::from_masks(&masks, &image_index),
        Err(rgpt_region::RegionError::EmptyRegion { region: 3 })
    ));
}

/// Which implementation runs: the kernel for CUDA tensors without a
/// gradient in a `cuda` build, else sparse or dense by coverage; asking
/// for the kernel where it cannot run says why.
#[test]
fn the_strategy_is_resolved_by_device_gradient_and_coverage() {
    use rgpt_region::pool::{resolve_strategy, SPARSE_MAX_CELLS_PER_GRID};
    let covered = |fraction: f64| move || Ok(fraction);
    let resolve =
        |strategy, cuda, grad, fraction| resolve_strategy(strategy, cuda, grad, covered(fraction));
    let little = SPARSE_MAX_CELLS_PER_GRID / 2.0;
    let much = SPARSE_MAX_CELLS_PER_GRID * 2.0;
    assert_eq!(
        resolve(PoolStrategy::Auto, false, false, little).unwrap(),
        PoolStrategy::Sparse
    );
    assert_eq!(
        resolve(PoolStrategy::Auto, false, true, much).unwrap(),
        PoolStrategy::Dense
    );
    assert_eq!(
        resolve(PoolStrategy::Dense, true, false, little).unwrap(),
        PoolStrategy::Dense
    );
    // A CUDA tensor that needs a gradient takes a differentiable form.
    assert_eq!(
        resolve(PoolStrategy::Auto, true, true, much).unwrap(),
        PoolStrategy::Dense
    );
    let on_cpu = resolve(PoolStrategy::Kernel, false, false, much)
        .unwrap_err()
        .to_string();
    let with_grad = resolve(PoolStrategy::Kernel, true, true, much)
        .unwrap_err()
        .to_string();
    if cfg!(feature = "cuda") {
        assert_eq!(
            resolve(PoolStrategy::Auto, true, false, much).unwrap(),
            PoolStrategy::Kernel
        );
        assert_eq!(
            resolve(PoolStrategy::Kernel, true, false, much).unwrap(),
            PoolStrategy::Kernel
        );
        assert!(on_cpu.contains("CUDA tensors only"), "{on_cpu}");
        assert!(with_grad.contains("no backward"), "{with_grad}");
    } else {
        assert_eq!(
            resolve(PoolStrategy::Auto, true, false, much).unwrap(),
            PoolStrategy::Dense
        );
        for error in [on_cpu, with_grad] {
            assert!(error.contains("`cuda` feature"), "{error}");
        }
    }
    // The coverage is only read for the CPU choice.
    let unread = || -> Result<f64, rgpt_region::RegionError> { panic!("coverage read") };
    if cfg!(feature = "cuda") {
        resolve_strategy(PoolStrategy::Auto, true, false, unread).unwrap();
    }
    resolve_strategy(PoolStrategy::Dense, false, false, unread).unwrap();
}

/// The dense and sparse forms, which training takes, give the features
/// the same gradient (the kernel has no backward; this is the path a
/// gradient takes on every device).
#[test]
fn dense_and_sparse_pooling_have_the_same_gradient() {
    tch::manual_seed(6);
    let masks = Tensor::rand([3, 5, 5], (Kind::Float, Device::Cpu))
        .gt(0.6)
        .to_kind(Kind::Float);
    let _ = masks.get(0).get(0).get(0).fill_(1.0);
    let _ = masks.get(1).get(4).get(4).fill_(1.0);
    let _ = masks.get(2).get(2).get(2).fill_(1.0);
    let weights = Tensor::randn([3, 4], (Kind::Float, Device::Cpu));
    let grads: Vec<Tensor> = [PoolStrategy::Dense, PoolStrategy::Sparse]
        .into_iter()
        .map(|strategy| {
            tch::manual_seed(7);
            let features =
                Tensor::randn([2, 4, 5, 5], (Kind::Float, Device::Cpu)).set_requires_grad(true);
            let pooled = mask_pool(&features, &masks, &[0, 1, 1], strategy).unwrap();
            (pooled * &weights).sum(Kind::Float).backward();
            features.grad()
        })
        .collect();
    let diff = f64::try_from((&grads[0] - &grads[1]).abs().max()).unwrap();
    assert!(diff < 1e-6, "gradients differ by {diff}");
    assert!(f64::try_from(grads[0].abs().sum(Kind::Float)).unwrap() > 0.0);
}
