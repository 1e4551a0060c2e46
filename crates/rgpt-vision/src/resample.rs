//! Pillow 13.0 `Image.resize(..., BICUBIC)` on 8-bit images, bit for bit:
//! `libImaging/Resample.c` (`precompute_coeffs`, `normalize_coeffs_8bpc`,
//! `ImagingResampleHorizontal_8bpc` / `Vertical_8bpc`). A separable
//! convolution with the a = -0.5 cubic, widened by the scale when
//! downscaling (antialiasing), coefficients in 22-bit fixed point and a
//! uint8 round-and-clip between the two passes, in Pillow 13's pass order
//! (see [`resize_bicubic_u8`]). The `image` crate's CatmullRom filter is not
//! the same.
//!
//! Pillow runs the same arithmetic on every band, so one function serves
//! RGB images (3 interleaved channels) and one-channel `L` images, such as
//! the region masks the reference puts through the image processor
//! ([`crate::preprocess::ImageTransform::preprocess_mask`]).
use image::RgbImage;

use crate::preprocess::PreprocessError;

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

/// One horizontal pass over `rows` rows of `in_w` pixels of `N` interleaved
/// bytes (`N` a constant, so the per-pixel accumulator stays in registers).
fn resample_horizontal<const N: usize>(
    src: &[u8],
    in_w: usize,
    rows: usize,
    out_w: usize,
    c: &Coeffs,
) -> Vec<u8> {
    let mut dst = vec![0u8; out_w * rows * N];
    for y in 0..rows {
        let src_row = &src[y * in_w * N..(y + 1) * in_w * N];
        for xx in 0..out_w {
            let k = &c.k[xx * c.ksize..xx * c.ksize + c.len[xx]];
            let mut acc = [HALF; N];
            for (x, &kx) in k.iter().enumerate() {
                let p = (c.start[xx] + x) * N;
                for (ch, a) in acc.iter_mut().enumerate() {
                    *a += i32::from(src_row[p + ch]) * kx;
                }
            }
            let o = (y * out_w + xx) * N;
            for (ch, a) in acc.iter().enumerate() {
                dst[o + ch] = clip8(*a);
            }
        }
    }
    dst
}

/// One vertical pass over rows of `width` pixels of `channels` bytes.
fn resample_vertical(
    src: &[u8],
    channels: usize,
    width: usize,
    out_h: usize,
    c: &Coeffs,
) -> Vec<u8> {
    let stride = width * channels;
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

/// Pillow's `Image.resize((width, height), Image.BICUBIC)` on row-major
/// 8-bit pixels of `channels` interleaved bands (1 for `L`, 3 for RGB, 4),
/// bit for bit. Each pass is skipped when its axis keeps its size (a
/// same-size resize is a copy). The order of the passes matters, because the
/// intermediate is rounded to bytes: Pillow 13 (`ImagingResampleInner` after
/// python-pillow/Pillow#9549) runs the vertical pass first when the height
/// shrinks by more than twice as many pixels as the width does, and the
/// horizontal pass first otherwise. That rule was read off the shipped
/// `_imaging` binary and checked on 2,700 random size pairs; earlier Pillow
/// always went horizontal first, so outputs from Pillow < 13 differ by a
/// unit in some pixels of such resizes.
pub fn resize_bicubic_u8(
    pixels: &[u8],
    channels: usize,
    (in_w, in_h): (u32, u32),
    (width, height): (u32, u32),
) -> Result<Vec<u8>, PreprocessError> {
    if !matches!(channels, 1 | 3 | 4) {
        return Err(PreprocessError::Unsupported(format!(
            "resizing an image of {channels} channels (1, 3 or 4 are implemented)"
        )));
    }
    if width == 0 || height == 0 || in_w == 0 || in_h == 0 {
        return Err(PreprocessError::EmptyImage {
            width: in_w,
            height: in_h,
            target_width: width,
            target_height: height,
        });
    }
    let expected = in_w as usize * in_h as usize * channels;
    if pixels.len() != expected {
        return Err(PreprocessError::Unsupported(format!(
            "{} bytes for a {in_w}x{in_h} image of {channels} channel(s), expected {expected}",
            pixels.len()
        )));
    }
    let shrink_w = i64::from(in_w) - i64::from(width);
    let shrink_h = i64::from(in_h) - i64::from(height);
    let vertical_first = shrink_h > 0 && shrink_h > 2 * shrink_w;

    let horizontal = |src: &[u8], rows: u32| {
        let pass = match channels {
            1 => resample_horizontal::<1>,
            3 => resample_horizontal::<3>,
            _ => resample_horizontal::<4>,
        };
        pass(
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
            channels,
            cols as usize,
            height as usize,
            &precompute_coeffs(in_h, height),
        )
    };
    Ok(match (width != in_w, height != in_h) {
        (false, false) => pixels.to_vec(),
        (true, false) => horizontal(pixels, in_h),
        (false, true) => vertical(pixels, in_w),
        (true, true) if vertical_first => horizontal(&vertical(pixels, in_w), height),
        (true, true) => vertical(&horizontal(pixels, in_h), width),
    })
}

/// [`resize_bicubic_u8`] on an RGB image.
pub fn resize_bicubic(
    image: &RgbImage,
    width: u32,
    height: u32,
) -> Result<RgbImage, PreprocessError> {
    let buf = resize_bicubic_u8(image.as_raw(), 3, image.dimensions(), (width, height))?;
    // The buffer is width * height * 3 by construction.
    RgbImage::from_raw(width, height, buf).ok_or_else(|| {
        PreprocessError::Unsupported(format!("internal: resize to {width}x{height} lost pixels"))
    })
}
