//! Image preprocessing as LLaVA-1.5 feeds the CLIP tower, reproduced exactly:
//!
//! - `expand2square` from LLaVA's `llava/mm_utils.py` (`image_aspect_ratio:
//!   pad`): paste the image centred on a square canvas of the mean colour
//!   `tuple(int(x * 255) for x in image_mean)`;
//! - transformers 5.23 `CLIPImageProcessorPil` (`image_processing_pil_clip.py`
//!   on `PilBackend`, `image_transforms.py`): shortest-edge resize with PIL
//!   bicubic, centre crop (zero-padded when the crop is larger), rescale in
//!   f64 then cast to f32, normalise in f32;
//! - Pillow 13.0 `Image.resize(..., BICUBIC)` on 8-bit RGB, i.e.
//!   `libImaging/Resample.c` (`precompute_coeffs`, `normalize_coeffs_8bpc`,
//!   `ImagingResampleHorizontal_8bpc` / `Vertical_8bpc`): separable
//!   convolution with the a = -0.5 cubic widened by the scale when
//!   downscaling (antialiasing), coefficients in 22-bit fixed point and a
//!   uint8 round-and-clip between the two passes, in Pillow 13's pass order
//!   (see [`resize_bicubic`]). The output is bit-identical to Pillow's; the
//!   `image` crate's CatmullRom filter is not.
//!
//! Beyond the references, [`Preprocessed`] carries the [`ImageTransform`]
//! from original pixel coordinates to processed ones, so region boxes and
//! masks given on the original image land on the right cells.
//!
//! Deliberate differences: only `resample: 3` (bicubic) is implemented,
//! which is what every CLIP / SigLIP config RegionGPT uses says; a `size`
//! with `longest_edge` or `max_height` is refused rather than approximated.
//! [`load_image`] decodes with the `image` crate, which for PNG gives PIL's
//! pixels but for JPEG may differ from libjpeg-turbo by a unit here and
//! there; like LLaVA's `Image.open(..).convert("RGB")` it ignores EXIF
//! orientation and drops alpha without compositing.
use std::path::{Path, PathBuf};

pub use image::RgbImage;
use serde::{Deserialize, Serialize};
use tch::Tensor;

/// transformers' `OPENAI_CLIP_MEAN` / `OPENAI_CLIP_STD`, the
/// `CLIPImageProcessor` defaults.
pub const OPENAI_CLIP_MEAN: [f64; 3] = [0.48145466, 0.4578275, 0.40821073];
pub const OPENAI_CLIP_STD: [f64; 3] = [0.26862954, 0.26130258, 0.27577711];

/// PIL's `Image.Resampling.BICUBIC`.
pub const RESAMPLE_BICUBIC: u32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum PreprocessError {
    #[error("cannot read image {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot decode image {}: {}", path.display(), one_line(source))]
    Decode {
        path: PathBuf,
        source: image::ImageError,
    },
    #[error("cannot read preprocessor config {}: {source}", path.display())]
    ConfigRead {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot parse preprocessor config {}: {source}", path.display())]
    ConfigParse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("unsupported preprocessor config: {0}")]
    Unsupported(String),
    #[error("cannot preprocess a {width}x{height} image into {target_width}x{target_height}")]
    EmptyImage {
        width: u32,
        height: u32,
        target_width: u32,
        target_height: u32,
    },
    #[error(transparent)]
    Tensor(#[from] tch::TchError),
}

fn one_line(e: &impl std::fmt::Display) -> String {
    e.to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Whether the image is squared with the mean colour first (LLaVA-1.5's
/// `image_aspect_ratio`). Not part of HF's file: LLaVA keeps it in the model
/// config, so callers set it from there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageAspectRatio {
    /// `expand2square` with the mean colour, then the processor (LLaVA-1.5).
    Pad,
    /// The processor alone: shortest-edge resize and centre crop (HF).
    #[default]
    Original,
}

/// `size` as HF writes it: `{"shortest_edge": N}`, `{"height": H, "width":
/// W}`, or the bare integer of older files, which `CLIPImageProcessor` reads
/// as a shortest edge (`default_to_square = False`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ResizeSize {
    ShortestEdge(ShortestEdge),
    Exact(HeightWidth),
    Int(u32),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShortestEdge {
    pub shortest_edge: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeightWidth {
    pub height: u32,
    pub width: u32,
}

/// `crop_size`: `{"height", "width"}` or a bare integer (a square).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum CropSize {
    Exact(HeightWidth),
    Int(u32),
}

impl CropSize {
    /// (width, height)
    pub fn dims(&self) -> (u32, u32) {
        match *self {
            CropSize::Exact(HeightWidth { height, width }) => (width, height),
            CropSize::Int(n) => (n, n),
        }
    }
}

fn yes() -> bool {
    true
}
fn default_size() -> ResizeSize {
    ResizeSize::ShortestEdge(ShortestEdge { shortest_edge: 224 })
}
fn default_resample() -> u32 {
    RESAMPLE_BICUBIC
}
fn default_crop() -> CropSize {
    CropSize::Exact(HeightWidth {
        height: 224,
        width: 224,
    })
}
fn default_rescale() -> f64 {
    1.0 / 255.0
}
fn default_mean() -> Vec<f64> {
    OPENAI_CLIP_MEAN.to_vec()
}
fn default_std() -> Vec<f64> {
    OPENAI_CLIP_STD.to_vec()
}

/// `preprocessor_config.json`, field for field. Plain serde fills what a
/// file leaves out with `CLIPImageProcessor`'s defaults;
/// [`from_json_str`](Self::from_json_str) / [`from_file`](Self::from_file)
/// use the defaults of the class the file names. Unknown fields
/// (`image_processor_type`, ...) are ignored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreprocessorConfig {
    #[serde(default = "yes")]
    pub do_resize: bool,
    #[serde(default = "default_size")]
    pub size: ResizeSize,
    #[serde(default = "default_resample")]
    pub resample: u32,
    #[serde(default = "yes")]
    pub do_center_crop: bool,
    #[serde(default = "default_crop")]
    pub crop_size: CropSize,
    #[serde(default = "yes")]
    pub do_rescale: bool,
    #[serde(default = "default_rescale")]
    pub rescale_factor: f64,
    #[serde(default = "yes")]
    pub do_normalize: bool,
    #[serde(default = "default_mean")]
    pub image_mean: Vec<f64>,
    #[serde(default = "default_std")]
    pub image_std: Vec<f64>,
    /// A no-op here: [`RgbImage`] is RGB already ([`load_image`] converts).
    #[serde(default = "yes")]
    pub do_convert_rgb: bool,
    #[serde(default)]
    pub image_aspect_ratio: ImageAspectRatio,
}

impl Default for PreprocessorConfig {
    fn default() -> Self {
        PreprocessorConfig {
            do_resize: true,
            size: default_size(),
            resample: default_resample(),
            do_center_crop: true,
            crop_size: default_crop(),
            do_rescale: true,
            rescale_factor: default_rescale(),
            do_normalize: true,
            image_mean: default_mean(),
            image_std: default_std(),
            do_convert_rgb: true,
            image_aspect_ratio: ImageAspectRatio::Original,
        }
    }
}

/// Where the original image went. Coordinates are continuous with pixel
/// edges on the integers (pixel `(i, j)` covers `[i, i+1) x [j, j+1)`, as
/// COCO boxes are), so the original's corners `(0, 0)` and `(W, H)` map to
/// the corners of its footprint in the processed image.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ImageTransform {
    /// (width, height) of the input.
    pub original_size: (u32, u32),
    /// (left, top) offset of the original inside the `expand2square` canvas.
    pub pad: (u32, u32),
    /// (width, height) after padding (the original's when not padded).
    pub padded_size: (u32, u32),
    /// (width, height) after resizing.
    pub resized_size: (u32, u32),
    /// (left, top) of the crop window in the resized image; negative where
    /// the crop is larger than the image and HF pads with zeros.
    pub crop_offset: (i64, i64),
    /// (width, height) of the processed image.
    pub output_size: (u32, u32),
}

impl ImageTransform {
    /// (x scale, y scale) of the resize: processed pixels per padded pixel.
    pub fn scale(&self) -> (f64, f64) {
        (
            f64::from(self.resized_size.0) / f64::from(self.padded_size.0),
            f64::from(self.resized_size.1) / f64::from(self.padded_size.1),
        )
    }

    /// Original pixel coordinates to processed ones. Not clipped: points the
    /// crop cut away land outside `[0, W] x [0, H]`.
    pub fn map_point(&self, x: f64, y: f64) -> (f64, f64) {
        let (sx, sy) = self.scale();
        (
            (x + f64::from(self.pad.0)) * sx - self.crop_offset.0 as f64,
            (y + f64::from(self.pad.1)) * sy - self.crop_offset.1 as f64,
        )
    }

    /// Processed coordinates back to original ones (the inverse of
    /// [`map_point`](Self::map_point)).
    pub fn unmap_point(&self, x: f64, y: f64) -> (f64, f64) {
        let (sx, sy) = self.scale();
        (
            (x + self.crop_offset.0 as f64) / sx - f64::from(self.pad.0),
            (y + self.crop_offset.1 as f64) / sy - f64::from(self.pad.1),
        )
    }

    /// An `[x0, y0, x1, y1]` box in original pixels to processed pixels,
    /// clipped to the processed image, because a region the centre crop
    /// partly cut away should still cover the part that is left. A box
    /// entirely outside comes back empty (`x0 == x1` or `y0 == y1`).
    pub fn map_box(&self, b: [f64; 4]) -> [f64; 4] {
        let (x0, y0) = self.map_point(b[0], b[1]);
        let (x1, y1) = self.map_point(b[2], b[3]);
        let (w, h) = (f64::from(self.output_size.0), f64::from(self.output_size.1));
        [
            x0.clamp(0.0, w),
            y0.clamp(0.0, h),
            x1.clamp(0.0, w),
            y1.clamp(0.0, h),
        ]
    }
}

/// The processor's output for one image.
#[derive(Debug)]
pub struct Preprocessed {
    /// `[3, H, W]` f32 on the CPU, as HF's `pixel_values[0]`.
    pub pixel_values: Tensor,
    pub transform: ImageTransform,
}

impl PreprocessorConfig {
    /// `openai/clip-vit-large-patch14-336` as LLaVA-1.5 (and RegionGPT) use
    /// it: 336 shortest edge and crop, CLIP mean/std, `pad`.
    pub fn clip_vit_large_patch14_336() -> Self {
        PreprocessorConfig {
            size: ResizeSize::ShortestEdge(ShortestEdge { shortest_edge: 336 }),
            crop_size: CropSize::Exact(HeightWidth {
                height: 336,
                width: 336,
            }),
            image_aspect_ratio: ImageAspectRatio::Pad,
            ..Default::default()
        }
    }

    /// transformers' `SiglipImageProcessor` defaults: a plain resize to
    /// 224x224 (no centre crop) and mean = std = 0.5.
    pub fn siglip() -> Self {
        PreprocessorConfig {
            size: ResizeSize::Exact(HeightWidth {
                height: 224,
                width: 224,
            }),
            do_center_crop: false,
            image_mean: vec![0.5; 3],
            image_std: vec![0.5; 3],
            ..Default::default()
        }
    }

    /// Parses a `preprocessor_config.json`, filling what it leaves out from
    /// the defaults of the processor class it names: a SigLIP file omits
    /// `do_center_crop` because SigLIP never crops, so CLIP's defaults would
    /// wrongly crop it. Anything else gets `CLIPImageProcessor`'s.
    pub fn from_json_str(text: &str) -> Result<Self, serde_json::Error> {
        let file: serde_json::Map<String, serde_json::Value> = serde_json::from_str(text)?;
        let class = ["image_processor_type", "feature_extractor_type"]
            .iter()
            .find_map(|k| file.get(*k).and_then(|v| v.as_str()))
            .unwrap_or("");
        let base = if class.starts_with("Siglip") {
            Self::siglip()
        } else {
            Self::default()
        };
        let mut merged = serde_json::to_value(base)?;
        if let serde_json::Value::Object(fields) = &mut merged {
            fields.extend(file);
        }
        serde_json::from_value(merged)
    }

    /// Reads `preprocessor_config.json` (see [`from_json_str`](Self::from_json_str)).
    /// `image_aspect_ratio` is not in HF's file; set it afterwards from the
    /// model config.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, PreprocessError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| PreprocessError::ConfigRead {
            path: path.to_path_buf(),
            source,
        })?;
        let cfg = Self::from_json_str(&text).map_err(|source| PreprocessError::ConfigParse {
            path: path.to_path_buf(),
            source,
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Refuses what [`preprocess`](Self::preprocess) would get wrong.
    pub fn validate(&self) -> Result<(), PreprocessError> {
        if self.do_resize && self.resample != RESAMPLE_BICUBIC {
            return Err(PreprocessError::Unsupported(format!(
                "resample {} (only 3 = bicubic is implemented)",
                self.resample
            )));
        }
        for (name, v) in [
            ("image_mean", &self.image_mean),
            ("image_std", &self.image_std),
        ] {
            if v.len() != 3 {
                return Err(PreprocessError::Unsupported(format!(
                    "{name} has {} values, expected 3 (one per RGB channel)",
                    v.len()
                )));
            }
        }
        if self.do_normalize && self.image_std.contains(&0.0) {
            return Err(PreprocessError::Unsupported("image_std contains 0".into()));
        }
        Ok(())
    }

    /// The `expand2square` background: LLaVA's `int(x * 255)` per channel.
    pub fn pad_color(&self) -> [u8; 3] {
        let mut c = [0u8; 3];
        for (dst, m) in c.iter_mut().zip(&self.image_mean) {
            // Python's int() truncates toward zero; `as u8` also saturates
            // a mean outside [0, 1] instead of wrapping.
            *dst = (m * 255.0) as u8;
        }
        c
    }

    /// (width, height) the resize produces for a `width` x `height` input,
    /// as transformers' `get_resize_output_image_size(default_to_square =
    /// False)`: the short side becomes `shortest_edge`, the long one
    /// `int(shortest_edge * long / short)`.
    pub fn resize_output_size(&self, width: u32, height: u32) -> (u32, u32) {
        let shortest = |n: u32| {
            let (short, long) = if width <= height {
                (width, height)
            } else {
                (height, width)
            };
            // Python's int * int / int: an exact product, one correctly
            // rounded division, then truncation. f64 is exact here too.
            let new_long = (u64::from(n) * u64::from(long)) as f64 / f64::from(short.max(1));
            let new_long = new_long as u32;
            if width <= height {
                (n, new_long)
            } else {
                (new_long, n)
            }
        };
        match self.size {
            ResizeSize::ShortestEdge(ShortestEdge { shortest_edge }) => shortest(shortest_edge),
            ResizeSize::Int(n) => shortest(n),
            ResizeSize::Exact(HeightWidth { height, width }) => (width, height),
        }
    }

    /// LLaVA's `expand2square` (when `image_aspect_ratio` is `pad`), then
    /// `CLIPImageProcessor`: resize, centre crop, rescale, normalise.
    pub fn preprocess(&self, image: &RgbImage) -> Result<Preprocessed, PreprocessError> {
        let _span = tracing::debug_span!(
            "preprocess_image",
            width = image.width(),
            height = image.height()
        )
        .entered();
        self.validate()?;
        let (w0, h0) = image.dimensions();

        let (padded, pad) = match self.image_aspect_ratio {
            ImageAspectRatio::Pad if w0 != h0 => {
                let (img, offset) = expand2square(image, self.pad_color());
                (std::borrow::Cow::Owned(img), offset)
            }
            _ => (std::borrow::Cow::Borrowed(image), (0, 0)),
        };
        let padded_size = padded.dimensions();

        let resized = if self.do_resize {
            let (tw, th) = self.resize_output_size(padded_size.0, padded_size.1);
            std::borrow::Cow::Owned(resize_bicubic(&padded, tw, th)?)
        } else {
            padded
        };
        let resized_size = resized.dimensions();

        // HF's center_crop: window at floor((size - crop) / 2), zeros where
        // it reaches past the image (both of its branches reduce to this).
        let (out_w, out_h, crop_offset) = if self.do_center_crop {
            let (cw, ch) = self.crop_size.dims();
            let left = (i64::from(resized_size.0) - i64::from(cw)).div_euclid(2);
            let top = (i64::from(resized_size.1) - i64::from(ch)).div_euclid(2);
            (cw, ch, (left, top))
        } else {
            (resized_size.0, resized_size.1, (0, 0))
        };
        if out_w == 0 || out_h == 0 || w0 == 0 || h0 == 0 {
            return Err(PreprocessError::EmptyImage {
                width: w0,
                height: h0,
                target_width: out_w,
                target_height: out_h,
            });
        }

        let pixel_values = self.to_pixel_values(&resized, out_w, out_h, crop_offset)?;
        Ok(Preprocessed {
            pixel_values,
            transform: ImageTransform {
                original_size: (w0, h0),
                pad,
                padded_size,
                resized_size,
                crop_offset,
                output_size: (out_w, out_h),
            },
        })
    }

    /// Crop (with zero fill), rescale and normalise into `[3, H, W]`.
    fn to_pixel_values(
        &self,
        img: &RgbImage,
        out_w: u32,
        out_h: u32,
        (left, top): (i64, i64),
    ) -> Result<Tensor, PreprocessError> {
        let (iw, ih) = (i64::from(img.width()), i64::from(img.height()));
        let raw = img.as_raw();
        let plane = out_w as usize * out_h as usize;
        let mut data = vec![0f32; 3 * plane];
        let mean: Vec<f32> = self.image_mean.iter().map(|&m| m as f32).collect();
        let std: Vec<f32> = self.image_std.iter().map(|&s| s as f32).collect();
        for c in 0..3 {
            for y in 0..out_h as usize {
                let sy = y as i64 + top;
                for x in 0..out_w as usize {
                    let sx = x as i64 + left;
                    let v = if (0..ih).contains(&sy) && (0..iw).contains(&sx) {
                        raw[((sy * iw + sx) * 3) as usize + c]
                    } else {
                        0
                    };
                    // HF: `image.astype(float64) * scale` then `.astype(float32)`,
                    // then `(image - mean) / std` with f32 mean and std.
                    let mut p = if self.do_rescale {
                        (f64::from(v) * self.rescale_factor) as f32
                    } else {
                        f32::from(v)
                    };
                    if self.do_normalize {
                        p = (p - mean[c]) / std[c];
                    }
                    data[c * plane + y * out_w as usize + x] = p;
                }
            }
        }
        Ok(Tensor::f_from_slice(&data)?.f_view([3, i64::from(out_h), i64::from(out_w)])?)
    }
}

/// LLaVA-1.5's `expand2square`: the image pasted on a `background` square
/// at `((side - w) // 2, (side - h) // 2)`. Returns the square and that
/// (left, top) offset; a square input comes back unchanged.
pub fn expand2square(image: &RgbImage, background: [u8; 3]) -> (RgbImage, (u32, u32)) {
    let (w, h) = image.dimensions();
    let side = w.max(h);
    let offset = ((side - w) / 2, (side - h) / 2);
    if w == h {
        return (image.clone(), offset);
    }
    let mut out = RgbImage::from_pixel(side, side, image::Rgb(background));
    // In bounds by construction: offset + size <= side on both axes.
    image::imageops::replace(&mut out, image, i64::from(offset.0), i64::from(offset.1));
    (out, offset)
}

/// Reads and decodes an image file (PNG or JPEG), converted to RGB.
pub fn load_image(path: impl AsRef<Path>) -> Result<RgbImage, PreprocessError> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|source| PreprocessError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let img = image::load_from_memory(&bytes).map_err(|source| PreprocessError::Decode {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(img.to_rgb8())
}

// ---------------------------------------------------------------------------
// Pillow's ImagingResample, 8 bits per channel.

/// Resample.c: 32 bits, minus 8 for the pixel, minus 2 because coefficients
/// can sum above 1 or go negative.
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Resample.c `bicubic_filter` (a = -0.5), support 2.
fn bicubic_filter(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}
const BICUBIC_SUPPORT: f64 = 2.0;

/// Fixed-point taps for one axis: output `i` reads `len[i]` inputs from
/// `start[i]` with weights `k[i * ksize ..]`.
struct Coeffs {
    ksize: usize,
    start: Vec<usize>,
    len: Vec<usize>,
    k: Vec<i32>,
}

/// Resample.c `precompute_coeffs` (box = the whole axis) followed by
/// `normalize_coeffs_8bpc`. The arithmetic follows the C expression for
/// expression, since any reordering can flip a rounding.
fn precompute_coeffs(in_size: u32, out_size: u32) -> Coeffs {
    // C: `(double)(in1 - in0) / outSize` with float box edges.
    let in0 = 0.0f32;
    let in1 = in_size as f32;
    let scale = f64::from(in1 - in0) / f64::from(out_size);
    let filterscale = if scale < 1.0 { 1.0 } else { scale };
    let support = BICUBIC_SUPPORT * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let out = out_size as usize;
    let mut start = Vec::with_capacity(out);
    let mut len = Vec::with_capacity(out);
    let mut k = vec![0i32; out * ksize];
    let mut w = vec![0f64; ksize];
    for xx in 0..out {
        let center = f64::from(in0) + (xx as f64 + 0.5) * scale;
        let ss = 1.0 / filterscale;
        // C's (int) truncates toward zero, as `as i64` does.
        let xmin = ((center - support + 0.5) as i64).max(0);
        let xmax = ((center + support + 0.5) as i64).min(i64::from(in_size));
        let n = (xmax - xmin).max(0) as usize;
        let mut ww = 0.0;
        for (x, wx) in w.iter_mut().enumerate().take(n) {
            let v = bicubic_filter(((x as i64 + xmin) as f64 - center + 0.5) * ss);
            *wx = v;
            ww += v;
        }
        let row = &mut k[xx * ksize..(xx + 1) * ksize];
        for (dst, &wx) in row.iter_mut().zip(&w).take(n) {
            let wx = if ww != 0.0 { wx / ww } else { wx };
            let fixed = wx * f64::from(1u32 << PRECISION_BITS);
            *dst = if wx < 0.0 {
                (-0.5 + fixed) as i32
            } else {
                (0.5 + fixed) as i32
            };
        }
        start.push(xmin as usize);
        len.push(n);
    }
    Coeffs {
        ksize,
        start,
        len,
        k,
    }
}

/// Resample.c `clip8`: drop the fraction and saturate to a byte.
fn clip8(acc: i32) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Resample.c's rounding offset: half of one output unit.
const HALF: i32 = 1 << (PRECISION_BITS - 1);

fn resample_horizontal(src: &[u8], in_w: usize, rows: usize, out_w: usize, c: &Coeffs) -> Vec<u8> {
    let mut dst = vec![0u8; out_w * rows * 3];
    for y in 0..rows {
        let src_row = &src[y * in_w * 3..(y + 1) * in_w * 3];
        for xx in 0..out_w {
            let k = &c.k[xx * c.ksize..xx * c.ksize + c.len[xx]];
            let mut acc = [HALF; 3];
            for (x, &kx) in k.iter().enumerate() {
                let p = (c.start[xx] + x) * 3;
                for (ch, a) in acc.iter_mut().enumerate() {
                    *a += i32::from(src_row[p + ch]) * kx;
                }
            }
            let o = (y * out_w + xx) * 3;
            for (ch, a) in acc.iter().enumerate() {
                dst[o + ch] = clip8(*a);
            }
        }
    }
    dst
}

fn resample_vertical(src: &[u8], width: usize, out_h: usize, c: &Coeffs) -> Vec<u8> {
    let stride = width * 3;
    let mut dst = vec![0u8; stride * out_h];
    for yy in 0..out_h {
        let k = &c.k[yy * c.ksize..yy * c.ksize + c.len[yy]];
        for xx in 0..stride {
            let mut acc = HALF;
            for (y, &ky) in k.iter().enumerate() {
                acc += i32::from(src[(c.start[yy] + y) * stride + xx]) * ky;
            }
            dst[yy * stride + xx] = clip8(acc);
        }
    }
    dst
}

/// Pillow's `Image.resize((width, height), Image.BICUBIC)` on an RGB image,
/// bit for bit. Each pass is skipped when its axis keeps its size (a
/// same-size resize is a copy). The order of the passes matters, because the
/// intermediate is rounded to bytes: Pillow 13 (`ImagingResampleInner` after
/// python-pillow/Pillow#9549) runs the vertical pass first when the height
/// shrinks by more than twice as many pixels as the width does, and the
/// horizontal pass first otherwise. That rule was read off the shipped
/// `_imaging` binary and checked on 2,700 random size pairs; earlier Pillow
/// always went horizontal first, so outputs from Pillow < 13 differ by a
/// unit in some pixels of such resizes.
pub fn resize_bicubic(
    image: &RgbImage,
    width: u32,
    height: u32,
) -> Result<RgbImage, PreprocessError> {
    let (in_w, in_h) = image.dimensions();
    if width == 0 || height == 0 || in_w == 0 || in_h == 0 {
        return Err(PreprocessError::EmptyImage {
            width: in_w,
            height: in_h,
            target_width: width,
            target_height: height,
        });
    }
    let shrink_w = i64::from(in_w) - i64::from(width);
    let shrink_h = i64::from(in_h) - i64::from(height);
    let vertical_first = shrink_h > 0 && shrink_h > 2 * shrink_w;

    let horizontal = |src: &[u8], rows: u32| {
        resample_horizontal(
            src,
            in_w as usize,
            rows as usize,
            width as usize,
            &precompute_coeffs(in_w, width),
        )
    };
    let vertical = |src: &[u8], cols: u32| {
        resample_vertical(
            src,
            cols as usize,
            height as usize,
            &precompute_coeffs(in_h, height),
        )
    };
    let raw = image.as_raw().as_slice();
    let buf = match (width != in_w, height != in_h) {
        (false, false) => raw.to_vec(),
        (true, false) => horizontal(raw, in_h),
        (false, true) => vertical(raw, in_w),
        (true, true) if vertical_first => horizontal(&vertical(raw, in_w), height),
        (true, true) => vertical(&horizontal(raw, in_h), width),
    };
    // The buffer is width * height * 3 by construction.
    RgbImage::from_raw(width, height, buf).ok_or_else(|| {
        PreprocessError::Unsupported(format!("internal: resize to {width}x{height} lost pixels"))
    })
}
