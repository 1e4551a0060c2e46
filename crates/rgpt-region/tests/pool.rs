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
