//! Image preprocessing as LLaVA-1.5 feeds the CLIP tower, reproduced exactly:
//!
//! - `expand2square` from LLaVA's `llava/mm_utils.py` (`image_aspect_ratio:
//!   pad`): paste the image centred on a square canvas of the mean colour
//!   `tuple(int(x * 255) for x in image_mean)`;
//! - transformers 5.23 `CLIPImageProcessorPil` (`image_processing_pil_clip.py`
//!   on `PilBackend`, `image_transforms.py`): shortest-edge resize with PIL
//!   bicubic, centre crop (zero-padded when the crop is larger), rescale in
//!   f64 then cast to f32, normalise in f32;
//! - Pillow 13.0 `Image.resize(..., BICUBIC)` on 8-bit RGB, bit for bit
//!   (`crate::resample`).
//!
//! Beyond the references, [`Preprocessed`] carries the [`ImageTransform`]
//! from original pixel coordinates to processed ones, so region boxes and
//! masks given on the original image land on the right cells, and
//! [`ImageTransform::preprocess_mask`] puts a region mask through the same
//! padding, resize and crop, as RegionGPT's reference prepares the masks it
//! pools (NVIDIA SpatialRGPT, commit 16715d4, `llava/mm_utils.py`
//! `process_regions` and `llava/eval/eval_spatial.py`).
//!
//! Deliberate differences: only `resample: 3` (bicubic) is implemented,
//! which is what every CLIP / SigLIP config RegionGPT uses says; a `size`
//! with `longest_edge` or `max_height` is refused rather than approximated.
//! [`load_image`] decodes with the `image` crate, which for PNG gives PIL's
//! pixels but for JPEG may differ from libjpeg-turbo by a unit here and
//! there; like LLaVA's `Image.open(..).convert("RGB")` it ignores EXIF
//! orientation and drops alpha without compositing.
//!
//! One job, the image processor, in one file: its config, the transform it
//! records and the mask that follows the image through it are one path
//! and change together (the resampler itself is `resample.rs`).
use std::path::{Path, PathBuf};

use image::ImageDecoder;
pub use image::RgbImage;
use serde::{Deserialize, Serialize};
use tch::Tensor;

pub use crate::resample::resize_bicubic;
use crate::resample::resize_bicubic_u8;

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
    #[error(
        "image {} is {width}x{height}, {needed_mib} MiB decoded, over the {limit_mib} MiB \
         limit: downscale it, or raise the limit with {MAX_IMAGE_MIB_VAR}=N (MiB)",
        path.display()
    )]
    TooLarge {
        path: PathBuf,
        width: u32,
        height: u32,
        needed_mib: u64,
        limit_mib: u64,
    },
    #[error(transparent)]
    Tensor(#[from] tch::TchError),
}

/// The variable that raises the decoded-size limit of [`load_image`].
pub const MAX_IMAGE_MIB_VAR: &str = "RGPT_MAX_IMAGE_MIB";

/// The decoded-size limit of [`load_image`] unless the variable says
/// otherwise: the `image` crate's own default.
const DEFAULT_MAX_IMAGE_MIB: u64 = 512;

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

impl ImageTransform {
    /// A region mask on the original image (row-major, one byte per pixel
    /// of `original_size`, 0 outside) through this image's preprocessing,
    /// as RegionGPT's reference prepares the masks it pools (SpatialRGPT,
    /// commit 16715d4, `llava/mm_utils.py` `process_regions`; the eval
    /// scripts do the same): padded to the square with zeros at the
    /// image's offset (`pad_to_square`, LLaVA's `expand2square` placement),
    /// then given to a copy of the image processor with `do_normalize`,
    /// `do_convert_rgb` off and `rescale_factor` 1.0 as a one-channel
    /// `uint8` image. That processor resizes it as a PIL `L` image with the
    /// image's bicubic filter and sizes, centre-crops it with zero fill and
    /// casts it to f32 unscaled (transformers 4.37.2, which SpatialRGPT
    /// pins, and 5.23 agree on each step). Returns `[H, W]` f32 of
    /// `output_size` on the CPU: a 0/1 mask stays 0/1 except where Pillow's
    /// rounding of the bicubic taps moves its edge.
    pub fn preprocess_mask(&self, mask: &[u8]) -> Result<Tensor, PreprocessError> {
        let (w0, h0) = self.original_size;
        let expected = w0 as usize * h0 as usize;
        if mask.len() != expected {
            return Err(PreprocessError::Unsupported(format!(
                "a region mask of {} pixels for a {w0}x{h0} image",
                mask.len()
            )));
        }
        let (pw, ph) = self.padded_size;
        let padded = if (pw, ph) == (w0, h0) {
            std::borrow::Cow::Borrowed(mask)
        } else {
            let (left, top) = (self.pad.0 as usize, self.pad.1 as usize);
            if left + w0 as usize > pw as usize || top + h0 as usize > ph as usize {
                return Err(PreprocessError::Unsupported(format!(
                    "a {w0}x{h0} image at ({left}, {top}) does not fit its {pw}x{ph} padding"
                )));
            }
            let mut canvas = vec![0u8; pw as usize * ph as usize];
            for (y, row) in mask.chunks_exact(w0.max(1) as usize).enumerate() {
                let start = (top + y) * pw as usize + left;
                canvas[start..start + w0 as usize].copy_from_slice(row);
            }
            std::borrow::Cow::Owned(canvas)
        };
        let resized =
            resize_bicubic_u8(&padded, 1, (pw, ph), self.resized_size).map_err(|e| match e {
                PreprocessError::EmptyImage { .. } => PreprocessError::EmptyImage {
                    width: w0,
                    height: h0,
                    target_width: self.resized_size.0,
                    target_height: self.resized_size.1,
                },
                other => other,
            })?;
        let (rw, rh) = (
            i64::from(self.resized_size.0),
            i64::from(self.resized_size.1),
        );
        let (ow, oh) = self.output_size;
        let (left, top) = self.crop_offset;
        let mut out = vec![0f32; ow as usize * oh as usize];
        for y in 0..oh as usize {
            let sy = y as i64 + top;
            if !(0..rh).contains(&sy) {
                continue;
            }
            for x in 0..ow as usize {
                let sx = x as i64 + left;
                if (0..rw).contains(&sx) {
                    out[y * ow as usize + x] = f32::from(resized[(sy * rw + sx) as usize]);
                }
            }
        }
        Ok(Tensor::f_from_slice(&out)?.f_view([i64::from(oh), i64::from(ow)])?)
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
    let decode_error = |source| PreprocessError::Decode {
        path: path.to_path_buf(),
        source,
    };
    let mut decoder = image::ImageReader::new(std::io::Cursor::new(&bytes))
        .with_guessed_format()
        .map_err(|e| decode_error(image::ImageError::IoError(e)))?
        .into_decoder()
        .map_err(decode_error)?;
    // Checked before decoding, so a huge image is refused by its header
    // with the limit and how to raise it, not a bare "Memory limit exceeded".
    let (width, height) = decoder.dimensions();
    let limit_mib = std::env::var(MAX_IMAGE_MIB_VAR)
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(DEFAULT_MAX_IMAGE_MIB);
    // RGBA at 8 bits is the most a PNG or JPEG decodes to before RGB.
    let needed = u64::from(width) * u64::from(height) * 4;
    let limit = limit_mib.saturating_mul(1 << 20);
    if needed > limit {
        return Err(PreprocessError::TooLarge {
            path: path.to_path_buf(),
            width,
            height,
            needed_mib: needed.div_ceil(1 << 20),
            limit_mib,
        });
    }
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(limit.max(needed));
    decoder.set_limits(limits).map_err(decode_error)?;
    let img = image::DynamicImage::from_decoder(decoder).map_err(decode_error)?;
    Ok(img.to_rgb8())
}
