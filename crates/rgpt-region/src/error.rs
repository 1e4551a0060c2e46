//! Errors for region geometry. Every message names the region (its spec text,
//! or the index the caller passed in) and says what is wrong with it, so a
//! user can fix the offending input without reading the code.
//!
//! pycocotools (`common/maskApi.c`, `_mask.pyx`, 2.0.11) mostly does not
//! check its input: it reads out of bounds or returns garbage. Where this
//! crate reproduces its arithmetic it turns those inputs into these errors.

/// Anything that can be wrong with a region or with the image it is laid on.
#[derive(Debug, thiserror::Error)]
pub enum RegionError {
    /// The spec text does not follow the grammar `kind:args`.
    #[error("region spec {spec:?}: {reason} (expected box:x1,y1,x2,y2 | poly:x1,y1,x2,y2,x3,y3[;...] | mask:PATH.png | rle:JSON | point:x,y[,r])")]
    Spec { spec: String, reason: String },

    /// The region rasterises to no pixel although it touches the image.
    #[error("region {region}: zero area on the {height}x{width} image (it covers no pixel centre); enlarge it")]
    ZeroArea {
        region: String,
        height: u32,
        width: u32,
    },

    /// A box with no width or no height: empty wherever it is.
    #[error("region {region}: the box is empty (no width or no height); give x2 > x1 and y2 > y1")]
    EmptyBox { region: String },

    /// The region lies entirely outside the image.
    #[error("region {region}: lies entirely outside the {height}x{width} image (x in [0,{width}], y in [0,{height}])")]
    OutsideImage {
        region: String,
        height: u32,
        width: u32,
    },

    /// A polygon part has fewer than 3 points or an odd number of coordinates.
    #[error("region {region}: polygon part {part} has {coords} coordinates; a part needs an even count of at least 6 (3 points)")]
    BadPolygon {
        region: String,
        part: usize,
        coords: usize,
    },

    /// A coordinate is NaN, infinite, or too large to rasterise.
    #[error("region {region}: coordinate {value} is not finite or exceeds the supported range of +-{limit}")]
    BadCoordinate {
        region: String,
        value: f64,
        limit: f64,
    },

    /// A box whose second corner is not below-right of its first.
    #[error("region {region}: box corners are inverted (x2 < x1 or y2 < y1); give box:x1,y1,x2,y2 with x1<=x2, y1<=y2")]
    InvertedBox { region: String },

    /// A point prompt with a non-positive or non-finite radius.
    #[error("region {region}: point radius {radius} must be a positive finite number of pixels")]
    BadRadius { region: String, radius: f64 },

    /// An RLE or mask whose size differs from the image it is laid on.
    #[error(
        "region {region}: size {got_height}x{got_width} (height x width) differs from the \
         {height}x{width} image it is laid on; give one of the image's size"
    )]
    SizeMismatch {
        region: String,
        got_height: u32,
        got_width: u32,
        height: u32,
        width: u32,
    },

    /// Run lengths that do not add up to height*width.
    #[error("RLE {region}: run lengths sum to {sum} but size {height}x{width} needs {expected}")]
    RleLength {
        region: String,
        sum: u64,
        height: u32,
        width: u32,
        expected: u64,
    },

    /// A compressed COCO counts string that cannot be decoded.
    #[error("RLE counts string {counts:?}: {reason}")]
    RleString { counts: String, reason: String },

    /// COCO JSON (`{"size":[h,w],"counts":...}`, polygons or boxes) that does
    /// not have the expected shape.
    #[error("COCO segmentation JSON {json}: {reason}")]
    CocoJson { json: String, reason: String },

    /// Operations on several RLEs need them to share one size.
    #[error(
        "RLE {index}: size {got_height}x{got_width} differs from {height}x{width} of the first RLE"
    )]
    RleSizesDiffer {
        index: usize,
        got_height: u32,
        got_width: u32,
        height: u32,
        width: u32,
    },

    /// Merging needs at least one RLE.
    #[error("cannot merge an empty list of RLEs; pass at least one")]
    EmptyMerge,

    /// `iscrowd` must have one flag per ground-truth region.
    #[error("iou: iscrowd has {got} flags but there are {expected} ground-truth regions")]
    CrowdLength { got: usize, expected: usize },

    /// A bitmap whose data length is not height*width.
    #[error("bitmap {height}x{width}: data has {got} bytes, expected {expected}")]
    BitmapLength {
        height: u32,
        width: u32,
        got: usize,
        expected: u64,
    },

    /// Image sizes this crate cannot index (pycocotools computes pixel
    /// offsets in a C `int`).
    #[error(
        "image size {height}x{width}: both sides must be >= 1 and height*width must be < 2^31"
    )]
    ImageSize { height: u32, width: u32 },

    /// A mask image that cannot be read or decoded.
    #[error("mask image {path}: {reason}")]
    MaskImage { path: String, reason: String },

    // Mask pooling and projection onto a feature grid.
    #[error("features must be [batch, channels, height, width], got {0:?}")]
    FeatureShape(Vec<i64>),
    #[error("region masks must be [regions, {height}, {width}] to match the feature grid, got {found:?}")]
    MaskShape {
        height: i64,
        width: i64,
        found: Vec<i64>,
    },
    #[error(
        "{mask_height}x{mask_width} region masks resized as the reference pooling resizes them \
         give {got_height}x{got_width} cells, not the feature grid's {height}x{width} (masks and \
         grid differ in aspect ratio); use `mask_pool: area` for such a model"
    )]
    ReferenceGrid {
        mask_height: i64,
        mask_width: i64,
        got_height: i64,
        got_width: i64,
        height: i64,
        width: i64,
    },
    #[error("{masks} region masks but {indices} image indices: give one image index per region")]
    IndexCount { masks: usize, indices: usize },
    #[error("region {region} refers to image {image}, but the batch has {batch} images")]
    ImageIndex {
        region: usize,
        image: i64,
        batch: i64,
    },
    #[error(
        "region {region} covers no feature cell (it is empty or lies outside the image after \
         preprocessing): check its coordinates"
    )]
    EmptyRegion { region: usize },
    #[error("the CUDA mask-pool kernel: {0}")]
    Kernel(String),
    /// Only with the feature `tch` (the geometry needs no libtorch).
    #[cfg(feature = "tch")]
    #[error("torch error while pooling: {0}")]
    Torch(#[from] tch::TchError),
}
