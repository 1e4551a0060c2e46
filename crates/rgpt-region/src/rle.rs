//! COCO run-length encoding, reproducing pycocotools 2.0.11
//! (`common/maskApi.c` and `pycocotools/_mask.pyx`) bit for bit: `rleEncode`,
//! `rleDecode`, `rleMerge`, `rleArea`, `rleToBbox`, `rleToString`,
//! `rleFrString`, `rleFrPoly`, `rleFrBbox`. The COCO JSON forms (an RLE
//! dict, and the `frPyObjects` / `COCO.annToRLE` dispatch on segmentation
//! JSON) are in `coco_json.rs`.
//!
//! Runs are column-major (down each column, then to the next column) and start
//! with a background run, which may be 0.
//!
//! Deliberate differences, all on inputs where pycocotools reads out of bounds,
//! loops forever or silently returns garbage:
//! - every RLE taken in is checked: its runs must sum to height*width, and
//!   multi-RLE operations need equal sizes (pycocotools returns a 0x0 RLE or
//!   -1 IoU); image sides must be >= 1 with height*width < 2^31, because
//!   `rleFrPoly` computes pixel offsets in a C `int`;
//! - `encode` treats every non-zero byte as foreground (pycocotools starts a
//!   new run at every change of byte value, so a mask holding 1 and 2 decodes
//!   wrongly);
//! - `rleFrString` shifts in 64 bits; the C code shifts in `int`, which C
//!   defines only for run deltas below 2^29 (the 2.0.11 wheel still decodes
//!   the larger runs of the fixtures, up to 2^31 pixels, to these values);
//!   malformed strings are errors instead of reads past the terminator;
//! - polygon coordinates must be finite and within +-[`MAX_COORD`]; C casts
//!   huge or NaN values to `int` with undefined behaviour;

use serde::{Deserialize, Serialize};

use crate::coco_json::CocoRleJson;
use crate::error::RegionError;

/// Largest absolute polygon/box coordinate accepted, in pixels. It keeps the
/// ×5 upsampled boundary inside `i32` and its length tractable.
pub const MAX_COORD: f64 = 1.0e6;

/// pycocotools' polygon upsampling factor in `rleFrPoly`.
const POLY_SCALE: f64 = 5.0;

/// A binary mask as COCO runs: `counts[0]` background pixels, then
/// `counts[1]` foreground pixels, and so on, walking the image column by
/// column. The JSON form is `{"size":[h,w],"counts":"<compressed>"}`; reading
/// also accepts uncompressed `counts` as a list of integers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "CocoRleJson", into = "CocoRleJson")]
pub struct Rle {
    pub height: u32,
    pub width: u32,
    pub counts: Vec<u32>,
}

/// Checks an image size this crate can index: both sides >= 1 and
/// height*width < 2^31, as `rleFrPoly` forms `x*h+y` in a C `int`.
pub fn check_image_size(height: u32, width: u32) -> Result<(), RegionError> {
    let pixels = u64::from(height) * u64::from(width);
    if height == 0 || width == 0 || pixels > i32::MAX as u64 {
        return Err(RegionError::ImageSize { height, width });
    }
    Ok(())
}

/// C's `(int)` cast of a double as x86-64 performs it (`cvttsd2si`): truncate
/// toward zero, and give `INT_MIN` for NaN or out-of-range values. `rleFrPoly`
/// hits the NaN case on zero-length edges (0.0/0.0 slope), so this matters
/// for bit parity, although the resulting point is never used.
fn c_int(v: f64) -> i32 {
    if v > -2_147_483_649.0 && v < 2_147_483_648.0 {
        v as i32
    } else {
        i32::MIN
    }
}

/// A coordinate rasterisation accepts: finite and within +-[`MAX_COORD`].
pub fn coord_ok(v: f64) -> bool {
    v.is_finite() && v.abs() <= MAX_COORD
}

pub(crate) fn clip_text(text: &str) -> String {
    const MAX: usize = 120;
    if text.chars().count() <= MAX {
        text.to_string()
    } else {
        let head: String = text.chars().take(MAX).collect();
        format!("{head}...")
    }
}

impl Rle {
    /// An all-background RLE of the given size.
    pub fn empty(height: u32, width: u32) -> Result<Rle, RegionError> {
        check_image_size(height, width)?;
        Ok(Rle {
            height,
            width,
            counts: vec![height * width],
        })
    }

    /// Number of pixels, as u64 so that unchecked sizes cannot overflow.
    pub fn pixels(&self) -> u64 {
        u64::from(self.height) * u64::from(self.width)
    }

    /// Checks the size is one [`check_image_size`] accepts and the runs
    /// cover exactly height*width pixels; every operation that walks runs
    /// relies on this to stay within `u32`.
    pub fn validate(&self) -> Result<(), RegionError> {
        check_image_size(self.height, self.width)?;
        let sum: u64 = self.counts.iter().map(|&c| u64::from(c)).sum();
        if sum != self.pixels() {
            return Err(RegionError::RleLength {
                region: format!(
                    "{}x{} with {} runs",
                    self.height,
                    self.width,
                    self.counts.len()
                ),
                sum,
                height: self.height,
                width: self.width,
                expected: self.pixels(),
            });
        }
        Ok(())
    }

    /// `rleEncode`: runs of a column-major bitmap (`data[x*height + y]`);
    /// any non-zero byte is foreground.
    pub fn encode_col_major(height: u32, width: u32, data: &[u8]) -> Result<Rle, RegionError> {
        let expected = u64::from(height) * u64::from(width);
        if data.len() as u64 != expected {
            return Err(RegionError::BitmapLength {
                height,
                width,
                got: data.len(),
                expected,
            });
        }
        let mut counts = Vec::new();
        let mut prev = false;
        let mut run = 0u32;
        for &byte in data {
            let v = byte != 0;
            if v != prev {
                counts.push(run);
                run = 0;
                prev = v;
            }
            run += 1;
        }
        counts.push(run);
        Ok(Rle {
            height,
            width,
            counts,
        })
    }

    /// `rleDecode`: the column-major 0/1 bitmap (`out[x*height + y]`).
    pub fn decode_col_major(&self) -> Result<Vec<u8>, RegionError> {
        self.validate()?;
        let mut out = Vec::with_capacity(self.pixels() as usize);
        let mut v = 0u8;
        for &c in &self.counts {
            out.extend(std::iter::repeat_n(v, c as usize));
            v ^= 1;
        }
        Ok(out)
    }

    /// `rleArea`: number of foreground pixels.
    pub fn area(&self) -> u64 {
        self.counts
            .iter()
            .skip(1)
            .step_by(2)
            .map(|&c| u64::from(c))
            .sum()
    }

    /// `rleToBbox` (the 2.0.11 version, which walks foreground runs):
    /// `[x, y, w, h]`. Its quirks are kept: an RLE whose foreground runs are
    /// all zero-length gives `[width, height, 2^32-width+1, 2^32-height+1]`
    /// from unsigned wrap-around, and a trailing odd run is ignored.
    pub fn to_bbox(&self) -> [f64; 4] {
        let h = self.height;
        let w = self.width;
        let m = (self.counts.len() / 2) * 2;
        // h == 0 would divide by zero in C; it has no pixels, so no box.
        if m == 0 || h == 0 {
            return [0.0; 4];
        }
        let (mut xs, mut ys, mut xe, mut ye) = (w, h, 0u32, 0u32);
        let mut cc = 0u32;
        for (j, &run) in self.counts[..m].iter().enumerate() {
            let start = cc;
            cc = cc.wrapping_add(run);
            if j % 2 == 0 || run == 0 {
                continue;
            }
            let y_start = start % h;
            let x_start = (start - y_start) / h;
            let last = cc.wrapping_sub(1);
            let y_end = last % h;
            let x_end = (last - y_end) / h;
            xs = xs.min(x_start);
            xe = xe.max(x_end);
            if x_start < x_end {
                ys = 0;
                ye = h - 1;
            } else {
                ys = ys.min(y_start);
                ye = ye.max(y_end);
            }
        }
        [
            f64::from(xs),
            f64::from(ys),
            f64::from(xe.wrapping_sub(xs).wrapping_add(1)),
            f64::from(ye.wrapping_sub(ys).wrapping_add(1)),
        ]
    }

    /// `rleToString`: COCO's compressed counts. Each run (minus the run two
    /// before it, from the fourth run on) is written 5 bits per character,
    /// little end first, as chars 48..111 with 0x20 as the continuation bit
    /// and 0x10 of the last char as the sign.
    pub fn to_coco_string(&self) -> String {
        let mut s = String::with_capacity(self.counts.len() * 2);
        for (i, &run) in self.counts.iter().enumerate() {
            let mut x = i64::from(run);
            if i > 2 {
                x -= i64::from(self.counts[i - 2]);
            }
            loop {
                let mut c = (x & 0x1f) as u8;
                x >>= 5;
                let more = if c & 0x10 != 0 { x != -1 } else { x != 0 };
                if more {
                    c |= 0x20;
                }
                s.push(char::from(c + 48));
                if !more {
                    break;
                }
            }
        }
        s
    }

    /// `rleFrString`: parses compressed counts and checks they cover
    /// height*width pixels.
    pub fn from_coco_string(counts: &str, height: u32, width: u32) -> Result<Rle, RegionError> {
        let bad = |reason: String| RegionError::RleString {
            counts: clip_text(counts),
            reason,
        };
        let bytes = counts.as_bytes();
        let mut runs: Vec<u32> = Vec::with_capacity(bytes.len());
        let mut p = 0usize;
        while p < bytes.len() {
            let mut x: i64 = 0;
            let mut k = 0u32;
            loop {
                let Some(&ch) = bytes.get(p) else {
                    return Err(bad(format!(
                        "ends inside run {} (last char has the continuation bit)",
                        runs.len()
                    )));
                };
                if !(48..=111).contains(&ch) {
                    return Err(bad(format!(
                        "byte {ch:#04x} at offset {p} is outside '0'..='o'"
                    )));
                }
                // 12 chars carry 60 bits, far beyond any u32 delta; stopping
                // here keeps the shift below 64.
                if k >= 12 {
                    return Err(bad(format!("run {} is longer than 12 chars", runs.len())));
                }
                let c = i64::from(ch - 48);
                x |= (c & 0x1f) << (5 * k);
                let more = c & 0x20 != 0;
                p += 1;
                k += 1;
                if !more {
                    if c & 0x10 != 0 {
                        x |= -1i64 << (5 * k);
                    }
                    break;
                }
            }
            let m = runs.len();
            if m > 2 {
                x += i64::from(runs[m - 2]);
            }
            let run = u32::try_from(x)
                .map_err(|_| bad(format!("run {m} decodes to {x}, outside 0..=4294967295")))?;
            runs.push(run);
        }
        let rle = Rle {
            height,
            width,
            counts: runs,
        };
        rle.validate()?;
        Ok(rle)
    }

    /// `frUncompressedRLE`: runs given as integers, kept as they are
    /// (zero-length runs included), checked to cover the image.
    pub fn from_uncompressed(
        height: u32,
        width: u32,
        counts: Vec<u32>,
    ) -> Result<Rle, RegionError> {
        let rle = Rle {
            height,
            width,
            counts,
        };
        rle.validate()?;
        Ok(rle)
    }

    /// `rleFrPoly`: rasterises one closed polygon `[x1,y1,x2,y2,...]` the way
    /// pycocotools does: vertices are scaled ×5 and rounded, the boundary is
    /// walked densely, and each column's crossings toggle the mask, so a
    /// pixel is inside when its centre (x+0.5, y+0.5 in COCO coordinates) is.
    /// A trailing odd coordinate is ignored, as in pycocotools; callers that
    /// want to refuse it check first.
    pub fn from_poly(xy: &[f64], height: u32, width: u32) -> Result<Rle, RegionError> {
        check_image_size(height, width)?;
        if let Some(&bad) = xy.iter().find(|v| !coord_ok(**v)) {
            return Err(RegionError::BadCoordinate {
                region: "polygon".to_string(),
                value: bad,
                limit: MAX_COORD,
            });
        }
        let k = xy.len() / 2;
        let mut x: Vec<i32> = (0..k)
            .map(|j| c_int(POLY_SCALE * xy[j * 2] + 0.5))
            .collect();
        let mut y: Vec<i32> = (0..k)
            .map(|j| c_int(POLY_SCALE * xy[j * 2 + 1] + 0.5))
            .collect();
        if let (Some(&x0), Some(&y0)) = (x.first(), y.first()) {
            x.push(x0);
            y.push(y0);
        }

        // The C code stores every boundary point and then scans consecutive
        // pairs; streaming the pairs gives the same points without the array.
        let h = height as i32;
        let w_max = f64::from(width) - 1.0;
        let h_f = f64::from(height);
        let mut prev: Option<(i32, i32)> = None;
        let mut crossings: Vec<u32> = Vec::new();
        let mut visit = |u: i32, v: i32| {
            if let Some((pu, pv)) = prev {
                if u != pu {
                    let xd = f64::from(if u < pu { u } else { u - 1 });
                    let xd = (xd + 0.5) / POLY_SCALE - 0.5;
                    if xd.floor() == xd && xd >= 0.0 && xd <= w_max {
                        let mut yd = f64::from(v.min(pv));
                        yd = (yd + 0.5) / POLY_SCALE - 0.5;
                        if yd < 0.0 {
                            yd = 0.0;
                        } else if yd > h_f {
                            yd = h_f;
                        }
                        yd = yd.ceil();
                        let offset = (xd as i32).wrapping_mul(h).wrapping_add(yd as i32);
                        crossings.push(offset as u32);
                    }
                }
            }
            prev = Some((u, v));
        };
        for j in 0..k {
            let (mut xs, mut xe, mut ys, mut ye) = (x[j], x[j + 1], y[j], y[j + 1]);
            let dx = (xe - xs).abs();
            let dy = (ys - ye).abs();
            let flip = (dx >= dy && xs > xe) || (dx < dy && ys > ye);
            if flip {
                std::mem::swap(&mut xs, &mut xe);
                std::mem::swap(&mut ys, &mut ye);
            }
            if dx >= dy {
                let s = f64::from(ye - ys) / f64::from(dx);
                for d in 0..=dx {
                    let t = if flip { dx - d } else { d };
                    visit(t + xs, c_int(f64::from(ys) + s * f64::from(t) + 0.5));
                }
            } else {
                let s = f64::from(xe - xs) / f64::from(dy);
                for d in 0..=dy {
                    let t = if flip { dy - d } else { d };
                    visit(c_int(f64::from(xs) + s * f64::from(t) + 0.5), t + ys);
                }
            }
        }

        crossings.push(height * width);
        crossings.sort_unstable();
        let mut p = 0u32;
        for a in crossings.iter_mut() {
            let t = *a;
            *a -= p;
            p = t;
        }
        // A zero delta is two toggles at one pixel: they cancel, so the next
        // run joins the previous one.
        let mut counts: Vec<u32> = Vec::with_capacity(crossings.len());
        let mut it = crossings.into_iter();
        if let Some(first) = it.next() {
            counts.push(first);
        }
        while let Some(a) = it.next() {
            if a > 0 {
                counts.push(a);
            } else if let Some(next) = it.next() {
                if let Some(last) = counts.last_mut() {
                    *last += next;
                }
            }
        }
        Ok(Rle {
            height,
            width,
            counts,
        })
    }

    /// `rleFrBbox`: a COCO box `[x, y, w, h]`, rasterised as the polygon
    /// (x,y) (x,y+h) (x+w,y+h) (x+w,y).
    pub fn from_bbox(bb: [f64; 4], height: u32, width: u32) -> Result<Rle, RegionError> {
        let [xs, ys, bw, bh] = bb;
        Rle::from_xyxy(xs, ys, xs + bw, ys + bh, height, width)
    }

    /// `rleFrBbox` with the far corner given directly, so that a box built
    /// as `x + w` rasterises exactly as pycocotools rasterises `[x,y,w,h]`.
    pub fn from_xyxy(
        x1: f64,
        y1: f64,
        x2: f64,
        y2: f64,
        height: u32,
        width: u32,
    ) -> Result<Rle, RegionError> {
        Rle::from_poly(&[x1, y1, x1, y2, x2, y2, x2, y1], height, width)
    }

    /// `rleMerge`: union (`intersect == false`) or intersection of RLEs of
    /// one size. Adjacent runs of equal value are joined; a mask starting
    /// with foreground keeps its leading 0 run.
    pub fn merge(rles: &[Rle], intersect: bool) -> Result<Rle, RegionError> {
        let Some(first) = rles.first() else {
            return Err(RegionError::EmptyMerge);
        };
        check_same_size(rles)?;
        for r in rles {
            r.validate()?;
        }
        let mut cnts = first.counts.clone();
        for b_rle in &rles[1..] {
            let a = std::mem::take(&mut cnts);
            let b = &b_rle.counts;
            let mut ca = a.first().copied().unwrap_or(0);
            let mut cb = b.first().copied().unwrap_or(0);
            let (mut v, mut va, mut vb) = (false, false, false);
            let (mut ai, mut bi) = (1usize, 1usize);
            let mut cc = 0u32;
            let mut ct = 1u64;
            while ct > 0 {
                let c = ca.min(cb);
                cc += c;
                ct = 0;
                ca -= c;
                if ca == 0 && ai < a.len() {
                    ca = a[ai];
                    ai += 1;
                    va = !va;
                }
                ct += u64::from(ca);
                cb -= c;
                if cb == 0 && bi < b.len() {
                    cb = b[bi];
                    bi += 1;
                    vb = !vb;
                }
                ct += u64::from(cb);
                let vp = v;
                v = if intersect { va && vb } else { va || vb };
                if v != vp || ct == 0 {
                    cnts.push(cc);
                    cc = 0;
                }
            }
        }
        Ok(Rle {
            height: first.height,
            width: first.width,
            counts: cnts,
        })
    }
}

/// Errors unless all RLEs share the first one's size.
pub(crate) fn check_same_size<'a>(
    rles: impl IntoIterator<Item = &'a Rle>,
) -> Result<(), RegionError> {
    let mut size = None;
    for (index, r) in rles.into_iter().enumerate() {
        let (height, width) = *size.get_or_insert((r.height, r.width));
        if r.height != height || r.width != width {
            return Err(RegionError::RleSizesDiffer {
                index,
                got_height: r.height,
                got_width: r.width,
                height,
                width,
            });
        }
    }
    Ok(())
}
