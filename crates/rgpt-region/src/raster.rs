//! Row-major binary bitmaps and their conversion to and from COCO RLE
//! (pycocotools 2.0.11 `rleEncode` / `rleDecode`, which work column-major;
//! the transpose here is the only difference), plus rasterising any
//! [`RegionSpec`] to an image-sized bitmap and reading mask PNGs.

use std::path::Path;

use crate::error::RegionError;
use crate::rle::Rle;
use crate::spec::RegionSpec;

/// A binary mask, row-major: pixel (x, y) is `data[y * width + x]`, 0 or 1.
/// Constructors normalise any non-zero value to 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bitmap {
    pub height: u32,
    pub width: u32,
    pub data: Vec<u8>,
}

impl Bitmap {
    /// An all-zero bitmap.
    pub fn zeros(height: u32, width: u32) -> Bitmap {
        Bitmap {
            height,
            width,
            data: vec![0; height as usize * width as usize],
        }
    }

    /// Wraps row-major data, checking its length and mapping non-zero to 1.
    pub fn new(height: u32, width: u32, data: Vec<u8>) -> Result<Bitmap, RegionError> {
        let expected = u64::from(height) * u64::from(width);
        if data.len() as u64 != expected {
            return Err(RegionError::BitmapLength {
                height,
                width,
                got: data.len(),
                expected,
            });
        }
        let data = data.into_iter().map(|v| u8::from(v != 0)).collect();
        Ok(Bitmap {
            height,
            width,
            data,
        })
    }

    /// Pixel (x, y), or `None` outside the bitmap.
    pub fn get(&self, x: u32, y: u32) -> Option<bool> {
        if x >= self.width || y >= self.height {
            return None;
        }
        self.data
            .get(y as usize * self.width as usize + x as usize)
            .map(|&v| v != 0)
    }

    /// Number of set pixels.
    pub fn area(&self) -> u64 {
        self.data.iter().filter(|&&v| v != 0).count() as u64
    }

    /// `rleEncode` of this bitmap (non-zero = foreground).
    pub fn to_rle(&self) -> Result<Rle, RegionError> {
        let (h, w) = (self.height as usize, self.width as usize);
        if self.data.len() != h * w {
            return Err(RegionError::BitmapLength {
                height: self.height,
                width: self.width,
                got: self.data.len(),
                expected: u64::from(self.height) * u64::from(self.width),
            });
        }
        let mut col_major = vec![0u8; h * w];
        for (y, row) in self.data.chunks_exact(w.max(1)).enumerate() {
            for (x, &v) in row.iter().enumerate() {
                col_major[x * h + y] = v;
            }
        }
        Rle::encode_col_major(self.height, self.width, &col_major)
    }

    /// `rleDecode` of an RLE, checked to cover its size exactly.
    pub fn from_rle(rle: &Rle) -> Result<Bitmap, RegionError> {
        let col_major = rle.decode_col_major()?;
        let (h, w) = (rle.height as usize, rle.width as usize);
        let mut data = vec![0u8; h * w];
        for (x, col) in col_major.chunks_exact(h.max(1)).enumerate() {
            for (y, &v) in col.iter().enumerate() {
                data[y * w + x] = v;
            }
        }
        Ok(Bitmap {
            height: rle.height,
            width: rle.width,
            data,
        })
    }

    /// Reads a mask image (PNG or JPEG); a pixel is inside when any colour
    /// channel is non-zero (alpha is ignored, so a transparent mask still
    /// counts by its colour).
    pub fn from_image_file(path: &Path) -> Result<Bitmap, RegionError> {
        let img = image::open(path).map_err(|e| RegionError::MaskImage {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Ok(Self::from_image(img))
    }

    /// [`Bitmap::from_image_file`] of an encoded image in memory (a mask
    /// PNG sent over the wire); `what` names it in errors.
    pub fn from_image_bytes(bytes: &[u8], what: &str) -> Result<Bitmap, RegionError> {
        let img = image::load_from_memory(bytes).map_err(|e| RegionError::MaskImage {
            path: what.to_string(),
            reason: e.to_string(),
        })?;
        Ok(Self::from_image(img))
    }

    fn from_image(img: image::DynamicImage) -> Bitmap {
        // f32 keeps every non-zero 8/16-bit value non-zero.
        let rgb = img.into_rgb32f();
        let (width, height) = rgb.dimensions();
        let data = rgb
            .pixels()
            .map(|p| u8::from(p.0.iter().any(|&c| c != 0.0)))
            .collect();
        Bitmap {
            height,
            width,
            data,
        }
    }
}

/// Rasterises a region onto a `height`×`width` image, with the same checks
/// as [`RegionSpec::to_rle`].
pub fn rasterize(spec: &RegionSpec, height: u32, width: u32) -> Result<Bitmap, RegionError> {
    Bitmap::from_rle(&spec.to_rle(height, width)?)
}
