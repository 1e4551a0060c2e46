//! Regions of any shape (paper Sec. 3.1, Mask Pooling): boxes, polygons and
//! binary masks as one `RegionSpec`, their rasterisation onto a feature grid,
//! and mask pooling, which averages the refined features inside each region to
//! give one feature vector per region (with a CUDA kernel for the batched case).
//! It depends on no model crate, so any detector or segmenter can reuse it.
