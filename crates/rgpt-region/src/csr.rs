//! Regions as a CSR of the feature cells they cover: what the CUDA
//! mask-pool kernel reads (`cuda/mask_pool.cu`). Row `r` lists region
//! `r`'s covered cells (ascending, as indices into its image's `H x W`
//! grid) with their weights normalised to sum to one, exactly as
//! [`crate::pool::mask_pool`] normalises a mask; a region that is a full
//! rectangle of equal weights is also given as a box, for the kernel's
//! path that reads no cell list.
use tch::{Device, Kind, Tensor};

use crate::RegionError;

#[derive(Debug, Clone, PartialEq)]
pub struct RegionCsr {
    /// `[regions + 1]`: row `r` is `row_ptr[r] .. row_ptr[r + 1]`.
    pub row_ptr: Vec<i64>,
    /// Covered cells, `y * width + x`.
    pub cells: Vec<i32>,
    /// Each row sums to one.
    pub weights: Vec<f32>,
    /// The image each region belongs to.
    pub image: Vec<i32>,
    pub height: i64,
    pub width: i64,
}

impl RegionCsr {
    /// The CSR of `masks` [N, H, W] (non-negative weights), region `i` on
    /// image `image_index[i]`. A region with no positive weight is an error.
    pub fn from_masks(masks: &Tensor, image_index: &[i64]) -> Result<RegionCsr, RegionError> {
        let (regions, height, width) = masks
            .size3()
            .map_err(|_| RegionError::FeatureShape(masks.size()))?;
        if regions as usize != image_index.len() {
            return Err(RegionError::IndexCount {
                masks: regions as usize,
                indices: image_index.len(),
            });
        }
        let cells_per_region = (height * width) as usize;
        let flat: Vec<f32> = Vec::try_from(
            &masks
                .f_to_kind(Kind::Float)?
                .f_to_device(Device::Cpu)?
                .f_contiguous()?
                .f_view([-1])?,
        )?;
        let mut csr = RegionCsr {
            row_ptr: vec![0],
            cells: Vec::new(),
            weights: Vec::new(),
            image: image_index.iter().map(|&i| i as i32).collect(),
            height,
            width,
        };
        for (region, mask) in flat.chunks(cells_per_region.max(1)).enumerate() {
            let start = csr.cells.len();
            let mut total = 0.0f64;
            for (cell, &w) in mask.iter().enumerate() {
                if w > 0.0 {
                    csr.cells.push(cell as i32);
                    csr.weights.push(w);
                    total += f64::from(w);
                }
            }
            if !(total > 0.0 && total.is_finite()) {
                return Err(RegionError::EmptyRegion { region });
            }
            for w in &mut csr.weights[start..] {
                *w = (f64::from(*w) / total) as f32;
            }
            csr.row_ptr.push(csr.cells.len() as i64);
        }
        Ok(csr)
    }

    pub fn regions(&self) -> usize {
        self.row_ptr.len() - 1
    }

    /// Region `r`'s cells and weights.
    pub fn row(&self, r: usize) -> (&[i32], &[f32]) {
        let (begin, end) = (self.row_ptr[r] as usize, self.row_ptr[r + 1] as usize);
        (&self.cells[begin..end], &self.weights[begin..end])
    }

    /// Region `r` as a box `[y0, y1, x0, x1]` (ends exclusive) when it
    /// covers exactly a rectangle of cells with equal weights.
    pub fn as_box(&self, r: usize) -> Option<[i32; 4]> {
        let (cells, weights) = self.row(r);
        let width = self.width as i32;
        let (mut y0, mut y1, mut x0, mut x1) = (i32::MAX, i32::MIN, i32::MAX, i32::MIN);
        for &cell in cells {
            let (y, x) = (cell / width, cell % width);
            (y0, y1, x0, x1) = (y0.min(y), y1.max(y + 1), x0.min(x), x1.max(x + 1));
        }
        let full = cells.len() as i64 == i64::from(y1 - y0) * i64::from(x1 - x0);
        let even = weights
            .iter()
            .all(|&w| (w - weights[0]).abs() <= 1e-6 * weights[0]);
        (full && even && !cells.is_empty()).then_some([y0, y1, x0, x1])
    }

    /// Every region as a box, when each is one ([`RegionCsr::as_box`]).
    pub fn boxes(&self) -> Option<Vec<[i32; 4]>> {
        (0..self.regions()).map(|r| self.as_box(r)).collect()
    }

    /// What the kernel computes, on the CPU in f64: `[regions][channels]`
    /// pooled from `features` [B, C, H, W]. For tests and checks.
    pub fn pool_on_cpu(&self, features: &Tensor) -> Result<Vec<Vec<f64>>, RegionError> {
        let (batch, channels, height, width) = features
            .size4()
            .map_err(|_| RegionError::FeatureShape(features.size()))?;
        if (height, width) != (self.height, self.width) {
            return Err(RegionError::MaskShape {
                height,
                width,
                found: vec![self.regions() as i64, self.height, self.width],
            });
        }
        let cells = (height * width) as usize;
        let values: Vec<f64> = Vec::try_from(
            &features
                .f_to_kind(Kind::Double)?
                .f_to_device(Device::Cpu)?
                .f_contiguous()?
                .f_view([-1])?,
        )?;
        (0..self.regions())
            .map(|r| {
                let image = i64::from(self.image[r]);
                if !(0..batch).contains(&image) {
                    return Err(RegionError::ImageIndex {
                        region: r,
                        image,
                        batch,
                    });
                }
                let (row_cells, row_weights) = self.row(r);
                Ok((0..channels as usize)
                    .map(|c| {
                        let base = (image as usize * channels as usize + c) * cells;
                        row_cells
                            .iter()
                            .zip(row_weights)
                            .map(|(&cell, &w)| f64::from(w) * values[base + cell as usize])
                            .sum()
                    })
                    .collect())
            })
            .collect()
    }
}
