//! COCO segmentation JSON as pycocotools 2.0.11 reads it: the RLE dict
//! (`{"size": [h, w], "counts": "..." | [ints]}`, the serde form of
//! [`Rle`]), and the `frPyObjects` / `COCO.annToRLE` dispatch over a
//! segmentation that is a polygon list, a box, an uncompressed or a
//! compressed RLE (`pycocotools/_mask.pyx`, `coco.py`).
//!
//! Deliberate difference: `fr_py_objects` also accepts compressed `counts`
//! strings in a dict and refuses odd-length polygons, which pycocotools
//! truncates.
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::RegionError;
use crate::rle::{check_image_size, clip_text, Rle};

/// The JSON shape of an RLE.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct CocoRleJson {
    size: [u32; 2],
    counts: CocoCounts,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
enum CocoCounts {
    Compressed(String),
    Uncompressed(Vec<u32>),
}

impl TryFrom<CocoRleJson> for Rle {
    type Error = RegionError;

    fn try_from(j: CocoRleJson) -> Result<Rle, RegionError> {
        let [height, width] = j.size;
        match j.counts {
            CocoCounts::Compressed(s) => Rle::from_coco_string(&s, height, width),
            CocoCounts::Uncompressed(c) => Rle::from_uncompressed(height, width, c),
        }
    }
}

impl From<Rle> for CocoRleJson {
    fn from(r: Rle) -> CocoRleJson {
        CocoRleJson {
            size: [r.height, r.width],
            counts: CocoCounts::Compressed(r.to_coco_string()),
        }
    }
}

fn json_error(value: &Value, reason: impl Into<String>) -> RegionError {
    RegionError::CocoJson {
        json: clip_text(&value.to_string()),
        reason: reason.into(),
    }
}

/// One COCO RLE dict, compressed or uncompressed.
pub fn rle_from_json_value(value: &Value) -> Result<Rle, RegionError> {
    let parsed: CocoRleJson = serde_json::from_value(value.clone()).map_err(|e| {
        json_error(
            value,
            format!("expected {{\"size\":[h,w],\"counts\":\"...\"|[ints]}} ({e})"),
        )
    })?;
    Rle::try_from(parsed)
}

fn numbers(value: &Value, what: &str) -> Result<Vec<f64>, RegionError> {
    let Value::Array(items) = value else {
        return Err(json_error(
            value,
            format!("{what} must be a list of numbers"),
        ));
    };
    items
        .iter()
        .map(|v| {
            v.as_f64()
                .ok_or_else(|| json_error(value, format!("{what} holds a non-number {v}")))
        })
        .collect()
}

fn bbox_from_json(value: &Value, h: u32, w: u32) -> Result<Rle, RegionError> {
    let n = numbers(value, "a box")?;
    let [x, y, bw, bh] = n[..] else {
        return Err(json_error(value, "a box needs exactly 4 numbers [x,y,w,h]"));
    };
    Rle::from_bbox([x, y, bw, bh], h, w)
}

fn poly_from_json(value: &Value, h: u32, w: u32) -> Result<Rle, RegionError> {
    let n = numbers(value, "a polygon")?;
    if n.len() % 2 != 0 {
        return Err(json_error(
            value,
            "a polygon needs an even number of coordinates",
        ));
    }
    Rle::from_poly(&n, h, w)
}

fn rle_of_image(value: &Value, h: u32, w: u32) -> Result<Rle, RegionError> {
    let rle = rle_from_json_value(value)?;
    if rle.height != h || rle.width != w {
        return Err(RegionError::SizeMismatch {
            region: clip_text(&value.to_string()),
            got_height: rle.height,
            got_width: rle.width,
            height: h,
            width: w,
        });
    }
    Ok(rle)
}

/// pycocotools' `frPyObjects(obj, h, w)`, dispatching as it does on the
/// length of the first element only: a list of 4-number lists is boxes
/// `[x,y,w,h]` (so a leading 2-point polygon counts as a box; 2.0.11 itself
/// accepts boxes only as a NumPy array and raises on a list, a bug not kept),
/// a list of longer lists is polygons (later parts may be shorter), a list
/// of dicts is RLEs, and one dict is one RLE (a one-element vector here,
/// the bare dict there). Flat number lists are refused, as 2.0.11 does.
/// RLE dicts must have the image size (pycocotools ignores `h, w` there).
pub fn fr_py_objects(obj: &Value, h: u32, w: u32) -> Result<Vec<Rle>, RegionError> {
    check_image_size(h, w)?;
    match obj {
        Value::Array(items) => match items.first() {
            Some(Value::Array(first)) if first.len() == 4 => {
                items.iter().map(|v| bbox_from_json(v, h, w)).collect()
            }
            Some(Value::Array(first)) if first.len() > 4 => {
                items.iter().map(|v| poly_from_json(v, h, w)).collect()
            }
            Some(Value::Object(_)) => items.iter().map(|v| rle_of_image(v, h, w)).collect(),
            _ => Err(json_error(
                obj,
                "expected a list of boxes [[x,y,w,h],...], of polygons [[x1,y1,...],...] \
                 or of RLE dicts, or one RLE dict",
            )),
        },
        Value::Object(_) => Ok(vec![rle_of_image(obj, h, w)?]),
        _ => Err(json_error(obj, "expected a list or an RLE dict")),
    }
}

/// `COCO.annToRLE`: an annotation's `segmentation` as one RLE: polygon parts
/// are rasterised and merged (union), RLE dicts are read as they are.
pub fn ann_to_rle(segmentation: &Value, h: u32, w: u32) -> Result<Rle, RegionError> {
    match segmentation {
        Value::Array(_) => Rle::merge(&fr_py_objects(segmentation, h, w)?, false),
        Value::Object(_) => rle_of_image(segmentation, h, w),
        _ => Err(json_error(
            segmentation,
            "a segmentation is a list of polygons or an RLE dict",
        )),
    }
}

/// The JSON text forms of an RLE.
impl Rle {
    /// Reads COCO RLE JSON text: `{"size":[h,w],"counts":"..."|[...]}`.
    pub fn from_json_str(json: &str) -> Result<Rle, RegionError> {
        let value: Value = serde_json::from_str(json).map_err(|e| RegionError::CocoJson {
            json: clip_text(json),
            reason: e.to_string(),
        })?;
        rle_from_json_value(&value)
    }

    /// The compressed COCO JSON value `{"size":[h,w],"counts":"..."}`.
    pub fn to_json_value(&self) -> Value {
        serde_json::json!({
            "size": [self.height, self.width],
            "counts": self.to_coco_string(),
        })
    }

    /// Compact compressed COCO JSON text, `size` first whatever map order
    /// serde_json was built with.
    pub fn to_json_string(&self) -> String {
        format!(
            "{{\"size\":[{},{}],\"counts\":{}}}",
            self.height,
            self.width,
            Value::String(self.to_coco_string())
        )
    }
}
