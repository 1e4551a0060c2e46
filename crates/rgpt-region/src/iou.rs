//! Intersection over union, reproducing pycocotools 2.0.11 `maskUtils.iou`
//! (`bbIou` and `rleIou` in `common/maskApi.c`), including `iscrowd`: for a
//! crowd ground truth the denominator is the detection's own area, so the
//! value is the fraction of the detection inside the crowd region.
//!
//! Results are indexed `[detection][ground truth]`, as pycocotools returns
//! its m×n array. Deliberate difference: RLEs of different sizes are an
//! error here, where pycocotools writes -1; an `iscrowd` of the wrong length
//! is an error where pycocotools reads out of bounds.

use crate::error::RegionError;
use crate::rle::{check_same_size, Rle};

fn check_crowd(iscrowd: &[bool], n: usize) -> Result<(), RegionError> {
    if iscrowd.len() != n {
        return Err(RegionError::CrowdLength {
            got: iscrowd.len(),
            expected: n,
        });
    }
    Ok(())
}

/// `bbIou` for one pair of COCO boxes `[x, y, w, h]`.
pub fn bbox_iou_one(dt: [f64; 4], gt: [f64; 4], crowd: bool) -> f64 {
    let ga = gt[2] * gt[3];
    let da = dt[2] * dt[3];
    let w = (dt[2] + dt[0]).min(gt[2] + gt[0]) - dt[0].max(gt[0]);
    if w <= 0.0 {
        return 0.0;
    }
    let h = (dt[3] + dt[1]).min(gt[3] + gt[1]) - dt[1].max(gt[1]);
    if h <= 0.0 {
        return 0.0;
    }
    let i = w * h;
    let u = if crowd { da } else { da + ga - i };
    i / u
}

/// `maskUtils.iou` on COCO boxes `[x, y, w, h]`: `out[d][g]`.
pub fn bbox_iou(
    dt: &[[f64; 4]],
    gt: &[[f64; 4]],
    iscrowd: &[bool],
) -> Result<Vec<Vec<f64>>, RegionError> {
    check_crowd(iscrowd, gt.len())?;
    Ok(dt
        .iter()
        .map(|&d| {
            gt.iter()
                .zip(iscrowd)
                .map(|(&g, &crowd)| bbox_iou_one(d, g, crowd))
                .collect()
        })
        .collect())
}

/// Plain IoU of two corner boxes `[x1, y1, x2, y2]`; 0 when they do not
/// overlap or both are empty.
pub fn box_iou_xyxy(a: [f64; 4], b: [f64; 4]) -> f64 {
    let iw = a[2].min(b[2]) - a[0].max(b[0]);
    let ih = a[3].min(b[3]) - a[1].max(b[1]);
    if iw <= 0.0 || ih <= 0.0 {
        return 0.0;
    }
    let inter = iw * ih;
    let area_a = (a[2] - a[0]) * (a[3] - a[1]);
    let area_b = (b[2] - b[0]) * (b[3] - b[1]);
    inter / (area_a + area_b - inter)
}

/// `rleIou` for one pair, after the same box pre-check pycocotools does
/// (pairs whose tight boxes do not overlap are 0 without walking the runs).
fn rle_iou_pair(dt: &Rle, gt: &Rle, db: [f64; 4], gb: [f64; 4], crowd: bool) -> f64 {
    if bbox_iou_one(db, gb, crowd) <= 0.0 {
        return 0.0;
    }
    let (a, b) = (&dt.counts, &gt.counts);
    let mut ca = a.first().copied().unwrap_or(0);
    let mut cb = b.first().copied().unwrap_or(0);
    let (mut va, mut vb) = (false, false);
    let (mut ai, mut bi) = (1usize, 1usize);
    let (mut i, mut u) = (0u64, 0u64);
    let mut ct = 1u64;
    while ct > 0 {
        let c = ca.min(cb);
        if va || vb {
            u += u64::from(c);
            if va && vb {
                i += u64::from(c);
            }
        }
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
    }
    if i == 0 {
        u = 1;
    } else if crowd {
        u = dt.area();
    }
    i as f64 / u as f64
}

/// `maskUtils.iou` on RLEs: `out[d][g]`. All RLEs must share one size and
/// cover it exactly; the size error's index counts `dt` then `gt`.
pub fn rle_iou(dt: &[Rle], gt: &[Rle], iscrowd: &[bool]) -> Result<Vec<Vec<f64>>, RegionError> {
    check_crowd(iscrowd, gt.len())?;
    check_same_size(dt.iter().chain(gt))?;
    for r in dt.iter().chain(gt) {
        r.validate()?;
    }
    let db: Vec<[f64; 4]> = dt.iter().map(Rle::to_bbox).collect();
    let gb: Vec<[f64; 4]> = gt.iter().map(Rle::to_bbox).collect();
    Ok(dt
        .iter()
        .zip(&db)
        .map(|(d, &dbb)| {
            gt.iter()
                .zip(&gb)
                .zip(iscrowd)
                .map(|((g, &gbb), &crowd)| rle_iou_pair(d, g, dbb, gbb, crowd))
                .collect()
        })
        .collect())
}

/// IoU of two masks of one size (`crowd`: divide by `dt`'s area instead).
pub fn mask_iou(dt: &Rle, gt: &Rle, crowd: bool) -> Result<f64, RegionError> {
    let out = rle_iou(std::slice::from_ref(dt), std::slice::from_ref(gt), &[crowd])?;
    Ok(out
        .first()
        .and_then(|row| row.first())
        .copied()
        .unwrap_or(0.0))
}
