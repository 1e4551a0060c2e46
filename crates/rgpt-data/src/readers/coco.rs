//! COCO instances JSON (`instances_train2017.json`, RefCOCOg's
//! `instances.json`, and V3Det, which uses the same layout with boxes
//! only): images, annotations (box, polygons or RLE) and categories.
use std::collections::HashMap;
use std::path::Path;

use rgpt_region::coco_json::ann_to_rle;
use rgpt_region::{RegionError, Rle};
use serde::Deserialize;

use crate::format::Region;
use crate::DataError;

#[derive(Debug, Clone, Deserialize)]
pub struct CocoImage {
    pub id: u64,
    pub file_name: String,
    pub width: u32,
    pub height: u32,
}

#[derive(Debug, Clone, Deserialize)]
pub struct CocoCategory {
    pub id: u64,
    pub name: String,
    #[serde(default)]
    pub supercategory: Option<String>,
}

/// A `segmentation`: polygon parts, or an RLE (crowd regions).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Segmentation {
    Polygons(Vec<Vec<f64>>),
    Rle(serde_json::Value),
}

#[derive(Debug, Clone, Deserialize)]
pub struct CocoAnnotation {
    pub id: u64,
    pub image_id: u64,
    pub category_id: u64,
    /// `[x, y, w, h]`. A file may leave it out where the segmentation is
    /// given, as pycocotools allows: [`CocoDataset::read`] then fills in
    /// the mask's box (`maskUtils.toBbox`).
    #[serde(default = "no_bbox")]
    pub bbox: [f64; 4],
    #[serde(default)]
    pub segmentation: Option<Segmentation>,
    #[serde(default)]
    pub area: f64,
    #[serde(default)]
    pub iscrowd: u8,
}

impl CocoAnnotation {
    /// Why the annotation cannot give a region, if it cannot.
    pub fn defect(&self) -> Option<&'static str> {
        let [x, y, w, h] = self.bbox;
        if !(x.is_finite() && y.is_finite() && w.is_finite() && h.is_finite()) {
            Some("non-finite box")
        } else if w < 1.0 || h < 1.0 {
            Some("degenerate box (width or height under 1 px)")
        } else {
            None
        }
    }

    /// The box as a region.
    pub fn box_region(&self) -> Region {
        Region::from_coco_bbox(self.bbox)
    }

    /// The mask as a region (polygons or RLE), when the annotation has one.
    pub fn mask_region(&self) -> Option<Region> {
        match &self.segmentation {
            Some(Segmentation::Polygons(parts)) if !parts.is_empty() => {
                Some(Region::Polygon(parts.clone()))
            }
            Some(Segmentation::Rle(value)) if value.is_object() => Some(Region::Rle(value.clone())),
            _ => None,
        }
    }
}

impl CocoAnnotation {
    /// The annotation's mask as `COCO.annToRLE` rasterises it (polygon
    /// parts merged, RLE as given) on its `width` x `height` image.
    pub fn to_rle(&self, width: u32, height: u32) -> Result<Rle, RegionError> {
        let segmentation = match &self.segmentation {
            Some(Segmentation::Polygons(parts)) => {
                serde_json::to_value(parts).unwrap_or(serde_json::Value::Null)
            }
            Some(Segmentation::Rle(value)) => value.clone(),
            None => serde_json::Value::Null,
        };
        ann_to_rle(&segmentation, height, width)
    }
}

/// A COCO-format file, indexed.
#[derive(Debug, Clone, Deserialize)]
pub struct CocoDataset {
    pub images: Vec<CocoImage>,
    pub annotations: Vec<CocoAnnotation>,
    pub categories: Vec<CocoCategory>,
}

/// The stand-in for a `bbox` a file left out, until it is filled in.
fn no_bbox() -> [f64; 4] {
    [f64::NAN; 4]
}

impl CocoDataset {
    /// Reads the file; an annotation without a `bbox` gets its
    /// segmentation's box on its image.
    pub fn read(path: &Path) -> Result<Self, DataError> {
        let mut dataset: CocoDataset = super::read_json(path, "COCO instances JSON")?;
        let sizes: HashMap<u64, (u32, u32)> = dataset
            .images
            .iter()
            .map(|i| (i.id, (i.width, i.height)))
            .collect();
        for ann in dataset.annotations.iter_mut() {
            if !ann.bbox.iter().all(|v| v.is_nan()) {
                continue;
            }
            let malformed = |message: String| DataError::Format {
                path: path.to_path_buf(),
                what: "COCO annotation",
                message,
            };
            if ann.segmentation.is_none() {
                return Err(malformed(format!(
                    "annotation {} has neither a bbox nor a segmentation; give one",
                    ann.id
                )));
            }
            let &(width, height) = sizes.get(&ann.image_id).ok_or_else(|| {
                malformed(format!(
                    "annotation {} has no bbox and refers to image {}, which the file does \
                     not list, so its box cannot be computed",
                    ann.id, ann.image_id
                ))
            })?;
            let rle = ann
                .to_rle(width, height)
                .map_err(|e| malformed(format!("annotation {}: {e}", ann.id)))?;
            ann.bbox = rle.to_bbox();
        }
        Ok(dataset)
    }

    pub fn images_by_id(&self) -> HashMap<u64, &CocoImage> {
        self.images.iter().map(|i| (i.id, i)).collect()
    }

    pub fn categories_by_id(&self) -> HashMap<u64, &CocoCategory> {
        self.categories.iter().map(|c| (c.id, c)).collect()
    }

    pub fn annotations_by_id(&self) -> HashMap<u64, &CocoAnnotation> {
        self.annotations.iter().map(|a| (a.id, a)).collect()
    }
}
