//! Visual Genome's `region_descriptions.json` (`[{id, regions: [{region_id,
//! image_id, phrase, x, y, width, height}]}]`) and `objects.json`
//! (`[{image_id, objects: [{object_id, x, y, w, h, names}]}]`), streamed
//! one image at a time: the files are hundreds of megabytes.
use std::path::Path;

use serde::Deserialize;

use crate::format::Region;
use crate::DataError;

#[derive(Debug, Clone, Deserialize)]
pub struct VgRegion {
    pub region_id: u64,
    #[serde(default)]
    pub image_id: Option<u64>,
    pub phrase: String,
    pub x: f64,
    pub y: f64,
    pub width: f64,
    pub height: f64,
}

impl VgRegion {
    pub fn region(&self) -> Region {
        Region::from_coco_bbox([self.x, self.y, self.width, self.height])
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct VgImageRegions {
    /// The image id (`id` in the published file).
    #[serde(alias = "image_id")]
    pub id: u64,
    pub regions: Vec<VgRegion>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct VgObject {
    pub object_id: u64,
    pub x: f64,
    pub y: f64,
    pub w: f64,
    pub h: f64,
    #[serde(default)]
    pub names: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct VgImageObjects {
    pub image_id: u64,
    pub objects: Vec<VgObject>,
}

/// Calls `each` per image of `region_descriptions.json`.
pub fn for_each_region_image(
    path: &Path,
    each: impl FnMut(VgImageRegions) -> Result<(), DataError>,
) -> Result<(), DataError> {
    super::for_each_in_json_array(path, "Visual Genome region_descriptions.json", each)
}

/// Calls `each` per image of `objects.json`.
pub fn for_each_object_image(
    path: &Path,
    each: impl FnMut(VgImageObjects) -> Result<(), DataError>,
) -> Result<(), DataError> {
    super::for_each_in_json_array(path, "Visual Genome objects.json", each)
}
