#![doc = include_str!("../README.md")]

pub mod coco_json;
#[cfg(feature = "tch")]
pub mod csr;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod error;
pub mod iou;
#[cfg(feature = "tch")]
pub mod pool;
#[cfg(feature = "tch")]
pub mod projection;
pub mod raster;
pub mod rle;
pub mod spec;

pub use error::RegionError;
#[cfg(feature = "tch")]
pub use pool::{mask_pool, mask_pool_reference, MaskPoolKind, PoolStrategy};
#[cfg(feature = "tch")]
pub use projection::{project_bitmap, project_mask, GridGeometry};
pub use raster::{rasterize, Bitmap};
pub use rle::Rle;
pub use spec::RegionSpec;
