//! Mask Pooling (paper Sec. 3.1): `Z_r = MaskPool(Z_HRes, X_r)`, the mean of
//! the refined features inside each region, one vector per region of any
//! shape. Two ways to weigh the grid, named by [`MaskPoolKind`]
//! (`rgpt.mask_pool` in a checkpoint's config):
//!
//! - `reference` ([`mask_pool_reference`]), the default: RegionGPT's
//!   reference, NVIDIA SpatialRGPT (GitHub `AnjieCheng/SpatialRGPT`, commit
//!   16715d4, Apache-2.0) `llava/model/region_extractor/base_extractor.py`,
//!   class `MaskPooling`, as its `regiongpt` extractor calls it. The mask
//!   comes at the processed image's resolution (see rgpt-vision's
//!   `ImageTransform::preprocess_mask`), is resized to the feature grid by
//!   bilinear interpolation and normalised by its sum plus 1e-8.
//!   Deliberate differences, both in how the region is rasterised on the
//!   original image before any of this: boxes rasterise as pycocotools does
//!   (the same pixels as the reference's `int()`-truncated slice for integer
//!   corners, a row or column apart for some fractional ones), and the parts
//!   of a polygon are merged (the reference sums them, so pixels where two
//!   parts overlap count twice).
//! - `area` ([`mask_pool`] after `projection.rs`): each cell weighted by the
//!   fraction of its area the original-image mask covers, so the pooled
//!   feature is `sum_p w_p z_p / sum_p w_p`. This crate's own way before it
//!   followed the reference; the demo's from-scratch model is trained with
//!   it.
//!
//! Three implementations sit behind [`mask_pool`]: a dense one (normalised
//! masks `[n, HW] x [HW, C]` per image, one matmul), a sparse one (gather
//! the covered cells, weighted `index_add`), which wins when regions cover
//! little of the grid, and, with the `cuda` feature, the CUDA kernel over
//! a CSR of covered cells (`crate::cuda`, `crate::csr`) for CUDA tensors
//! that need no gradient. [`resolve_strategy`] picks; the dense and sparse
//! forms are differentiable (libtorch's autograd), so training takes one of
//! them.
//!
//! Everything here needs libtorch (the crate's `tch` feature).
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::RegionError;

/// How a region's mask becomes weights on the refined grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MaskPoolKind {
    /// The reference's: the mask at the processed image's resolution,
    /// bilinearly resized to the grid, weights `m / (sum m + 1e-8)`
    /// ([`mask_pool_reference`]).
    #[default]
    Reference,
    /// The covered fraction of each cell's area, projected from the
    /// original-image mask ([`crate::projection::project_bitmap`] and
    /// [`mask_pool`]).
    Area,
}

impl MaskPoolKind {
    /// The name configs use (`reference`, `area`).
    pub fn name(&self) -> &'static str {
        match self {
            MaskPoolKind::Reference => "reference",
            MaskPoolKind::Area => "area",
        }
    }
}

/// Which implementation pools; `Auto` picks by how much of the grid the
/// regions cover.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PoolStrategy {
    #[default]
    Auto,
    Dense,
    Sparse,
    /// The CUDA kernel: CUDA tensors, a build with the `cuda` feature, and
    /// features that need no gradient.
    Kernel,
}

/// Which implementation [`mask_pool`] runs for `strategy` on features on
/// a CUDA device or not, needing a gradient or not, with the regions
/// covering `covered_fraction` of one image's grid (only read for the CPU
/// choice). `Auto` takes the kernel whenever it applies, else sparse up to
/// [`SPARSE_MAX_CELLS_PER_GRID`] of the grid and dense beyond; asking for
/// the kernel where it does not apply is an error that says why.
pub fn resolve_strategy(
    strategy: PoolStrategy,
    on_cuda: bool,
    needs_grad: bool,
    covered_fraction: impl FnOnce() -> Result<f64, RegionError>,
) -> Result<PoolStrategy, RegionError> {
    let kernel = if !cfg!(feature = "cuda") {
        Err("this build has no CUDA kernel: build rgpt-region with the `cuda` feature")
    } else if !on_cuda {
        Err("it pools CUDA tensors only: move the features to a CUDA device")
    } else if needs_grad {
        Err("it has no backward: the features need a gradient, use the dense or sparse form")
    } else {
        Ok(PoolStrategy::Kernel)
    };
    match strategy {
        PoolStrategy::Kernel => kernel.map_err(|why| RegionError::Kernel(why.into())),
        PoolStrategy::Auto => match kernel {
            Ok(kernel) => Ok(kernel),
            Err(_) if covered_fraction()? <= SPARSE_MAX_CELLS_PER_GRID => Ok(PoolStrategy::Sparse),
            Err(_) => Ok(PoolStrategy::Dense),
        },
        chosen => Ok(chosen),
    }
}

/// The sparse pass (gather + serial `index_add`) costs far more per covered
/// cell than the dense matmul per grid cell, so it only wins when all the
/// regions together cover a small part of one image's grid: measured in
/// `benches/mask_pool.rs` (docs/benchmarks.md), sparse is ahead up to about
/// 1/16 of the grid (one small region) and 2-100x behind beyond it.
pub const SPARSE_MAX_CELLS_PER_GRID: f64 = 1.0 / 16.0;

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
    check_image_index(image_index, batch)?;
    let device = features.device();
    let covered = || -> Result<f64, RegionError> {
        let cells = masks.f_gt(0.0)?.f_sum(Kind::Float)?;
        Ok(f64::try_from(cells)? / (height * width) as f64)
    };
    let strategy = resolve_strategy(
        strategy,
        device.is_cuda(),
        features.requires_grad(),
        covered,
    )?;
    if strategy == PoolStrategy::Kernel {
        return kernel(features, masks, image_index);
    }
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
    let pooled = match strategy {
        PoolStrategy::Sparse => pool_sparse(&flat, &normalised, image_index)?,
        _ => pool_dense(&flat, &normalised, image_index)?,
    };
    Ok(pooled.f_to_kind(features.kind())?)
}

/// The CUDA kernel over the masks' CSR.
#[cfg(feature = "cuda")]
fn kernel(features: &Tensor, masks: &Tensor, image_index: &[i64]) -> Result<Tensor, RegionError> {
    let csr = crate::csr::RegionCsr::from_masks(masks, image_index)?;
    Ok(crate::cuda::pool(features, &csr)?.f_to_kind(features.kind())?)
}

#[cfg(not(feature = "cuda"))]
fn kernel(_: &Tensor, _: &Tensor, _: &[i64]) -> Result<Tensor, RegionError> {
    Err(RegionError::Kernel("this build has no CUDA kernel".into()))
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

/// What the reference adds to a mask's sum before dividing by it.
pub const REFERENCE_NORM_EPS: f64 = 1e-8;

/// The reference's resize of region masks `[N, h, w]` (at the processed
/// image's resolution) to a feature grid of `height x width` cells, as
/// `MaskPooling` does it: `scale = (cells / (h * w)) ** 0.5` in f64 (with
/// `cells = height * width`), then `F.interpolate(mask.float()[None],
/// scale_factor=scale, mode="bilinear")`: align_corners False, no
/// antialiasing, and, `recompute_scale_factor` being unset, the output size
/// is `floor(h * scale) x floor(w * scale)` computed in f64 while the kernel
/// maps output cell `i` to the source coordinate `max((i + 0.5) * s - 0.5,
/// 0)` with `s = f32(1 / scale)`, the given scale rather than `h / out_h`.
/// Interpolated in f32 on the features' device, returned `[N, height,
/// width]` f32. The reference then assumes that size is the grid; when the
/// floors give anything else (masks and grid of different aspect ratios),
/// this is an error.
pub fn reference_grid_masks(
    masks: &Tensor,
    height: i64,
    width: i64,
) -> Result<Tensor, RegionError> {
    let (_, mask_h, mask_w) = masks.size3().map_err(|_| RegionError::MaskShape {
        height,
        width,
        found: masks.size(),
    })?;
    let cells = height * width;
    let mask_cells = mask_h * mask_w;
    if cells <= 0 || mask_cells <= 0 {
        return Err(RegionError::MaskShape {
            height,
            width,
            found: masks.size(),
        });
    }
    // Python: `(x_len / mask_hw) ** 0.5`, a correctly rounded division and
    // C's pow, which `powf` calls too.
    let scale = (cells as f64 / mask_cells as f64).powf(0.5);
    let out_h = (mask_h as f64 * scale).floor() as i64;
    let out_w = (mask_w as f64 * scale).floor() as i64;
    if (out_h, out_w) != (height, width) {
        return Err(RegionError::ReferenceGrid {
            mask_height: mask_h,
            mask_width: mask_w,
            got_height: out_h,
            got_width: out_w,
            height,
            width,
        });
    }
    Ok(masks
        .f_to_kind(Kind::Float)?
        .f_unsqueeze(0)? // [1, N, h, w]: the regions are channels
        .f_upsample_bilinear2d([out_h, out_w], false, Some(scale), Some(scale))?
        .f_squeeze_dim(0)?)
}

/// The reference's `MaskPooling` of `features` [B, C, H, W] over `masks`
/// [N, h, w] given at the processed image's resolution (region `i` belongs
/// to image `image_index[i]`). Each mask is resized with
/// [`reference_grid_masks`], cast to the features' dtype (the reference
/// interpolates in f32, then `.to(x.dtype)`), divided by its sum plus
/// [`REFERENCE_NORM_EPS`] (sum, addition and division in that dtype), and
/// contracted with the image's `[HW, C]` features in that dtype. Returns
/// [N, C] in the features' dtype.
///
/// As in the reference, a mask that the resize leaves all zero (a region
/// smaller than a grid cell can fall between the sampled points) is no
/// error: its weights are `0 / 1e-8 = 0` and its pooled feature is zero.
pub fn mask_pool_reference(
    features: &Tensor,
    masks: &Tensor,
    image_index: &[i64],
) -> Result<Tensor, RegionError> {
    let (batch, channels, height, width) = features
        .size4()
        .map_err(|_| RegionError::FeatureShape(features.size()))?;
    let regions = image_index.len();
    let count = masks.size().first().copied().unwrap_or(-1);
    if masks.dim() != 3 {
        return Err(RegionError::MaskShape {
            height,
            width,
            found: masks.size(),
        });
    }
    if count as usize != regions {
        return Err(RegionError::IndexCount {
            masks: count.max(0) as usize,
            indices: regions,
        });
    }
    check_image_index(image_index, batch)?;
    let kind = features.kind();
    let device = features.device();
    let grid = reference_grid_masks(&masks.f_to_device(device)?, height, width)?.f_to_kind(kind)?;
    // [N, 1]
    let denorm = grid
        .f_sum_dim_intlist(&[1i64, 2][..], false, kind)?
        .f_add_scalar(REFERENCE_NORM_EPS)?
        .f_unsqueeze(1)?;
    // [N, HW], in the features' dtype.
    let weights = grid.f_flatten(1, 2)?.f_div(&denorm)?;
    // [B, HW, C]
    let flat = features
        .f_view([batch, channels, height * width])?
        .f_transpose(1, 2)?;
    let mut out = Tensor::f_zeros([regions as i64, channels], (kind, device))?;
    let mut images: Vec<i64> = image_index.to_vec();
    images.sort_unstable();
    images.dedup();
    for image in images {
        let rows: Vec<i64> = (0..regions as i64)
            .filter(|&r| image_index[r as usize] == image)
            .collect();
        let rows = Tensor::from_slice(&rows).to_device(device);
        let pooled = weights
            .f_index_select(0, &rows)?
            .f_matmul(&flat.f_get(image)?)?;
        out = out.f_index_copy(0, &rows, &pooled)?;
    }
    Ok(out)
}

/// Errors unless every region's image index names an image of the batch.
fn check_image_index(image_index: &[i64], batch: i64) -> Result<(), RegionError> {
    match image_index
        .iter()
        .enumerate()
        .find(|(_, image)| !(0..batch).contains(*image))
    {
        Some((region, &image)) => Err(RegionError::ImageIndex {
            region,
            image,
            batch,
        }),
        None => Ok(()),
    }
}
