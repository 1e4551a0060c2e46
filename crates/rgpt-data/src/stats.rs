//! `rgpt data stats FILE`: what a conversation file holds, per task:
//! samples, turns, regions per sample, words per answer (the paper's
//! Table 2 column), and a histogram of region areas in COCO's size classes
//! (small < 32², medium < 96², large) and as a fraction of the image.
use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use crate::format::Speaker;
use crate::{Region, Sample};

/// COCO's area thresholds (pixels²): small below 32², large from 96².
pub const SMALL_AREA: f64 = 32.0 * 32.0;
pub const LARGE_AREA: f64 = 96.0 * 96.0;

#[derive(Debug, Clone, Default, Serialize)]
pub struct TaskStats {
    pub samples: u64,
    pub turns: u64,
    pub regions: u64,
    pub answers: u64,
    pub answer_words: u64,
}

impl TaskStats {
    pub fn words_per_answer(&self) -> f64 {
        self.answer_words as f64 / self.answers.max(1) as f64
    }

    pub fn regions_per_sample(&self) -> f64 {
        self.regions as f64 / self.samples.max(1) as f64
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct DatasetStats {
    pub total: TaskStats,
    pub by_task: BTreeMap<String, TaskStats>,
    /// Samples by their number of regions.
    pub regions_per_sample: BTreeMap<usize, u64>,
    /// Regions by COCO size class: small, medium, large, or unknown (a mask
    /// file, read only when the data is loaded).
    pub area_classes: BTreeMap<&'static str, u64>,
    /// Regions by area as a fraction of the image, in bins
    /// `< 1%, 1-5%, 5-20%, 20-50%, >= 50%` (samples with a size only).
    pub area_fractions: BTreeMap<&'static str, u64>,
}

const FRACTION_BINS: [(f64, &str); 5] = [
    (0.01, "< 1%"),
    (0.05, "1-5%"),
    (0.20, "5-20%"),
    (0.50, "20-50%"),
    (f64::INFINITY, ">= 50%"),
];

/// The area of a region from its geometry alone (pixels²): box w*h,
/// polygons by the shoelace formula, RLE by its counts, a point's disk.
pub fn region_area(region: &Region) -> Option<f64> {
    match region {
        Region::Box([x1, y1, x2, y2]) => Some((x2 - x1).max(0.0) * (y2 - y1).max(0.0)),
        Region::Polygon(parts) => Some(
            parts
                .iter()
                .map(|xy| {
                    let n = xy.len() / 2;
                    let twice: f64 = (0..n)
                        .map(|i| {
                            let j = (i + 1) % n;
                            xy[2 * i] * xy[2 * j + 1] - xy[2 * j] * xy[2 * i + 1]
                        })
                        .sum();
                    twice.abs() / 2.0
                })
                .sum(),
        ),
        Region::Rle(value) => rgpt_region::coco_json::rle_from_json_value(value)
            .ok()
            .map(|rle| rle.area() as f64),
        Region::Point(xy) => xy.get(2).map(|r| std::f64::consts::PI * r * r),
        Region::Mask(_) | Region::Name(_) => None,
    }
}

impl DatasetStats {
    pub fn add(&mut self, sample: &Sample) {
        let task = self.by_task.entry(sample.task.clone()).or_default();
        for stats in [&mut self.total, task] {
            stats.samples += 1;
            stats.turns += sample.conversations.len() as u64;
            stats.regions += sample.regions.len() as u64;
            for turn in sample
                .conversations
                .iter()
                .filter(|t| t.from == Speaker::Gpt)
            {
                stats.answers += 1;
                stats.answer_words += turn.value.split_whitespace().count() as u64;
            }
        }
        *self
            .regions_per_sample
            .entry(sample.regions.len())
            .or_default() += 1;
        let image_area = match (sample.width, sample.height) {
            (Some(w), Some(h)) if w > 0 && h > 0 => Some(f64::from(w) * f64::from(h)),
            _ => None,
        };
        for region in &sample.regions {
            let area = region_area(region);
            let class = match area {
                None => "unknown",
                Some(a) if a < SMALL_AREA => "small",
                Some(a) if a < LARGE_AREA => "medium",
                Some(_) => "large",
            };
            *self.area_classes.entry(class).or_default() += 1;
            if let (Some(area), Some(image_area)) = (area, image_area) {
                let fraction = area / image_area;
                let bin = FRACTION_BINS
                    .iter()
                    .find(|(limit, _)| fraction < *limit)
                    .map_or(">= 50%", |(_, name)| name);
                *self.area_fractions.entry(bin).or_default() += 1;
            }
        }
    }
}

impl fmt::Display for DatasetStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:<22} {:>9} {:>8} {:>9} {:>13} {:>13}",
            "task", "samples", "turns", "regions", "regions/smp", "words/answer"
        )?;
        let rows = self
            .by_task
            .iter()
            .map(|(task, s)| (task.as_str(), s))
            .chain(std::iter::once(("all", &self.total)));
        for (task, s) in rows {
            writeln!(
                f,
                "{:<22} {:>9} {:>8} {:>9} {:>13.2} {:>13.2}",
                if task.is_empty() { "(none)" } else { task },
                s.samples,
                s.turns,
                s.regions,
                s.regions_per_sample(),
                s.words_per_answer()
            )?;
        }
        let total_regions = self.total.regions.max(1) as f64;
        writeln!(f, "\nregion areas (COCO classes):")?;
        for class in ["small", "medium", "large", "unknown"] {
            if let Some(&n) = self.area_classes.get(class) {
                writeln!(f, "  {class:<8} {n:>9}  {}", bar(n as f64 / total_regions))?;
            }
        }
        if !self.area_fractions.is_empty() {
            writeln!(f, "region areas (fraction of the image):")?;
            let known: u64 = self.area_fractions.values().sum();
            for (_, bin) in FRACTION_BINS {
                let n = self.area_fractions.get(bin).copied().unwrap_or(0);
                writeln!(
                    f,
                    "  {bin:<8} {n:>9}  {}",
                    bar(n as f64 / known.max(1) as f64)
                )?;
            }
        }
        writeln!(f, "regions per sample:")?;
        for (regions, n) in &self.regions_per_sample {
            writeln!(f, "  {regions:<8} {n:>9}")?;
        }
        Ok(())
    }
}

/// A text bar, 40 characters for 100%.
fn bar(fraction: f64) -> String {
    "#".repeat((fraction * 40.0).round() as usize)
}
