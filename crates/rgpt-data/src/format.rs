//! The one conversation format everything downstream reads
//! (`docs/data-format.md`): JSON lines, one sample per line, LLaVA's
//! `conversations` plus the regions the `<region>` placeholders stand for.
//!
//! ```json
//! {"id": "coco-cls/391895/0", "image": "train2017/000000391895.jpg", "width": 640, "height": 360,
//!  "regions": [{"box": [359.2, 146.2, 471.6, 359.7]}],
//!  "conversations": [{"from": "human", "value": "<image>\nWhat is <region>? Answer ..."},
//!                    {"from": "gpt", "value": "person"}],
//!  "task": "coco-cls"}
//! ```
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use rgpt_region::{Bitmap, RegionSpec, Rle};
use serde::{Deserialize, Serialize};

use crate::DataError;

pub const IMAGE_TOKEN: &str = "<image>";
pub const REGION_TOKEN: &str = "<region>";
/// The meta key of a sample with an image that names its regions in words,
/// one name per region in `<region>` order: what each region's embedding
/// should read as, for training that aligns the two (`align_regions` in
/// rgpt-train). `rgpt data synth` writes it with named text regions.
pub const REGION_NAMES_META: &str = "region_names";

/// Who speaks a turn, spelt as LLaVA's JSON spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Speaker {
    Human,
    Gpt,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Turn {
    pub from: Speaker,
    pub value: String,
}

impl Turn {
    pub fn human(value: impl Into<String>) -> Self {
        Turn {
            from: Speaker::Human,
            value: value.into(),
        }
    }

    pub fn gpt(value: impl Into<String>) -> Self {
        Turn {
            from: Speaker::Gpt,
            value: value.into(),
        }
    }
}

/// One region of a sample, in original-image pixels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Region {
    /// Corners `[x1, y1, x2, y2]`.
    Box([f64; 4]),
    /// COCO polygon parts, each `[x1, y1, x2, y2, ...]`.
    Polygon(Vec<Vec<f64>>),
    /// COCO RLE, `{"size": [h, w], "counts": "..." | [...]}`.
    Rle(serde_json::Value),
    /// A mask image (non-zero = inside), relative to the image root.
    Mask(String),
    /// `[x, y]` or `[x, y, radius]`.
    Point(Vec<f64>),
    /// A region given by its name alone, in a sample without an image ("small
    /// red circle in the top left"). A model trained from nothing reads it as
    /// one embedding, the mean of its name's word embeddings, so that its
    /// decoder learns to look regions up before any region comes from an image
    /// (docs/experiments/demo-journal.md).
    Name(String),
}

impl Region {
    /// A box from COCO `[x, y, w, h]`.
    pub fn from_coco_bbox([x, y, w, h]: [f64; 4]) -> Region {
        Region::Box([x, y, x + w, y + h])
    }

    /// The region as `rgpt-region` rasterises it; a mask path is read
    /// relative to `image_root`.
    pub fn to_spec(&self, image_root: &Path) -> Result<RegionSpec, rgpt_region::RegionError> {
        Ok(match self {
            Region::Box([x1, y1, x2, y2]) => RegionSpec::from_xyxy(*x1, *y1, *x2, *y2),
            Region::Polygon(parts) => RegionSpec::polygon(parts.clone()),
            Region::Rle(value) => {
                RegionSpec::Rle(rgpt_region::coco_json::rle_from_json_value(value)?)
            }
            Region::Mask(path) => {
                RegionSpec::Mask(Bitmap::from_image_file(&image_root.join(path))?)
            }
            Region::Point(xy) => match xy[..] {
                [x, y] => RegionSpec::Point { x, y, radius: None },
                [x, y, r] => RegionSpec::Point {
                    x,
                    y,
                    radius: Some(r),
                },
                _ => {
                    return Err(rgpt_region::RegionError::Spec {
                        spec: format!("{xy:?}"),
                        reason: "a point is [x, y] or [x, y, radius]".into(),
                    })
                }
            },
            Region::Name(name) => {
                return Err(rgpt_region::RegionError::Spec {
                    spec: format!("name {name:?}"),
                    reason: "a region given by name has no geometry; it belongs to a \
                             sample without an image"
                        .into(),
                })
            }
        })
    }

    /// A region from an RLE, written compressed.
    pub fn from_rle(rle: &Rle) -> Region {
        Region::Rle(rle.to_json_value())
    }
}

/// One training or evaluation sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub id: String,
    /// Image path relative to the image root; none for text-only samples.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// The image's size, when the source gives it (lets regions be checked
    /// without opening the image).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    /// One region per `<region>` in the turns, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub regions: Vec<Region>,
    pub conversations: Vec<Turn>,
    /// The builder that made it (`coco-cls`, `refcocog-rec`, `vg`, ...).
    #[serde(default)]
    pub task: String,
    /// Ground truth a task runner scores against (category names, the
    /// target region of a referring expression, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<serde_json::Value>,
}

impl Sample {
    /// Checks what a loader relies on: turns alternate human / gpt starting
    /// with human, `<image>` appears once (in the first turn) exactly when
    /// there is an image, and there is one `<region>` per region.
    pub fn validate(&self) -> Result<(), DataError> {
        let fail = |message: String| DataError::Sample {
            id: self.id.clone(),
            message,
        };
        if self.conversations.is_empty() {
            return Err(fail("has no conversation turns".into()));
        }
        for (i, turn) in self.conversations.iter().enumerate() {
            let expected = if i % 2 == 0 {
                Speaker::Human
            } else {
                Speaker::Gpt
            };
            if turn.from != expected {
                return Err(fail(format!(
                    "turn {i} is from {:?}; turns must alternate human, gpt, starting with human",
                    turn.from
                )));
            }
        }
        let images: usize = self
            .conversations
            .iter()
            .map(|t| t.value.matches(IMAGE_TOKEN).count())
            .sum();
        let wanted = usize::from(self.image.is_some());
        if images != wanted {
            return Err(fail(format!(
                "has {images} {IMAGE_TOKEN} placeholder(s) but {wanted} image(s)"
            )));
        }
        let named = self
            .regions
            .iter()
            .filter(|r| matches!(r, Region::Name(_)))
            .count();
        if self.image.is_some() && named > 0 {
            return Err(fail(
                "gives a region by name beside an image; give its geometry instead".into(),
            ));
        }
        if self.image.is_none() && named != self.regions.len() {
            return Err(fail(
                "has regions with geometry but no image; give the image, or name each region"
                    .into(),
            ));
        }
        let regions = self.region_placeholders();
        if regions != self.regions.len() {
            return Err(fail(format!(
                "has {regions} {REGION_TOKEN} placeholder(s) but {} region(s)",
                self.regions.len()
            )));
        }
        Ok(())
    }

    pub fn region_placeholders(&self) -> usize {
        self.conversations
            .iter()
            .map(|t| t.value.matches(REGION_TOKEN).count())
            .sum()
    }
}

/// Reads a JSON-lines file of samples lazily, naming file and line in
/// errors. Blank lines are skipped.
pub fn read_samples(
    path: &Path,
) -> Result<impl Iterator<Item = Result<Sample, DataError>>, DataError> {
    let file = File::open(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let path = path.to_path_buf();
    Ok(BufReader::new(file)
        .lines()
        .enumerate()
        .filter_map(move |(i, line)| match line {
            Err(source) => Some(Err(DataError::Io {
                path: path.clone(),
                source,
            })),
            Ok(line) if line.trim().is_empty() => None,
            Ok(line) => {
                Some(
                    serde_json::from_str::<Sample>(&line).map_err(|e| DataError::JsonLine {
                        path: path.clone(),
                        line: i + 1,
                        message: e.to_string(),
                    }),
                )
            }
        }))
}

/// Reads every sample of a JSON-lines file.
pub fn read_all_samples(path: &Path) -> Result<Vec<Sample>, DataError> {
    read_samples(path)?.collect()
}

/// The image root a samples file implies when none is given: its directory.
pub fn default_image_root(samples_file: &Path) -> PathBuf {
    samples_file
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Writes JSON lines to `PATH.tmp` and renames it onto `PATH` on
/// [`JsonlWriter::finish`], so a reader never sees half a file and an
/// interrupted run leaves the old file in place.
pub struct JsonlWriter {
    path: PathBuf,
    tmp: PathBuf,
    out: BufWriter<File>,
    written: u64,
}

impl JsonlWriter {
    pub fn create(path: &Path) -> Result<Self, DataError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| DataError::Write {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let file = File::create(&tmp).map_err(|source| DataError::Write {
            path: tmp.clone(),
            source,
        })?;
        Ok(JsonlWriter {
            path: path.to_path_buf(),
            tmp,
            out: BufWriter::new(file),
            written: 0,
        })
    }

    pub fn write<T: Serialize>(&mut self, record: &T) -> Result<(), DataError> {
        let fail = |source| DataError::Write {
            path: self.tmp.clone(),
            source,
        };
        serde_json::to_writer(&mut self.out, record).map_err(|e| fail(e.into()))?;
        self.out.write_all(b"\n").map_err(fail)?;
        self.written += 1;
        Ok(())
    }

    pub fn written(&self) -> u64 {
        self.written
    }

    /// Flushes, syncs and moves the file into place; returns the count.
    pub fn finish(self) -> Result<u64, DataError> {
        let fail = |source| DataError::Write {
            path: self.tmp.clone(),
            source,
        };
        let file = self.out.into_inner().map_err(|e| fail(e.into_error()))?;
        file.sync_all().map_err(fail)?;
        std::fs::rename(&self.tmp, &self.path).map_err(|source| DataError::Write {
            path: self.path.clone(),
            source,
        })?;
        Ok(self.written)
    }
}

/// Writes all `samples` to `path` atomically.
pub fn write_samples(path: &Path, samples: &[Sample]) -> Result<u64, DataError> {
    let mut writer = JsonlWriter::create(path)?;
    for sample in samples {
        writer.write(sample)?;
    }
    writer.finish()
}
