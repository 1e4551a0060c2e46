//! Regions of any shape (paper Sec. 3.1, Mask Pooling): boxes, polygons and
//! binary masks as one `RegionSpec`, their rasterisation onto a feature grid,
//! and mask pooling, which averages the refined features inside each region to
//! give one feature vector per region (with a CUDA kernel for the batched case).
//! It depends on no model crate, so any detector or segmenter can reuse it.

pub mod error;
pub mod iou;
pub mod pool;
pub mod projection;
pub mod raster;
pub mod rle;
pub mod spec;

pub use error::RegionError;
pub use pool::{mask_pool, PoolStrategy};
pub use projection::{project_bitmap, project_mask, GridGeometry};
pub use raster::{rasterize, Bitmap};
pub use rle::Rle;
pub use spec::RegionSpec;
