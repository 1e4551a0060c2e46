//! Closed-set region classification from a COCO-format file: COCO-2017
//! (`coco-cls`, 20 boxes per category, task-guided prompt "Answer the
//! question using COCO-80 category names.") and V3Det (`v3det-cls`, 100
//! boxes per category in pre-training, 10 in fine-tuning). Categories are
//! balanced by keeping at most `per_category` annotations of each, chosen
//! at random; the kept annotations of one image form one conversation,
//! one region per turn (paper Table 1).
use std::collections::BTreeMap;

use rand::seq::SliceRandom;
use serde_json::json;

use super::{first_question, seeded_rng, Built, RegionKind};
use crate::prompts::PromptBank;
use crate::readers::coco::{CocoAnnotation, CocoDataset};
use crate::{DataError, Sample, Turn};

#[derive(Debug, Clone)]
pub struct ClassificationOptions {
    /// The `task` of the samples (`coco-cls`, `v3det-cls`).
    pub task: String,
    pub per_category: usize,
    /// The `guides` entry appended to the first question, if any.
    pub guide: Option<String>,
    pub region_kind: RegionKind,
    /// Turns per conversation; an image with more kept regions gives
    /// several conversations.
    pub max_regions_per_sample: usize,
    pub seed: u64,
}

impl ClassificationOptions {
    /// The paper's COCO-2017 fine-tuning set.
    pub fn coco() -> Self {
        ClassificationOptions {
            task: "coco-cls".into(),
            per_category: 20,
            guide: Some("coco".into()),
            region_kind: RegionKind::Box,
            max_regions_per_sample: 10,
            seed: 0,
        }
    }

    /// V3Det with `per_category` boxes of each category (100 or 10).
    pub fn v3det(per_category: usize) -> Self {
        ClassificationOptions {
            task: "v3det-cls".into(),
            per_category,
            guide: None,
            ..ClassificationOptions::coco()
        }
    }
}

pub fn build_classification(
    dataset: &CocoDataset,
    prompts: &PromptBank,
    options: &ClassificationOptions,
) -> Result<Built, DataError> {
    if options.per_category == 0 || options.max_regions_per_sample == 0 {
        return Err(DataError::InvalidArgument(
            "per-category and regions-per-sample counts must be at least 1".into(),
        ));
    }
    let guide = options
        .guide
        .as_deref()
        .map(|name| prompts.guide(name))
        .transpose()?;
    let images = dataset.images_by_id();
    let categories = dataset.categories_by_id();
    let mut built = Built::default();
    let mut by_category: BTreeMap<u64, Vec<&CocoAnnotation>> = BTreeMap::new();
    for ann in &dataset.annotations {
        let reason = if ann.iscrowd != 0 {
            Some("crowd annotation")
        } else if !categories.contains_key(&ann.category_id) {
            Some("unknown category")
        } else if !images.contains_key(&ann.image_id) {
            Some("unknown image")
        } else if options.region_kind == RegionKind::Mask && ann.mask_region().is_none() {
            Some("no segmentation for a mask region")
        } else {
            ann.defect()
        };
        match reason {
            Some(reason) => built.skips.add(reason, format!("annotation {}", ann.id)),
            None => by_category.entry(ann.category_id).or_default().push(ann),
        }
    }
    let mut rng = seeded_rng(options.seed);
    let mut kept: BTreeMap<u64, Vec<&CocoAnnotation>> = BTreeMap::new();
    for (_, mut anns) in by_category {
        anns.sort_by_key(|a| a.id);
        anns.shuffle(&mut rng);
        for ann in anns.iter().skip(options.per_category) {
            built.skips.add(
                "over the per-category cap",
                format!("annotation {}", ann.id),
            );
        }
        for ann in anns.into_iter().take(options.per_category) {
            kept.entry(ann.image_id).or_default().push(ann);
        }
    }
    for (image_id, mut anns) in kept {
        let image = images[&image_id];
        anns.sort_by_key(|a| a.id);
        anns.shuffle(&mut rng);
        for (chunk_index, chunk) in anns.chunks(options.max_regions_per_sample).enumerate() {
            let mut conversations = Vec::with_capacity(chunk.len() * 2);
            let mut regions = Vec::with_capacity(chunk.len());
            let mut answers = Vec::with_capacity(chunk.len());
            for (turn, ann) in chunk.iter().enumerate() {
                let question = prompts.pick("region_classification", &mut rng)?;
                conversations.push(Turn::human(if turn == 0 {
                    first_question(question, guide)
                } else {
                    question.to_string()
                }));
                let name = categories[&ann.category_id].name.clone();
                conversations.push(Turn::gpt(name.clone()));
                answers.push(name);
                regions.push(match options.region_kind {
                    RegionKind::Box => ann.box_region(),
                    RegionKind::Mask => ann.mask_region().unwrap_or_else(|| ann.box_region()),
                });
            }
            built.samples.push(Sample {
                id: format!("{}/{image_id}/{chunk_index}", options.task),
                image: Some(image.file_name.clone()),
                width: Some(image.width),
                height: Some(image.height),
                regions,
                conversations,
                task: options.task.clone(),
                meta: Some(json!({
                    "answers": answers,
                    "annotation_ids": chunk.iter().map(|a| a.id).collect::<Vec<_>>(),
                })),
            });
        }
    }
    Ok(built)
}
