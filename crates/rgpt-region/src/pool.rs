//! Mask Pooling (paper Sec. 3.1): `Z_r = MaskPool(Z_HRes, X_r)`, the mean of
//! the refined features inside each region, one vector per region of any
//! shape. Regions arrive as weights on the feature grid (see
//! `projection.rs`: the fraction of each cell the region covers), so the
//! pooled feature is `sum_p w_p z_p / sum_p w_p`.
//!
//! Two CPU-capable implementations sit behind [`mask_pool`]: a dense one
//! (normalised masks `[n, HW] x [HW, C]` per image, one matmul) and a sparse
//! one (gather the covered cells, weighted `index_add`), which wins when
//! regions cover little of the grid. A CUDA kernel can slot in as a third
//! [`PoolStrategy`] without changing callers.
use tch::{Kind, Tensor};

use crate::RegionError;

/// Which implementation pools; `Auto` picks by how much of the grid the
/// regions cover.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PoolStrategy {
    #[default]
    Auto,
    Dense,
    Sparse,
}

/// The sparse pass (gather + serial `index_add`) costs far more per covered
/// cell than the dense matmul per grid cell, so it only wins when all the
/// regions together cover a small part of one image's grid: measured in
/// `benches/mask_pool.rs` (docs/benchmarks.md), sparse is ahead up to about
/// 1/16 of the grid (one small region) and 2-100x behind beyond it.
const SPARSE_MAX_CELLS_PER_GRID: f64 = 1.0 / 16.0;

/// Pools `features` [B, C, H, W] inside `masks` [N, H, W] (non-negative
/// weights; region `i` belongs to image `image_index[i]`). Returns [N, C] in
/// the features' dtype.
pub fn mask_pool(
    features: &Tensor,
    masks: &Tensor,
    image_index: &[i64],
    strategy: PoolStrategy,
) -> Result<Tensor, RegionError> {
    let (batch, channels, height, width) = features
        .size4()
        .map_err(|_| RegionError::FeatureShape(features.size()))?;
    let regions = image_index.len();
    match masks.size().as_slice() {
        &[n, h, w] if h == height && w == width => {
            if n as usize != regions {
                return Err(RegionError::IndexCount {
                    masks: n as usize,
                    indices: regions,
                });
            }
        }
        found => {
            return Err(RegionError::MaskShape {
                height,
                width,
                found: found.to_vec(),
            })
        }
    }
    for (region, &image) in image_index.iter().enumerate() {
        if !(0..batch).contains(&image) {
            return Err(RegionError::ImageIndex {
                region,
                image,
                batch,
            });
        }
    }
    let device = features.device();
    let weights = masks
        .f_to_kind(Kind::Float)?
        .f_to_device(device)?
        .f_view([regions as i64, height * width])?;
    let totals = weights.f_sum_dim_intlist(1, false, Kind::Float)?;
    let totals_cpu: Vec<f32> = Vec::try_from(&totals.to_device(tch::Device::Cpu))?;
    if let Some(region) = totals_cpu.iter().position(|&t| t <= 0.0 || !t.is_finite()) {
        return Err(RegionError::EmptyRegion { region });
    }
    // [N, HW], each row summing to one.
    let normalised = weights.f_div(&totals.unsqueeze(1))?;
    // [B, HW, C]
    let flat = features
        .f_view([batch, channels, height * width])?
        .f_transpose(1, 2)?;
    let strategy = match strategy {
        PoolStrategy::Auto => {
            let covered = f64::try_from(weights.f_gt(0.0)?.f_sum(Kind::Float)?)?;
            if covered <= SPARSE_MAX_CELLS_PER_GRID * (height * width) as f64 {
                PoolStrategy::Sparse
            } else {
                PoolStrategy::Dense
            }
        }
        chosen => chosen,
    };
    let pooled = match strategy {
        PoolStrategy::Sparse => pool_sparse(&flat, &normalised, image_index)?,
        _ => pool_dense(&flat, &normalised, image_index)?,
    };
    Ok(pooled.f_to_kind(features.kind())?)
}

/// One matmul per image over the regions of that image.
fn pool_dense(
    flat: &Tensor,
    normalised: &Tensor,
    image_index: &[i64],
) -> Result<Tensor, RegionError> {
    let device = flat.device();
    let channels = flat.size()[2];
    let mut out = Tensor::f_zeros([image_index.len() as i64, channels], (Kind::Float, device))?;
    let mut images: Vec<i64> = image_index.to_vec();
    images.sort_unstable();
    images.dedup();
    for image in images {
        let rows: Vec<i64> = (0..image_index.len() as i64)
            .filter(|&r| image_index[r as usize] == image)
            .collect();
        let rows = Tensor::from_slice(&rows).to_device(device);
        let features = flat.f_get(image)?.f_to_kind(Kind::Float)?; // [HW, C]
        let pooled = normalised.f_index_select(0, &rows)?.f_matmul(&features)?;
        out = out.f_index_copy(0, &rows, &pooled)?;
    }
    Ok(out)
}

/// Gathers only covered cells: `out[r] += w[r, p] * z[image(r), p]`.
fn pool_sparse(
    flat: &Tensor,
    normalised: &Tensor,
    image_index: &[i64],
) -> Result<Tensor, RegionError> {
    let device = flat.device();
    let (batch, cells, channels) = flat.size3()?;
    let covered = normalised.f_nonzero()?; // [nnz, 2]: (region, cell)
    let region = covered.f_select(1, 0)?;
    let cell = covered.f_select(1, 1)?;
    let weight = normalised
        .f_view([-1])?
        .f_index_select(0, &(&region * cells + &cell))?;
    let image = Tensor::from_slice(image_index)
        .to_device(device)
        .f_index_select(0, &region)?;
    let gathered = flat
        .f_reshape([batch * cells, channels])?
        .f_index_select(0, &(image * cells + &cell))?
        .f_to_kind(Kind::Float)?;
    let out = Tensor::f_zeros([image_index.len() as i64, channels], (Kind::Float, device))?;
    Ok(out.f_index_add(0, &region, &(gathered * weight.unsqueeze(1)))?)
}
