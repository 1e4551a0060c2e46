//! Shape outlines and which pixels they cover. A pixel belongs to a shape
//! when its centre (x + 0.5, y + 0.5) lies inside the outline; there is no
//! anti-aliasing, so what is drawn and what the mask says agree exactly.
use std::f64::consts::PI;

use rand::Rng;
use serde::{Deserialize, Serialize};

use super::vocab::{ColorName, ShapeKind};

/// Inner radius of a star as a fraction of its outer radius; fatter than a
/// regular pentagram (0.38) so small stars keep their points.
const STAR_INNER: f64 = 0.45;
/// Half-width of a cross's arms as a fraction of its half extent.
const CROSS_ARM: f64 = 1.0 / 3.0;

/// Outline coordinates are multiples of this (in pixels): short binary
/// fractions, so they survive a trip through JSON exactly.
const OUTLINE_STEP: f64 = 1.0 / 256.0;

/// `v` rounded to a multiple of `step`, a power of two.
pub(crate) fn quantise(v: f64, step: f64) -> f64 {
    (v / step).round() * step
}

/// Where and how big a shape is drawn, before anything covers it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Outline {
    pub shape: ShapeKind,
    pub color: ColorName,
    /// Centre of the outline's bounding square, in pixel coordinates.
    pub center: [f64; 2],
    /// Side of the outline's bounding square, in pixels. Shapes stand
    /// upright: the triangle's apex and the star's top point face up.
    pub extent: f64,
}

impl Outline {
    /// An outline of `extent` placed uniformly where it fits whole inside a
    /// `size`×`size` image.
    pub fn random<R: Rng>(
        shape: ShapeKind,
        color: ColorName,
        extent: f64,
        size: u32,
        rng: &mut R,
    ) -> Outline {
        let extent = quantise(extent, OUTLINE_STEP);
        let half = extent / 2.0;
        let far = f64::from(size) - half;
        let mut coordinate = || {
            if far > half {
                rng.random_range(half..=far)
            } else {
                half
            }
        };
        let center = [coordinate(), coordinate()].map(|c| quantise(c, OUTLINE_STEP));
        Outline {
            shape,
            color,
            center,
            extent,
        }
    }

    /// Whether the point `(x, y)` lies inside the outline.
    pub fn contains(&self, x: f64, y: f64) -> bool {
        let r = self.extent / 2.0;
        let dx = x - self.center[0];
        let dy = y - self.center[1];
        match self.shape {
            ShapeKind::Circle => dx * dx + dy * dy <= r * r,
            ShapeKind::Square => dx.abs() <= r && dy.abs() <= r,
            ShapeKind::Diamond => dx.abs() + dy.abs() <= r,
            // Apex at the top centre, base along the bottom edge.
            ShapeKind::Triangle => dy.abs() <= r && dx.abs() <= (dy + r) / 2.0,
            ShapeKind::Cross => {
                let arm = r * CROSS_ARM;
                (dx.abs() <= arm && dy.abs() <= r) || (dy.abs() <= arm && dx.abs() <= r)
            }
            ShapeKind::Star => r > 0.0 && in_unit_star(dx / r, dy / r),
        }
    }

    /// Row-major indices of the pixels of a `size`×`size` image whose
    /// centres the outline covers, passed to `visit`.
    pub fn cover(&self, size: u32, mut visit: impl FnMut(usize)) {
        let r = self.extent / 2.0;
        let side = f64::from(size);
        // A pixel whose centre is inside lies within the bounding square,
        // so only that square (clipped to the image) is scanned.
        let lo = |c: f64| (c - r - 1.0).floor().clamp(0.0, side) as usize;
        let hi = |c: f64| (c + r + 1.0).ceil().clamp(0.0, side) as usize;
        let [cx, cy] = self.center;
        for y in lo(cy)..hi(cy) {
            for x in lo(cx)..hi(cx) {
                if self.contains(x as f64 + 0.5, y as f64 + 0.5) {
                    visit(y * size as usize + x);
                }
            }
        }
    }
}

/// A five-pointed star of outer radius 1 with its top point up (image y
/// grows downwards).
fn in_unit_star(x: f64, y: f64) -> bool {
    let d = x.hypot(y);
    if d > 1.0 {
        return false;
    }
    if d <= STAR_INNER {
        return true;
    }
    // Angle clockwise from straight up, folded onto the half-sector between
    // an outer point (0) and the next inner corner (36°).
    let sector = 2.0 * PI / 5.0;
    let angle = x.atan2(-y).rem_euclid(sector);
    let phi = angle.min(sector - angle);
    // The edge runs from the outer point O = (1, 0) to the inner corner
    // I = (STAR_INNER cos 36°, STAR_INNER sin 36°); the point P is inside
    // when it lies on the same side of OI as the centre.
    let (ix, iy) = (STAR_INNER * (PI / 5.0).cos(), STAR_INNER * (PI / 5.0).sin());
    let (px, py) = (d * phi.cos(), d * phi.sin());
    let side = |qx: f64, qy: f64| (ix - 1.0) * qy - iy * (qx - 1.0);
    side(px, py) * side(0.0, 0.0) >= 0.0
}

/// The area of an outline, in continuous pixels (what its pixel count
/// approaches as it grows).
pub fn outline_area(shape: ShapeKind, extent: f64) -> f64 {
    let r = extent / 2.0;
    match shape {
        ShapeKind::Circle => PI * r * r,
        ShapeKind::Square => extent * extent,
        ShapeKind::Diamond | ShapeKind::Triangle => 2.0 * r * r,
        ShapeKind::Cross => {
            let arm = 2.0 * r * CROSS_ARM;
            2.0 * arm * extent - arm * arm
        }
        // Ten triangles between the centre, an outer point and an inner
        // corner, 36° apart.
        ShapeKind::Star => 5.0 * r * r * STAR_INNER * (PI / 5.0).sin(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pixel count of a large outline approaches its analytic area.
    #[test]
    fn large_outlines_cover_their_area() {
        for shape in ShapeKind::ALL {
            let outline = Outline {
                shape,
                color: ColorName::Red,
                center: [100.0, 100.0],
                extent: 160.0,
            };
            let mut count = 0usize;
            outline.cover(200, |_| count += 1);
            let area = outline_area(shape, 160.0);
            let error = (count as f64 - area).abs() / area;
            assert!(error < 0.02, "{shape}: {count} pixels vs area {area}");
        }
    }

    #[test]
    fn star_points_and_notches() {
        // Top point in, the notch between the top two points out.
        assert!(in_unit_star(0.0, -0.95));
        // The inner corner lies 36° clockwise from up, at radius 0.45.
        let (s, c) = ((PI / 5.0).sin(), (PI / 5.0).cos());
        assert!(!in_unit_star(0.7 * s, -0.7 * c));
        assert!(in_unit_star(0.4 * s, -0.4 * c));
    }
}
