//! `RegionSpec`: one region of any shape (box, polygon, RLE, mask, point),
//! its rasterisation to a COCO RLE on an image, and the CLI grammar
//! `box:x1,y1,x2,y2 | poly:x1,y1,...[;...] | mask:PATH.png | rle:JSON |
//! point:x,y[,r]`.
//!
//! Boxes and polygons rasterise exactly as pycocotools 2.0.11 does
//! (`rleFrBbox`, `rleFrPoly` + `rleMerge`, see `rle.rs`), so a box
//! `[x,y,w,h]` from COCO gives the mask `maskUtils.frPyObjects([[x,y,w,h]],
//! h, w)` gives. Unlike pycocotools, a region that covers no pixel, lies
//! outside the image, or has a malformed polygon is an error, because a
//! pooled feature over zero pixels is meaningless.
//!
//! Coordinates are COCO pixel coordinates: pixel (i, j) covers
//! [i, i+1) × [j, j+1), so its centre is (i+0.5, j+0.5).

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use crate::error::RegionError;
use crate::raster::Bitmap;
use crate::rle::{check_image_size, coord_ok, Rle, MAX_COORD};

/// The default point radius is the shorter image side divided by this: a
/// point prompt then marks a blob about 1/8 of the image across, large
/// enough to pool several feature cells on a 24×24 or 32×32 grid.
pub const POINT_RADIUS_DIVISOR: f64 = 16.0;

/// One region on an image, in pixels.
#[derive(Debug, Clone, PartialEq)]
pub enum RegionSpec {
    /// Axis-aligned box, corners (x1, y1) and (x2, y2).
    Box { x1: f64, y1: f64, x2: f64, y2: f64 },
    /// COCO polygon parts, each a flat `[x1,y1,x2,y2,...]`; their union.
    Polygon(Vec<Vec<f64>>),
    /// A COCO RLE; its size must be the image's.
    Rle(Rle),
    /// A binary mask; its size must be the image's.
    Mask(Bitmap),
    /// A filled disk. `radius: None` means the shorter image side /
    /// [`POINT_RADIUS_DIVISOR`] (at least 1 pixel).
    Point { x: f64, y: f64, radius: Option<f64> },
}

impl RegionSpec {
    /// A box from corners `x1, y1, x2, y2`.
    pub fn from_xyxy(x1: f64, y1: f64, x2: f64, y2: f64) -> RegionSpec {
        RegionSpec::Box { x1, y1, x2, y2 }
    }

    /// A box from COCO `[x, y, w, h]`; `x + w` is computed as pycocotools'
    /// `rleFrBbox` computes it, so the mask is bit-identical.
    pub fn from_coco_bbox(bb: [f64; 4]) -> RegionSpec {
        let [x, y, w, h] = bb;
        RegionSpec::Box {
            x1: x,
            y1: y,
            x2: x + w,
            y2: y + h,
        }
    }

    /// A (multi-part) polygon.
    pub fn polygon(parts: Vec<Vec<f64>>) -> RegionSpec {
        RegionSpec::Polygon(parts)
    }

    /// A point with the default radius.
    pub fn point(x: f64, y: f64) -> RegionSpec {
        RegionSpec::Point { x, y, radius: None }
    }

    /// Parses the CLI grammar; same as `str::parse`.
    pub fn parse(spec: &str) -> Result<RegionSpec, RegionError> {
        spec.parse()
    }

    /// The spec text used to name this region in errors, shortened.
    fn name(&self) -> String {
        let full = self.to_string();
        const MAX: usize = 120;
        if full.chars().count() <= MAX {
            full
        } else {
            let head: String = full.chars().take(MAX).collect();
            format!("{head}...")
        }
    }

    fn check_coords<'a>(
        &self,
        values: impl IntoIterator<Item = &'a f64>,
    ) -> Result<(), RegionError> {
        for &v in values {
            if !coord_ok(v) {
                return Err(RegionError::BadCoordinate {
                    region: self.name(),
                    value: v,
                    limit: MAX_COORD,
                });
            }
        }
        Ok(())
    }

    fn outside(&self, height: u32, width: u32) -> RegionError {
        RegionError::OutsideImage {
            region: self.name(),
            height,
            width,
        }
    }

    fn size_mismatch(&self, h: u32, w: u32, height: u32, width: u32) -> RegionError {
        RegionError::SizeMismatch {
            region: self.name(),
            got_height: h,
            got_width: w,
            height,
            width,
        }
    }

    /// The region as a COCO RLE on a `height`×`width` image. Errors when the
    /// region is malformed, lies outside the image, or covers no pixel.
    pub fn to_rle(&self, height: u32, width: u32) -> Result<Rle, RegionError> {
        check_image_size(height, width)?;
        let (wf, hf) = (f64::from(width), f64::from(height));
        let rle = match self {
            RegionSpec::Box { x1, y1, x2, y2 } => {
                self.check_coords([x1, y1, x2, y2])?;
                if x2 < x1 || y2 < y1 {
                    return Err(RegionError::InvertedBox {
                        region: self.name(),
                    });
                }
                if x2 == x1 || y2 == y1 {
                    return Err(RegionError::EmptyBox {
                        region: self.name(),
                    });
                }
                if *x2 <= 0.0 || *y2 <= 0.0 || *x1 >= wf || *y1 >= hf {
                    return Err(self.outside(height, width));
                }
                Rle::from_xyxy(*x1, *y1, *x2, *y2, height, width)?
            }
            RegionSpec::Polygon(parts) => {
                if parts.is_empty() {
                    return Err(RegionError::BadPolygon {
                        region: self.name(),
                        part: 0,
                        coords: 0,
                    });
                }
                for (part, xy) in parts.iter().enumerate() {
                    if xy.len() < 6 || xy.len() % 2 != 0 {
                        return Err(RegionError::BadPolygon {
                            region: self.name(),
                            part,
                            coords: xy.len(),
                        });
                    }
                    self.check_coords(xy)?;
                }
                let xs = parts.iter().flat_map(|p| p.iter().step_by(2));
                let ys = parts.iter().flat_map(|p| p.iter().skip(1).step_by(2));
                let (min_x, max_x) = xs.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
                    (lo.min(v), hi.max(v))
                });
                let (min_y, max_y) = ys.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
                    (lo.min(v), hi.max(v))
                });
                if max_x <= 0.0 || max_y <= 0.0 || min_x >= wf || min_y >= hf {
                    return Err(self.outside(height, width));
                }
                let rles = parts
                    .iter()
                    .map(|xy| Rle::from_poly(xy, height, width))
                    .collect::<Result<Vec<_>, _>>()?;
                Rle::merge(&rles, false)?
            }
            RegionSpec::Rle(rle) => {
                if rle.height != height || rle.width != width {
                    return Err(self.size_mismatch(rle.height, rle.width, height, width));
                }
                rle.validate()?;
                rle.clone()
            }
            RegionSpec::Mask(bitmap) => {
                if bitmap.height != height || bitmap.width != width {
                    return Err(self.size_mismatch(bitmap.height, bitmap.width, height, width));
                }
                bitmap.to_rle()?
            }
            RegionSpec::Point { x, y, radius } => {
                self.check_coords([x, y])?;
                let r = radius.unwrap_or_else(|| (hf.min(wf) / POINT_RADIUS_DIVISOR).max(1.0));
                if !(r.is_finite() && r > 0.0) {
                    return Err(RegionError::BadRadius {
                        region: self.name(),
                        radius: r,
                    });
                }
                if *x < 0.0 || *y < 0.0 || *x >= wf || *y >= hf {
                    return Err(self.outside(height, width));
                }
                disk(*x, *y, r, height, width).to_rle()?
            }
        };
        if rle.area() == 0 {
            return Err(RegionError::ZeroArea {
                region: self.name(),
                height,
                width,
            });
        }
        Ok(rle)
    }

    /// Foreground pixel count on the image (`maskUtils.area`).
    pub fn area(&self, height: u32, width: u32) -> Result<u64, RegionError> {
        Ok(self.to_rle(height, width)?.area())
    }

    /// Tight box `[x, y, w, h]` of the rasterised region
    /// (`maskUtils.toBbox`).
    pub fn bbox(&self, height: u32, width: u32) -> Result<[f64; 4], RegionError> {
        Ok(self.to_rle(height, width)?.to_bbox())
    }

    /// The pixels to crop around the region: its tight box grown on each
    /// side by `margin` times its width (left and right) and height (top
    /// and bottom), clamped to the image, as `[x0, y0, x1, y1)` in whole
    /// pixels (the grown box's floor and ceiling).
    pub fn crop_box(&self, height: u32, width: u32, margin: f64) -> Result<[u32; 4], RegionError> {
        if !(margin.is_finite() && margin >= 0.0) {
            return Err(RegionError::Spec {
                spec: format!("{self:?}"),
                reason: format!("the crop margin {margin} must be a non-negative number"),
            });
        }
        let [x, y, w, h] = self.bbox(height, width)?;
        let (dx, dy) = (w * margin, h * margin);
        let clamp = |v: f64, max: u32| v.clamp(0.0, f64::from(max)) as u32;
        Ok([
            clamp((x - dx).floor(), width),
            clamp((y - dy).floor(), height),
            clamp((x + w + dx).ceil(), width),
            clamp((y + h + dy).ceil(), height),
        ])
    }
}

/// Pixels whose centre is within `r` of (cx, cy), plus the pixel holding the
/// point itself, so that a small radius still marks the point.
fn disk(cx: f64, cy: f64, r: f64, height: u32, width: u32) -> Bitmap {
    let mut bitmap = Bitmap::zeros(height, width);
    let w = width as usize;
    let clamp = |v: f64, hi: u32| v.max(0.0).min(f64::from(hi)) as usize;
    let (x0, x1) = (
        clamp((cx - r).floor(), width),
        clamp((cx + r).ceil() + 1.0, width),
    );
    let (y0, y1) = (
        clamp((cy - r).floor(), height),
        clamp((cy + r).ceil() + 1.0, height),
    );
    for py in y0..y1 {
        for px in x0..x1 {
            let dx = px as f64 + 0.5 - cx;
            let dy = py as f64 + 0.5 - cy;
            if dx * dx + dy * dy <= r * r {
                bitmap.data[py * w + px] = 1;
            }
        }
    }
    // The caller checked the point is inside, so this index is in range.
    let (px, py) = (cx.floor() as usize, cy.floor() as usize);
    if let Some(v) = bitmap.data.get_mut(py * w + px) {
        *v = 1;
    }
    bitmap
}

fn join(values: &[f64]) -> String {
    values
        .iter()
        .map(|v| v.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

impl fmt::Display for RegionSpec {
    /// The spec grammar, which `FromStr` reads back (except masks, which
    /// print their size instead of the path they came from).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegionSpec::Box { x1, y1, x2, y2 } => write!(f, "box:{x1},{y1},{x2},{y2}"),
            RegionSpec::Polygon(parts) => {
                let parts: Vec<String> = parts.iter().map(|p| join(p)).collect();
                write!(f, "poly:{}", parts.join(";"))
            }
            RegionSpec::Rle(rle) => write!(f, "rle:{}", rle.to_json_string()),
            RegionSpec::Mask(b) => write!(f, "mask:<{}x{} bitmap>", b.height, b.width),
            RegionSpec::Point { x, y, radius } => match radius {
                Some(r) => write!(f, "point:{x},{y},{r}"),
                None => write!(f, "point:{x},{y}"),
            },
        }
    }
}

fn parse_numbers(spec: &str, text: &str) -> Result<Vec<f64>, RegionError> {
    text.split(',')
        .map(|t| {
            let t = t.trim();
            match t.parse::<f64>() {
                Ok(v) if v.is_finite() => Ok(v),
                _ => Err(RegionError::Spec {
                    spec: spec.to_string(),
                    reason: format!("{t:?} is not a finite number"),
                }),
            }
        })
        .collect()
}

impl FromStr for RegionSpec {
    type Err = RegionError;

    fn from_str(spec: &str) -> Result<RegionSpec, RegionError> {
        let bad = |reason: String| RegionError::Spec {
            spec: spec.to_string(),
            reason,
        };
        let Some((kind, args)) = spec.split_once(':') else {
            return Err(bad("missing `kind:` prefix".to_string()));
        };
        match kind.trim() {
            "box" => match parse_numbers(spec, args)?[..] {
                [x1, y1, x2, y2] => Ok(RegionSpec::Box { x1, y1, x2, y2 }),
                ref other => Err(bad(format!("box needs 4 numbers, got {}", other.len()))),
            },
            "poly" => {
                let parts = args
                    .split(';')
                    .map(|part| parse_numbers(spec, part))
                    .collect::<Result<Vec<_>, _>>()?;
                for (i, p) in parts.iter().enumerate() {
                    if p.len() < 6 || p.len() % 2 != 0 {
                        return Err(bad(format!(
                            "polygon part {i} has {} numbers; each part needs an even count >= 6",
                            p.len()
                        )));
                    }
                }
                Ok(RegionSpec::Polygon(parts))
            }
            "point" => match parse_numbers(spec, args)?[..] {
                [x, y] => Ok(RegionSpec::Point { x, y, radius: None }),
                [x, y, r] => Ok(RegionSpec::Point {
                    x,
                    y,
                    radius: Some(r),
                }),
                ref other => Err(bad(format!(
                    "point needs 2 or 3 numbers, got {}",
                    other.len()
                ))),
            },
            "rle" => Rle::from_json_str(args.trim())
                .map(RegionSpec::Rle)
                .map_err(|e| bad(e.to_string())),
            "mask" => {
                let path = args.trim();
                if path.is_empty() {
                    return Err(bad("mask needs a PNG path".to_string()));
                }
                Bitmap::from_image_file(Path::new(path)).map(RegionSpec::Mask)
            }
            other => Err(bad(format!("unknown region kind {other:?}"))),
        }
    }
}
