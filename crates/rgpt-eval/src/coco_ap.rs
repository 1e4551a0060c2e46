//! COCO box AP as pycocotools 2.0.11 `COCOeval(iouType="bbox")` computes it
//! (`evaluate`, `accumulate`, `summarize`), for region classification with
//! ground-truth boxes (paper Table 3; the RegionCLIP / PVIT protocol): each
//! ground-truth box is submitted as a detection of every class the model
//! scores, at that class's score, and AP is averaged over IoU 0.50:0.95,
//! the categories that have ground truth, and 101 recall points.
//!
//! Reproduced details: ground truth sorted so ignored boxes come last,
//! detections by score (stable), at most `max_dets` per image and category,
//! greedy matching per IoU threshold with `min(t, 1 - 1e-10)`, crowd
//! regions matched repeatedly with IoU over the detection's area, area
//! ranges on the annotation's `area` field (detections: `w*h`),
//! precision made monotone and read at `searchsorted(recall, thresholds,
//! "left")`, and -1 for categories without ground truth, left out of
//! the means.
use std::collections::BTreeMap;
use std::path::Path;

use rgpt_region::iou::bbox_iou_one;
use serde::{Deserialize, Serialize};

use crate::EvalError;

/// A ground-truth box.
#[derive(Debug, Clone, PartialEq)]
pub struct GroundTruth {
    pub id: u64,
    pub image_id: u64,
    pub category_id: u64,
    /// COCO `[x, y, w, h]`.
    pub bbox: [f64; 4],
    /// The annotation's `area` field (not the box's), as COCOeval uses.
    pub area: f64,
    pub iscrowd: bool,
}

#[cfg(feature = "runner")]
impl From<&rgpt_data::readers::coco::CocoAnnotation> for GroundTruth {
    fn from(a: &rgpt_data::readers::coco::CocoAnnotation) -> Self {
        GroundTruth {
            id: a.id,
            image_id: a.image_id,
            category_id: a.category_id,
            bbox: a.bbox,
            area: a.area,
            iscrowd: a.iscrowd != 0,
        }
    }
}

/// A scored detection.
#[derive(Debug, Clone, PartialEq)]
pub struct Detection {
    pub image_id: u64,
    pub category_id: u64,
    pub bbox: [f64; 4],
    pub score: f64,
}

/// One line of a class-scores file.
#[derive(Deserialize)]
struct ScoreLine {
    annotation_id: u64,
    scores: BTreeMap<String, f64>,
}

/// Reads a class-scores file, JSON lines `{"annotation_id": ID, "scores":
/// {"<category id or name>": SCORE}}`, as detections: each ground-truth
/// box (found by its annotation id in `ground_truth`) submitted once per
/// scored class, at that score. `categories` maps category names to ids.
pub fn read_class_scores(
    path: &Path,
    ground_truth: &[GroundTruth],
    categories: &BTreeMap<String, u64>,
) -> Result<Vec<Detection>, EvalError> {
    let text = std::fs::read_to_string(path).map_err(|source| EvalError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let by_id: BTreeMap<u64, &GroundTruth> = ground_truth.iter().map(|g| (g.id, g)).collect();
    let mut detections = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let malformed = |message: String| EvalError::Malformed {
            path: path.to_path_buf(),
            line: i + 1,
            message,
        };
        let scored: ScoreLine =
            serde_json::from_str(line).map_err(|e| malformed(format!("malformed scores: {e}")))?;
        let annotation = by_id.get(&scored.annotation_id).ok_or_else(|| {
            malformed(format!(
                "annotation {} is not in the ground truth",
                scored.annotation_id
            ))
        })?;
        for (class, score) in scored.scores {
            let category_id = match class.parse::<u64>() {
                Ok(id) => id,
                Err(_) => *categories
                    .get(&class)
                    .ok_or_else(|| malformed(format!("unknown category `{class}`")))?,
            };
            detections.push(Detection {
                image_id: annotation.image_id,
                category_id,
                bbox: annotation.bbox,
                score,
            });
        }
    }
    Ok(detections)
}

/// COCOeval's `Params` for boxes.
#[derive(Debug, Clone)]
pub struct Params {
    pub iou_thresholds: Vec<f64>,
    pub recall_thresholds: Vec<f64>,
    pub max_dets: [usize; 3],
    /// all, small, medium, large.
    pub area_ranges: [[f64; 2]; 4],
}

impl Default for Params {
    fn default() -> Self {
        // np.linspace(.5, .95, 10) and np.linspace(0, 1, 101).
        Params {
            iou_thresholds: linspace(0.5, 0.95, 10),
            recall_thresholds: linspace(0.0, 1.0, 101),
            max_dets: [1, 10, 100],
            area_ranges: [
                [0.0, 1e5 * 1e5],
                [0.0, 32.0 * 32.0],
                [32.0 * 32.0, 96.0 * 96.0],
                [96.0 * 96.0, 1e5 * 1e5],
            ],
        }
    }
}

/// numpy's `linspace(start, stop, num)` (endpoint included): the same
/// float arithmetic, so thresholds equal numpy's bit for bit.
fn linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    let div = (num - 1) as f64;
    let step = (stop - start) / div;
    let mut out: Vec<f64> = (0..num).map(|i| i as f64 * step + start).collect();
    if let Some(last) = out.last_mut() {
        *last = stop;
    }
    out
}

/// The twelve numbers `COCOeval.summarize()` prints, in its order.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CocoSummary {
    pub ap: f64,
    pub ap50: f64,
    pub ap75: f64,
    pub ap_small: f64,
    pub ap_medium: f64,
    pub ap_large: f64,
    pub ar1: f64,
    pub ar10: f64,
    pub ar100: f64,
    pub ar_small: f64,
    pub ar_medium: f64,
    pub ar_large: f64,
}

impl CocoSummary {
    pub fn stats(&self) -> [f64; 12] {
        [
            self.ap,
            self.ap50,
            self.ap75,
            self.ap_small,
            self.ap_medium,
            self.ap_large,
            self.ar1,
            self.ar10,
            self.ar100,
            self.ar_small,
            self.ar_medium,
            self.ar_large,
        ]
    }
}

/// `evaluateImg`'s result for one image, category and area range.
struct ImageEval {
    /// [threshold][detection]: matched (a ground-truth id), or 0.
    matched: Vec<Vec<u64>>,
    /// [threshold][detection].
    ignored: Vec<Vec<bool>>,
    scores: Vec<f64>,
    gt_ignored: Vec<bool>,
}

fn evaluate_image(
    gts: &[&GroundTruth],
    dts: &[&Detection],
    area: [f64; 2],
    max_det: usize,
    params: &Params,
) -> Option<ImageEval> {
    if gts.is_empty() && dts.is_empty() {
        return None;
    }
    let ignore: Vec<bool> = gts
        .iter()
        .map(|g| g.iscrowd || g.area < area[0] || g.area > area[1])
        .collect();
    // Stable sorts, as numpy's mergesort.
    let mut gt_order: Vec<usize> = (0..gts.len()).collect();
    gt_order.sort_by_key(|&i| ignore[i]);
    let mut dt_order: Vec<usize> = (0..dts.len()).collect();
    dt_order.sort_by(|&a, &b| {
        dts[b]
            .score
            .partial_cmp(&dts[a].score)
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    dt_order.truncate(max_det);
    let gts: Vec<&GroundTruth> = gt_order.iter().map(|&i| gts[i]).collect();
    let gt_ignored: Vec<bool> = gt_order.iter().map(|&i| ignore[i]).collect();
    let dts: Vec<&Detection> = dt_order.iter().map(|&i| dts[i]).collect();
    let ious: Vec<Vec<f64>> = dts
        .iter()
        .map(|d| {
            gts.iter()
                .map(|g| bbox_iou_one(d.bbox, g.bbox, g.iscrowd))
                .collect()
        })
        .collect();
    let thresholds = params.iou_thresholds.len();
    let mut matched = vec![vec![0u64; dts.len()]; thresholds];
    let mut ignored = vec![vec![false; dts.len()]; thresholds];
    for (t, &threshold) in params.iou_thresholds.iter().enumerate() {
        let mut gt_matched = vec![0u64; gts.len()];
        for (d, det_ious) in ious.iter().enumerate() {
            let mut best = threshold.min(1.0 - 1e-10);
            let mut m: Option<usize> = None;
            for (g, gt) in gts.iter().enumerate() {
                if gt_matched[g] > 0 && !gt.iscrowd {
                    continue;
                }
                if let Some(prev) = m {
                    if !gt_ignored[prev] && gt_ignored[g] {
                        break;
                    }
                }
                if det_ious[g] < best {
                    continue;
                }
                best = det_ious[g];
                m = Some(g);
            }
            if let Some(g) = m {
                ignored[t][d] = gt_ignored[g];
                matched[t][d] = gts[g].id;
                gt_matched[g] = detection_id(d);
            }
        }
    }
    for (d, det) in dts.iter().enumerate() {
        let det_area = det.bbox[2] * det.bbox[3];
        let outside = det_area < area[0] || det_area > area[1];
        for t in 0..thresholds {
            if matched[t][d] == 0 && outside {
                ignored[t][d] = true;
            }
        }
    }
    Some(ImageEval {
        matched,
        ignored,
        scores: dts.iter().map(|d| d.score).collect(),
        gt_ignored,
    })
}

/// Any non-zero id marks a ground truth as taken; loadRes numbers
/// detections from 1.
fn detection_id(index: usize) -> u64 {
    index as u64 + 1
}

/// `COCOeval(gt, dt, "bbox")`, `evaluate()`, `accumulate()`,
/// `summarize()`. `category_ids` and `image_ids` are the ground-truth
/// dataset's (`getCatIds()`, `getImgIds()`).
pub fn coco_box_ap(
    ground_truth: &[GroundTruth],
    detections: &[Detection],
    category_ids: &[u64],
    image_ids: &[u64],
    params: &Params,
) -> CocoSummary {
    let mut categories = category_ids.to_vec();
    categories.sort_unstable();
    categories.dedup();
    let mut images = image_ids.to_vec();
    images.sort_unstable();
    images.dedup();
    let mut gts: BTreeMap<(u64, u64), Vec<&GroundTruth>> = BTreeMap::new();
    for g in ground_truth {
        gts.entry((g.image_id, g.category_id)).or_default().push(g);
    }
    let mut dts: BTreeMap<(u64, u64), Vec<&Detection>> = BTreeMap::new();
    for d in detections {
        dts.entry((d.image_id, d.category_id)).or_default().push(d);
    }
    let (t_count, r_count) = (params.iou_thresholds.len(), params.recall_thresholds.len());
    let (k_count, a_count, m_count) = (
        categories.len(),
        params.area_ranges.len(),
        params.max_dets.len(),
    );
    // precision[t][r][k][a][m], recall[t][k][a][m]; -1 where undefined.
    let mut precision = vec![-1.0; t_count * r_count * k_count * a_count * m_count];
    let mut recall = vec![-1.0; t_count * k_count * a_count * m_count];
    let p_index = |t: usize, r: usize, k: usize, a: usize, m: usize| {
        (((t * r_count + r) * k_count + k) * a_count + a) * m_count + m
    };
    let r_index =
        |t: usize, k: usize, a: usize, m: usize| ((t * k_count + k) * a_count + a) * m_count + m;
    let largest = params.max_dets[m_count - 1];
    let empty_gt: Vec<&GroundTruth> = Vec::new();
    let empty_dt: Vec<&Detection> = Vec::new();
    for (k, &category) in categories.iter().enumerate() {
        for (a, &area) in params.area_ranges.iter().enumerate() {
            let evals: Vec<ImageEval> = images
                .iter()
                .filter_map(|&image| {
                    let g = gts.get(&(image, category)).unwrap_or(&empty_gt);
                    let d = dts.get(&(image, category)).unwrap_or(&empty_dt);
                    evaluate_image(g, d, area, largest, params)
                })
                .collect();
            if evals.is_empty() {
                continue;
            }
            let not_ignored_gt = evals
                .iter()
                .flat_map(|e| &e.gt_ignored)
                .filter(|&&i| !i)
                .count();
            if not_ignored_gt == 0 {
                continue;
            }
            for (m, &max_det) in params.max_dets.iter().enumerate() {
                // Detections of all images, each image's first max_det,
                // ordered by score (stable across the concatenation).
                let mut pooled: Vec<(f64, usize, usize)> = Vec::new();
                for (e, eval) in evals.iter().enumerate() {
                    for d in 0..eval.scores.len().min(max_det) {
                        pooled.push((eval.scores[d], e, d));
                    }
                }
                pooled.sort_by(|x, y| y.0.partial_cmp(&x.0).unwrap_or(std::cmp::Ordering::Equal));
                for t in 0..t_count {
                    let (mut tp, mut fp) = (0.0f64, 0.0f64);
                    let mut rc = Vec::with_capacity(pooled.len());
                    let mut pr = Vec::with_capacity(pooled.len());
                    for &(_, e, d) in &pooled {
                        let eval = &evals[e];
                        if eval.ignored[t][d] {
                            // Neither true nor false positive: the sums repeat.
                        } else if eval.matched[t][d] != 0 {
                            tp += 1.0;
                        } else {
                            fp += 1.0;
                        }
                        rc.push(tp / not_ignored_gt as f64);
                        pr.push(tp / (fp + tp + f64::EPSILON));
                    }
                    recall[r_index(t, k, a, m)] = rc.last().copied().unwrap_or(0.0);
                    for i in (1..pr.len()).rev() {
                        if pr[i] > pr[i - 1] {
                            pr[i - 1] = pr[i];
                        }
                    }
                    for (r, &threshold) in params.recall_thresholds.iter().enumerate() {
                        // searchsorted(rc, threshold, side="left").
                        let at = rc.partition_point(|&v| v < threshold);
                        precision[p_index(t, r, k, a, m)] = pr.get(at).copied().unwrap_or(0.0);
                    }
                }
            }
        }
    }
    // summarize(): the mean of the defined (> -1) entries, or -1.
    let mean = |values: Vec<f64>| {
        let kept: Vec<f64> = values.into_iter().filter(|&v| v > -1.0).collect();
        if kept.is_empty() {
            -1.0
        } else {
            kept.iter().sum::<f64>() / kept.len() as f64
        }
    };
    let m_of = |max_det: usize| {
        params
            .max_dets
            .iter()
            .position(|&m| m == max_det)
            .unwrap_or(m_count - 1)
    };
    let precision = &precision;
    let recall = &recall;
    let ap = |iou: Option<f64>, a: usize, max_det: usize| {
        let m = m_of(max_det);
        let mut values = Vec::new();
        for t in 0..t_count {
            if iou.is_some_and(|v| params.iou_thresholds[t] != v) {
                continue;
            }
            for r in 0..r_count {
                for k in 0..k_count {
                    values.push(precision[p_index(t, r, k, a, m)]);
                }
            }
        }
        mean(values)
    };
    let ar = |a: usize, max_det: usize| {
        let m = m_of(max_det);
        let mut values = Vec::new();
        for t in 0..t_count {
            for k in 0..k_count {
                values.push(recall[r_index(t, k, a, m)]);
            }
        }
        mean(values)
    };
    let top = params.max_dets[m_count - 1];
    CocoSummary {
        ap: ap(None, 0, top),
        ap50: ap(Some(0.5), 0, top),
        ap75: ap(Some(0.75), 0, top),
        ap_small: ap(None, 1, top),
        ap_medium: ap(None, 2, top),
        ap_large: ap(None, 3, top),
        ar1: ar(0, params.max_dets[0]),
        ar10: ar(0, params.max_dets[1]),
        ar100: ar(0, top),
        ar_small: ar(1, top),
        ar_medium: ar(2, top),
        ar_large: ar(3, top),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ground_truth() -> Vec<GroundTruth> {
        let box_of = |id, image_id, category_id| GroundTruth {
            id,
            image_id,
            category_id,
            bbox: [id as f64, 2.0, 10.0, 20.0],
            area: 200.0,
            iscrowd: false,
        };
        vec![box_of(11, 1, 1), box_of(12, 2, 2)]
    }

    fn categories() -> BTreeMap<String, u64> {
        [("person".to_string(), 1), ("car".to_string(), 2)].into()
    }

    fn file(tag: &str, text: &str) -> std::path::PathBuf {
        let path = std::env::temp_dir().join(format!(
            "rgpt-eval-scores-{tag}-{}.jsonl",
            std::process::id()
        ));
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn each_scored_class_submits_the_ground_truth_box_once() {
        let path = file(
            "ok",
            "{\"annotation_id\": 12, \"scores\": {\"person\": 0.25, \"2\": 0.75}}\n\n",
        );
        let detections = read_class_scores(&path, &ground_truth(), &categories()).unwrap();
        // By class name, in the scores' key order ("2" before "person").
        assert_eq!(
            detections,
            vec![
                Detection {
                    image_id: 2,
                    category_id: 2,
                    bbox: [12.0, 2.0, 10.0, 20.0],
                    score: 0.75
                },
                Detection {
                    image_id: 2,
                    category_id: 1,
                    bbox: [12.0, 2.0, 10.0, 20.0],
                    score: 0.25
                },
            ]
        );
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn an_unknown_annotation_or_category_is_named_with_its_line() {
        for (tag, text, expected) in [
            (
                "annotation",
                "{\"annotation_id\": 11, \"scores\": {}}\n{\"annotation_id\": 99, \"scores\": {}}\n",
                ":2: annotation 99 is not in the ground truth",
            ),
            (
                "category",
                "{\"annotation_id\": 11, \"scores\": {\"truck\": 1.0}}\n",
                ":1: unknown category `truck`",
            ),
            ("json", "{\"annotation_id\": 11}\n", ":1: malformed scores"),
        ] {
            let path = file(tag, text);
            let err = read_class_scores(&path, &ground_truth(), &categories())
                .unwrap_err()
                .to_string();
            assert!(err.contains(expected), "{tag}: {err}");
            let _ = std::fs::remove_file(&path);
        }
    }
}
