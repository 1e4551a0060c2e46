//! RefCOCOg (umd) as two tasks (paper Sec. 3.2, Table 1):
//!
//! - `refcocog-cap`: region -> referring expression, one region per turn.
//! - `refcocog-rec`: the image's objects are listed as candidate regions
//!   once, in the first question; each turn gives an expression and the
//!   answer is `Region [k].` (1-based, in candidate order), or "No
//!   corresponding options found." for an expression taken from another
//!   image about a category absent from this one (the negatives).
use std::collections::{BTreeMap, BTreeSet, HashMap};

use rand::seq::{IndexedRandom, SliceRandom};
use rand::Rng;
use serde_json::json;

use super::{first_question, seeded_rng, Built, RegionKind};
use crate::prompts::{fill, region_list, PromptBank};
use crate::readers::coco::{CocoAnnotation, CocoDataset};
use crate::readers::refcoco::RefRecord;
use crate::{DataError, Region, Sample, Turn};

#[derive(Debug, Clone)]
pub struct RefcocogOptions {
    /// Which `split` of refs to use (`train`, `val`, `test`).
    pub split: String,
    pub region_kind: RegionKind,
    /// Turns per conversation.
    pub max_turns: usize,
    /// REC: candidates per image (referred objects first, then others).
    pub max_candidates: usize,
    /// REC: chance that a conversation gets a no-match turn.
    pub negative_probability: f64,
    pub seed: u64,
}

impl Default for RefcocogOptions {
    fn default() -> Self {
        RefcocogOptions {
            split: "train".into(),
            region_kind: RegionKind::Mask,
            max_turns: 10,
            max_candidates: 8,
            negative_probability: 0.3,
            seed: 0,
        }
    }
}

/// The refs of one split whose annotation and image exist, grouped by
/// image; the rest are counted.
struct Joined<'a> {
    by_image: BTreeMap<u64, Vec<(&'a RefRecord, &'a CocoAnnotation)>>,
    built: Built,
}

fn join<'a>(
    instances: &'a CocoDataset,
    refs: &'a [RefRecord],
    options: &RefcocogOptions,
) -> Joined<'a> {
    let annotations = instances.annotations_by_id();
    let images = instances.images_by_id();
    let mut built = Built::default();
    let mut by_image: BTreeMap<u64, Vec<(&RefRecord, &CocoAnnotation)>> = BTreeMap::new();
    for r in refs.iter().filter(|r| r.split == options.split) {
        let example = format!("ref {}", r.ref_id);
        let Some(&ann) = annotations.get(&r.ann_id) else {
            built
                .skips
                .add("ref's annotation missing from instances.json", example);
            continue;
        };
        let reason = if !images.contains_key(&r.image_id) {
            Some("ref's image missing from instances.json")
        } else if r.sentences.iter().all(|s| s.sent.trim().is_empty()) {
            Some("ref without a sentence")
        } else if options.region_kind == RegionKind::Mask && ann.mask_region().is_none() {
            Some("no segmentation for a mask region")
        } else {
            ann.defect()
        };
        match reason {
            Some(reason) => built.skips.add(reason, example),
            None => by_image.entry(r.image_id).or_default().push((r, ann)),
        }
    }
    Joined { by_image, built }
}

fn region_of(ann: &CocoAnnotation, kind: RegionKind) -> Region {
    match kind {
        RegionKind::Box => ann.box_region(),
        RegionKind::Mask => ann.mask_region().unwrap_or_else(|| ann.box_region()),
    }
}

fn sentence<'r, R: Rng>(r: &'r RefRecord, rng: &mut R) -> &'r str {
    let usable: Vec<&str> = r
        .sentences
        .iter()
        .map(|s| s.sent.trim())
        .filter(|s| !s.is_empty())
        .collect();
    usable.choose(rng).copied().unwrap_or_default()
}

pub fn build_refcocog_caption(
    instances: &CocoDataset,
    refs: &[RefRecord],
    prompts: &PromptBank,
    options: &RefcocogOptions,
) -> Result<Built, DataError> {
    let images = instances.images_by_id();
    let Joined {
        by_image,
        mut built,
    } = join(instances, refs, options);
    let mut rng = seeded_rng(options.seed);
    for (image_id, mut pairs) in by_image {
        let image = images[&image_id];
        pairs.shuffle(&mut rng);
        for (chunk_index, chunk) in pairs.chunks(options.max_turns.max(1)).enumerate() {
            let mut conversations = Vec::new();
            for (turn, (r, _)) in chunk.iter().enumerate() {
                let question = prompts.pick("region_caption_brief", &mut rng)?;
                conversations.push(Turn::human(if turn == 0 {
                    first_question(question, None)
                } else {
                    question.to_string()
                }));
                conversations.push(Turn::gpt(sentence(r, &mut rng)));
            }
            built.samples.push(Sample {
                id: format!("refcocog-cap/{image_id}/{chunk_index}"),
                image: Some(image.file_name.clone()),
                width: Some(image.width),
                height: Some(image.height),
                regions: chunk
                    .iter()
                    .map(|(_, ann)| region_of(ann, options.region_kind))
                    .collect(),
                conversations,
                task: "refcocog-cap".into(),
                meta: Some(json!({
                    "ref_ids": chunk.iter().map(|(r, _)| r.ref_id).collect::<Vec<_>>(),
                    "references": chunk.iter().map(|(r, _)| {
                        r.sentences.iter().map(|s| s.sent.clone()).collect::<Vec<_>>()
                    }).collect::<Vec<_>>(),
                })),
            });
        }
    }
    Ok(built)
}

pub fn build_refcocog_rec(
    instances: &CocoDataset,
    refs: &[RefRecord],
    prompts: &PromptBank,
    options: &RefcocogOptions,
) -> Result<Built, DataError> {
    if options.max_candidates < 2 {
        return Err(DataError::InvalidArgument(
            "REC needs at least 2 candidate regions per image".into(),
        ));
    }
    let rec_guide = prompts.guide("rec")?;
    let no_match = prompts.guide("rec_no_match")?;
    let answer_template = prompts.guide("rec_answer")?;
    let images = instances.images_by_id();
    let mut image_annotations: HashMap<u64, Vec<&CocoAnnotation>> = HashMap::new();
    for ann in &instances.annotations {
        if ann.iscrowd == 0 && ann.defect().is_none() {
            image_annotations.entry(ann.image_id).or_default().push(ann);
        }
    }
    let Joined {
        by_image,
        mut built,
    } = join(instances, refs, options);
    // Negatives come from refs of other images (any split: only the
    // expression is used) about categories absent from the image.
    let all_refs: Vec<&RefRecord> = refs
        .iter()
        .filter(|r| r.sentences.iter().any(|s| !s.sent.trim().is_empty()))
        .collect();
    let mut rng = seeded_rng(options.seed);
    for (image_id, mut pairs) in by_image {
        let image = images[&image_id];
        pairs.sort_by_key(|(r, _)| r.ref_id);
        pairs.shuffle(&mut rng);
        // Candidates: each referred object once, then other objects of the
        // image, up to the cap.
        let mut candidates: Vec<&CocoAnnotation> = Vec::new();
        for (_, ann) in &pairs {
            if !candidates.iter().any(|c| c.id == ann.id) {
                candidates.push(ann);
            }
        }
        if candidates.len() > options.max_candidates {
            for (r, _) in pairs.iter().filter(|(_, ann)| {
                candidates
                    .iter()
                    .position(|c| c.id == ann.id)
                    .is_some_and(|p| p >= options.max_candidates)
            }) {
                built.skips.add(
                    "referred object beyond the candidate cap",
                    format!("ref {}", r.ref_id),
                );
            }
            candidates.truncate(options.max_candidates);
        }
        let mut others: Vec<&CocoAnnotation> = image_annotations
            .get(&image_id)
            .map(|anns| {
                anns.iter()
                    .copied()
                    .filter(|a| !candidates.iter().any(|c| c.id == a.id))
                    .filter(|a| options.region_kind == RegionKind::Box || a.mask_region().is_some())
                    .collect()
            })
            .unwrap_or_default();
        others.sort_by_key(|a| a.id);
        others.shuffle(&mut rng);
        let room = options.max_candidates - candidates.len();
        candidates.extend(others.into_iter().take(room));
        candidates.shuffle(&mut rng);
        let position = |ann: &CocoAnnotation| candidates.iter().position(|c| c.id == ann.id);

        // Turns: (expression, 1-based target or None for no match).
        let mut turns: Vec<(String, Option<usize>)> = pairs
            .iter()
            .filter_map(|(r, ann)| {
                position(ann).map(|p| (sentence(r, &mut rng).to_string(), Some(p + 1)))
            })
            .take(options.max_turns.max(1))
            .collect();
        if rng.random_bool(options.negative_probability.clamp(0.0, 1.0)) {
            let present: BTreeSet<u64> = candidates.iter().map(|a| a.category_id).collect();
            let pool: Vec<&&RefRecord> = all_refs
                .iter()
                .filter(|r| r.image_id != image_id && !present.contains(&r.category_id))
                .collect();
            if let Some(negative) = pool.choose(&mut rng) {
                let at = rng.random_range(0..=turns.len());
                turns.insert(at, (sentence(negative, &mut rng).to_string(), None));
            }
        }
        let listed = region_list(candidates.len());
        let mut conversations = Vec::new();
        let mut answers = Vec::new();
        for (turn, (expr, target)) in turns.iter().enumerate() {
            let question = if turn == 0 {
                let q = fill(
                    prompts.pick("rec_question", &mut rng)?,
                    &[("regions", &listed), ("expr", expr)],
                );
                first_question(&q, Some(rec_guide))
            } else {
                fill(prompts.pick("rec_followup", &mut rng)?, &[("expr", expr)])
            };
            let answer = match target {
                Some(k) => fill(answer_template, &[("index", &k.to_string())]),
                None => no_match.to_string(),
            };
            conversations.push(Turn::human(question));
            conversations.push(Turn::gpt(answer.clone()));
            answers.push(answer);
        }
        built.samples.push(Sample {
            id: format!("refcocog-rec/{image_id}"),
            image: Some(image.file_name.clone()),
            width: Some(image.width),
            height: Some(image.height),
            regions: candidates
                .iter()
                .map(|ann| region_of(ann, options.region_kind))
                .collect(),
            conversations,
            task: "refcocog-rec".into(),
            meta: Some(json!({
                "answers": answers,
                "targets": turns.iter().map(|(_, t)| *t).collect::<Vec<_>>(),
                "candidate_annotation_ids": candidates.iter().map(|a| a.id).collect::<Vec<_>>(),
            })),
        });
    }
    Ok(built)
}

/// A detection proposal, as detectors write COCO results
/// (`[{"image_id", "bbox": [x, y, w, h], "score"}]`).
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Proposal {
    pub image_id: u64,
    pub bbox: [f64; 4],
    #[serde(default)]
    pub score: f64,
}

/// Reads a proposals file in the COCO results layout.
pub fn read_proposals(path: &std::path::Path) -> Result<Vec<Proposal>, DataError> {
    crate::readers::read_json(path, "proposals JSON (COCO results layout)")
}

/// REC evaluation with proposals (paper Table 5's protocol): one question
/// per sentence, the candidates are the image's proposals (the
/// `max_candidates` best by score), with the ground-truth box added when
/// no proposal reaches IoU 0.5 with it; the target is the candidate of
/// highest IoU with the ground truth, and any candidate with IoU >= 0.5
/// counts as right when scored.
pub fn build_refcocog_rec_eval(
    instances: &CocoDataset,
    refs: &[RefRecord],
    proposals: &[Proposal],
    prompts: &PromptBank,
    options: &RefcocogOptions,
) -> Result<Built, DataError> {
    let rec_guide = prompts.guide("rec")?;
    let answer_template = prompts.guide("rec_answer")?;
    let images = instances.images_by_id();
    let mut by_image: HashMap<u64, Vec<&Proposal>> = HashMap::new();
    for p in proposals {
        by_image.entry(p.image_id).or_default().push(p);
    }
    for list in by_image.values_mut() {
        list.sort_by(|a, b| {
            b.score
                .partial_cmp(&a.score)
                .unwrap_or(std::cmp::Ordering::Equal)
        });
        list.truncate(options.max_candidates.max(1));
    }
    let boxes_options = RefcocogOptions {
        region_kind: RegionKind::Box,
        ..options.clone()
    };
    let Joined {
        by_image: refs_by_image,
        mut built,
    } = join(instances, refs, &boxes_options);
    let mut rng = seeded_rng(options.seed);
    for (image_id, pairs) in refs_by_image {
        let image = images[&image_id];
        let mut candidates: Vec<[f64; 4]> = by_image
            .get(&image_id)
            .map(|list| list.iter().map(|p| p.bbox).collect())
            .unwrap_or_default();
        for (r, ann) in &pairs {
            let iou = |c: &[f64; 4]| rgpt_region::iou::bbox_iou_one(*c, ann.bbox, false);
            if !candidates.iter().any(|c| iou(c) >= 0.5) {
                candidates.push(ann.bbox);
                built.skips.add(
                    "ground truth added: no proposal reaches IoU 0.5",
                    format!("ref {}", r.ref_id),
                );
            }
        }
        let listed = region_list(candidates.len());
        for (r, ann) in &pairs {
            let target = candidates
                .iter()
                .enumerate()
                .map(|(i, c)| (i, rgpt_region::iou::bbox_iou_one(*c, ann.bbox, false)))
                .max_by(|a, b| a.1.partial_cmp(&b.1).unwrap_or(std::cmp::Ordering::Equal))
                .map(|(i, _)| i + 1)
                .unwrap_or(1);
            for (s, sentence) in r.sentences.iter().enumerate() {
                let expr = sentence.sent.trim();
                if expr.is_empty() {
                    continue;
                }
                let question = fill(
                    prompts.pick("rec_question", &mut rng)?,
                    &[("regions", &listed), ("expr", expr)],
                );
                let answer = fill(answer_template, &[("index", &target.to_string())]);
                built.samples.push(Sample {
                    id: format!("refcocog-rec/{}/{s}", r.ref_id),
                    image: Some(image.file_name.clone()),
                    width: Some(image.width),
                    height: Some(image.height),
                    regions: candidates
                        .iter()
                        .map(|b| Region::from_coco_bbox(*b))
                        .collect(),
                    conversations: vec![
                        Turn::human(first_question(&question, Some(rec_guide))),
                        Turn::gpt(answer.clone()),
                    ],
                    task: "refcocog-rec".into(),
                    meta: Some(json!({
                        "answers": [answer],
                        "targets": [target],
                        "ref_id": r.ref_id,
                        "ground_truth": ann.bbox,
                    })),
                });
            }
        }
    }
    Ok(built)
}
