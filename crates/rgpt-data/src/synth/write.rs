//! Writing a world to disk: images rendered in parallel to
//! `images/NNNNNN.png`, one JSON-lines file per task, and `objects.jsonl`
//! with every image's ground truth. Work is done in chunks whose results
//! are written in index order, so the files are the same whatever the
//! thread count, and memory stays bounded however many images there are.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use image::codecs::png::PngEncoder;
use image::{ExtendedColorType, ImageEncoder};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::scene::{SynthImage, SynthObject};
use super::tasks::{check_prompts, image_path, samples_for_image, SynthSamples, TASKS};
use super::text::{as_text, TextRegions, TEXT_TASKS};
use super::SynthWorld;
use crate::format::{JsonlWriter, Region, Sample, REGION_NAMES_META};
use crate::prompts::PromptBank;
use crate::DataError;

/// Images rendered per parallel batch.
const CHUNK: u64 = 512;
/// The ground-truth file.
pub const OBJECTS_FILE: &str = "objects.jsonl";

/// One line of `objects.jsonl`: an image and its objects, back to front.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageObjects {
    pub image: String,
    pub width: u32,
    pub height: u32,
    pub objects: Vec<SynthObject>,
}

/// What a world run wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SynthSummary {
    pub out_dir: PathBuf,
    pub images: u64,
    pub objects: u64,
    /// Samples written per task.
    pub samples: BTreeMap<String, u64>,
}

/// The JSON-lines file of `task` under `out_dir`.
pub fn task_file(out_dir: &Path, task: &str) -> PathBuf {
    out_dir.join(format!("{task}.jsonl"))
}

/// The text form of `task` under `out_dir` (written with `text: true`).
pub fn text_task_file(out_dir: &Path, task: &str) -> PathBuf {
    out_dir.join("text").join(format!("{task}.jsonl"))
}

impl SynthWorld {
    /// Renders `config.images` images and their samples under `out_dir`.
    pub fn write(&self, prompts: &PromptBank, out_dir: &Path) -> Result<SynthSummary, DataError> {
        check_prompts(prompts)?;
        let total = self.config().images;
        let _span =
            tracing::info_span!("synth_world", images = total, out = %out_dir.display()).entered();
        let images_dir = out_dir.join("images");
        std::fs::create_dir_all(&images_dir).map_err(|source| DataError::Write {
            path: images_dir.clone(),
            source,
        })?;
        let mut objects_out = JsonlWriter::create(&out_dir.join(OBJECTS_FILE))?;
        let mut task_out = TASKS
            .iter()
            .map(|task| JsonlWriter::create(&task_file(out_dir, task)))
            .collect::<Result<Vec<_>, _>>()?;
        let mut text_out = if self.config().text {
            let dir = out_dir.join("text");
            std::fs::create_dir_all(&dir).map_err(|source| DataError::Write {
                path: dir.clone(),
                source,
            })?;
            TEXT_TASKS
                .iter()
                .map(|task| JsonlWriter::create(&text_task_file(out_dir, task)))
                .collect::<Result<Vec<_>, _>>()?
        } else {
            Vec::new()
        };
        let mut objects = 0u64;
        for start in (0..total).step_by(CHUNK as usize) {
            let end = total.min(start + CHUNK);
            type Rendered = (SynthImage, SynthSamples, Vec<Vec<Sample>>);
            let rendered: Vec<Result<Rendered, DataError>> = (start..end)
                .into_par_iter()
                .map(|index| {
                    let image = self.generate_image(index);
                    write_png(&image, &out_dir.join(image_path(index)))?;
                    let mut samples = samples_for_image(&image, self.config(), prompts)?;
                    let text = if self.config().text {
                        text_forms(&samples, &image, self.config().text_regions)?
                    } else {
                        Vec::new()
                    };
                    if self.config().text && self.config().text_regions.is_named() {
                        record_region_names(&mut samples, &text);
                    }
                    Ok((image, samples, text))
                })
                .collect();
            // The first failure in index order, whatever thread hit it first.
            for result in rendered {
                let (image, samples, text) = result?;
                objects += image.objects.len() as u64;
                for (out, task_text) in text_out.iter_mut().zip(&text) {
                    for sample in task_text {
                        out.write(sample)?;
                    }
                }
                objects_out.write(&ImageObjects {
                    image: image_path(image.index),
                    width: image.rgb.width(),
                    height: image.rgb.height(),
                    objects: image.objects,
                })?;
                for (out, (_, task_samples)) in task_out.iter_mut().zip(samples.by_task()) {
                    for sample in task_samples {
                        out.write(sample)?;
                    }
                }
            }
            tracing::info!(done = end, total, "synthetic images rendered");
        }
        objects_out.finish()?;
        let mut samples = BTreeMap::new();
        for (task, out) in TASKS.iter().zip(task_out) {
            samples.insert(task.to_string(), out.finish()?);
        }
        for (task, out) in TEXT_TASKS.iter().zip(text_out) {
            samples.insert(format!("text-{task}"), out.finish()?);
        }
        Ok(SynthSummary {
            out_dir: out_dir.to_path_buf(),
            images: total,
            objects,
            samples,
        })
    }
}

/// The text form of each of [`TEXT_TASKS`]' samples of one image, in
/// that order.
fn text_forms(
    samples: &SynthSamples,
    image: &SynthImage,
    regions: TextRegions,
) -> Result<Vec<Vec<Sample>>, DataError> {
    let by_task = samples.by_task();
    TEXT_TASKS
        .iter()
        .map(|task| {
            by_task
                .iter()
                .filter(|(name, _)| name == task)
                .flat_map(|(_, task_samples)| task_samples.iter())
                .map(|sample| as_text(sample, image, regions))
                .collect()
        })
        .collect()
}

/// Gives each image sample of [`TEXT_TASKS`] the names its text twin
/// gives its regions (`meta.region_names`), so a stage can align the
/// image's region embeddings with the codes the text stages taught.
fn record_region_names(samples: &mut SynthSamples, text: &[Vec<Sample>]) {
    let image_samples: [&mut [Sample]; 4] = [
        std::slice::from_mut(&mut samples.shape),
        std::slice::from_mut(&mut samples.color),
        &mut samples.captions,
        std::slice::from_mut(&mut samples.rec),
    ];
    for (image_samples, twins) in image_samples.into_iter().zip(text) {
        for (sample, twin) in image_samples.iter_mut().zip(twins) {
            let names: Vec<&str> = twin
                .regions
                .iter()
                .filter_map(|region| match region {
                    Region::Name(name) => Some(name.as_str()),
                    _ => None,
                })
                .collect();
            if let Some(serde_json::Value::Object(meta)) = sample.meta.as_mut() {
                meta.insert(REGION_NAMES_META.into(), names.into());
            }
        }
    }
}

/// Writes the image as PNG to `PATH.tmp` and renames it onto `path`, so a
/// reader never sees half an image.
fn write_png(image: &SynthImage, path: &Path) -> Result<(), DataError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut png = Vec::new();
    PngEncoder::new(&mut png)
        .write_image(
            image.rgb.as_raw(),
            image.rgb.width(),
            image.rgb.height(),
            ExtendedColorType::Rgb8,
        )
        .map_err(|e| DataError::Write {
            path: path.to_path_buf(),
            source: std::io::Error::other(e),
        })?;
    std::fs::write(&tmp, png).map_err(|source| DataError::Write {
        path: tmp.clone(),
        source,
    })?;
    std::fs::rename(&tmp, path).map_err(|source| DataError::Write {
        path: path.to_path_buf(),
        source,
    })
}
