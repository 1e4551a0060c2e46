//! Mask pooling (paper Sec. 3.1) over a refined feature map the size
//! RGPT-7B's is (CLIP ViT-L/14-336's 24x24 grid refined 4x to 96x96, 1,024
//! channels), regions of several sizes per image. Pooling reads the
//! features and the masks once and writes one vector per region, so its
//! bound is those bytes over the measured bandwidth.
use rgpt_region::pool::{mask_pool, PoolStrategy};
use serde::Serialize;
use tch::{Device, Kind, Tensor};

use crate::bandwidth::Bandwidth;
use crate::timing::{median, time_runs};
use crate::BenchError;

#[derive(Debug, Clone)]
pub struct MaskPoolOptions {
    pub batch: i64,
    pub channels: i64,
    /// The grid is `grid x grid` cells.
    pub grid: i64,
    /// Per image; box regions of growing size (a tenth of the side up to
    /// two thirds).
    pub regions: i64,
    pub runs: usize,
}

impl Default for MaskPoolOptions {
    fn default() -> Self {
        MaskPoolOptions {
            batch: 1,
            channels: 1024,
            grid: 96,
            regions: 3,
            runs: 20,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct MaskPoolReport {
    pub batch: i64,
    pub channels: i64,
    pub grid: i64,
    pub regions: i64,
    /// Median over runs.
    pub ms: f64,
    /// Features, masks and output.
    pub bytes: u64,
    pub bandwidth_bytes_per_s: f64,
    /// The time the bytes take at the measured bandwidth.
    pub bound_ms: f64,
    /// `bound_ms / ms`.
    pub bound_fraction: f64,
}

/// Runs the mask-pool benchmark in `kind` on `device`.
pub fn run(
    device: Device,
    kind: Kind,
    options: &MaskPoolOptions,
    bandwidth: &Bandwidth,
) -> Result<MaskPoolReport, BenchError> {
    let MaskPoolOptions {
        batch,
        channels,
        grid,
        regions,
        runs,
    } = *options;
    if batch < 1 || channels < 1 || grid < 2 || regions < 1 {
        return Err(BenchError::Invalid(
            "mask-pool needs at least one image, channel and region, and a grid of 2".into(),
        ));
    }
    let _guard = tch::no_grad_guard();
    tch::manual_seed(2);
    let features = Tensor::f_randn([batch, channels, grid, grid], (kind, device))?;
    let masks = Tensor::f_zeros([batch * regions, grid, grid], (Kind::Float, device))?;
    let mut image_index = Vec::new();
    for image in 0..batch {
        for r in 0..regions {
            // Sides from a tenth of the grid to two thirds.
            let fraction = 0.1 + 0.57 * r as f64 / (regions - 1).max(1) as f64;
            let side = ((grid as f64 * fraction).round() as i64).clamp(1, grid);
            let at = (grid - side) / 2;
            let _ = masks
                .get(image * regions + r)
                .narrow(0, at, side)
                .narrow(1, at, side)
                .f_fill_(1.0)?;
            image_index.push(image);
        }
    }
    let seconds = time_runs(device, 2, runs.max(1), || -> Result<(), BenchError> {
        let _ = mask_pool(&features, &masks, &image_index, PoolStrategy::Auto)?;
        Ok(())
    })?;
    let ms = median(&seconds) * 1e3;
    let bytes = (features.numel() * kind.elt_size_in_bytes()
        + masks.numel() * 4
        + (batch * regions * channels) as usize * kind.elt_size_in_bytes()) as u64;
    let bound_ms = bytes as f64 / bandwidth.bytes_per_s * 1e3;
    Ok(MaskPoolReport {
        batch,
        channels,
        grid,
        regions,
        ms,
        bytes,
        bandwidth_bytes_per_s: bandwidth.bytes_per_s,
        bound_ms,
        bound_fraction: bound_ms / ms,
    })
}
