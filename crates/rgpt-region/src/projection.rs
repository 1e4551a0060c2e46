//! Projecting a region mask given in original-image pixels onto the feature
//! grid the vision tower produces. Pad-to-square, resize and centre crop
//! compose to an axis-aligned scale and offset, so each grid cell's weight is
//! the fraction of its area the region covers, computed separably as
//! `R_y * M * R_x^T` with `R` the 1-D overlap of pixel spans and cell spans.
//! Area weighting keeps a region smaller than one cell visible (it gets a
//! small weight instead of vanishing), which nearest-cell sampling would not.
use tch::{Device, Kind, Tensor};

use crate::raster::Bitmap;
use crate::RegionError;

/// Where original pixels land: `x' = x * scale_x + offset_x` (same for y) in
/// the processed image of `processed_width x processed_height`, which the
/// backbone divides into `grid_width x grid_height` cells.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GridGeometry {
    pub scale_x: f64,
    pub scale_y: f64,
    pub offset_x: f64,
    pub offset_y: f64,
    pub processed_width: f64,
    pub processed_height: f64,
    pub grid_width: usize,
    pub grid_height: usize,
}

impl GridGeometry {
    /// A mask already in processed-image pixels.
    pub fn identity(width: usize, height: usize, grid_width: usize, grid_height: usize) -> Self {
        GridGeometry {
            scale_x: 1.0,
            scale_y: 1.0,
            offset_x: 0.0,
            offset_y: 0.0,
            processed_width: width as f64,
            processed_height: height as f64,
            grid_width,
            grid_height,
        }
    }
}

/// Weights [len_out, len_in]: entry (cell, pixel) is the fraction of the
/// cell's extent that the pixel's span covers, inside the processed image.
fn overlap(len_in: i64, scale: f64, offset: f64, processed: f64, cells: usize) -> Tensor {
    let cell = processed / cells as f64;
    let mut data = vec![0f32; cells * len_in as usize];
    for pixel in 0..len_in as usize {
        let a = (pixel as f64 * scale + offset).max(0.0);
        let b = ((pixel + 1) as f64 * scale + offset).min(processed);
        if b <= a {
            continue;
        }
        let first = (a / cell).floor() as usize;
        let last = ((b / cell).ceil() as usize).min(cells);
        for c in first..last {
            let lo = a.max(c as f64 * cell);
            let hi = b.min((c + 1) as f64 * cell);
            if hi > lo {
                data[c * len_in as usize + pixel] = ((hi - lo) / cell) as f32;
            }
        }
    }
    Tensor::from_slice(&data).view([cells as i64, len_in])
}

/// Projects `mask` [H, W] (non-zero = inside) onto the grid: [gh, gw] f32,
/// each cell the covered fraction of its area in [0, 1]. `region` names the
/// region in errors.
pub fn project_mask(
    mask: &Tensor,
    geometry: &GridGeometry,
    region: usize,
) -> Result<Tensor, RegionError> {
    let (height, width) = mask.size2()?;
    let inside = mask
        .f_ne(0)?
        .f_to_kind(Kind::Float)?
        .f_to_device(Device::Cpu)?;
    let rows = overlap(
        height,
        geometry.scale_y,
        geometry.offset_y,
        geometry.processed_height,
        geometry.grid_height,
    );
    let cols = overlap(
        width,
        geometry.scale_x,
        geometry.offset_x,
        geometry.processed_width,
        geometry.grid_width,
    );
    let projected = rows.f_matmul(&inside)?.f_matmul(&cols.f_transpose(0, 1)?)?;
    if f64::try_from(projected.f_sum(Kind::Float)?)? <= 0.0 {
        return Err(RegionError::EmptyRegion { region });
    }
    Ok(projected)
}

/// [`project_mask`] for a rasterised region.
pub fn project_bitmap(
    mask: &Bitmap,
    geometry: &GridGeometry,
    region: usize,
) -> Result<Tensor, RegionError> {
    let pixels = Tensor::from_slice(&mask.data).view([mask.height as i64, mask.width as i64]);
    project_mask(&pixels, geometry, region)
}
