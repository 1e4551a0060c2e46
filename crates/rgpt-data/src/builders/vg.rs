//! Visual Genome region captioning (paper Sec. 3.2): up to 10 regions per
//! image, sampled at random, as a multi-turn conversation whose answers are
//! the regions' phrases.
use rand::seq::SliceRandom;
use serde_json::json;

use super::{first_question, seeded_rng, Built};
use crate::prompts::PromptBank;
use crate::readers::vg::{for_each_region_image, VgRegion};
use crate::{DataError, Sample, Turn};

#[derive(Debug, Clone)]
pub struct VgOptions {
    pub max_regions: usize,
    /// Prefixed to `{image_id}.jpg` (e.g. `VG_100K/`).
    pub image_prefix: String,
    pub seed: u64,
}

impl Default for VgOptions {
    fn default() -> Self {
        VgOptions {
            max_regions: 10,
            image_prefix: String::new(),
            seed: 0,
        }
    }
}

pub fn build_vg(
    region_descriptions: &std::path::Path,
    prompts: &PromptBank,
    options: &VgOptions,
) -> Result<Built, DataError> {
    if options.max_regions == 0 {
        return Err(DataError::InvalidArgument(
            "max regions per image must be at least 1".into(),
        ));
    }
    let mut rng = seeded_rng(options.seed);
    let mut built = Built::default();
    for_each_region_image(region_descriptions, |image| {
        let mut regions: Vec<&VgRegion> = Vec::new();
        for region in &image.regions {
            let reason = if !(region.width >= 1.0 && region.height >= 1.0) {
                Some("degenerate box (width or height under 1 px)")
            } else if region.phrase.trim().is_empty() {
                Some("empty phrase")
            } else {
                None
            };
            match reason {
                Some(reason) => built
                    .skips
                    .add(reason, format!("region {}", region.region_id)),
                None => regions.push(region),
            }
        }
        if regions.is_empty() {
            built.skips.add(
                "image without a usable region",
                format!("image {}", image.id),
            );
            return Ok(());
        }
        regions.shuffle(&mut rng);
        for region in regions.iter().skip(options.max_regions) {
            built.skips.add(
                "beyond the regions-per-image cap",
                format!("region {}", region.region_id),
            );
        }
        regions.truncate(options.max_regions);
        let mut conversations = Vec::new();
        for (turn, region) in regions.iter().enumerate() {
            let question = prompts.pick("region_caption_brief", &mut rng)?;
            conversations.push(Turn::human(if turn == 0 {
                first_question(question, None)
            } else {
                question.to_string()
            }));
            conversations.push(Turn::gpt(region.phrase.trim()));
        }
        built.samples.push(Sample {
            id: format!("vg/{}", image.id),
            image: Some(format!("{}{}.jpg", options.image_prefix, image.id)),
            width: None,
            height: None,
            regions: regions.iter().map(|r| r.region()).collect(),
            conversations,
            task: "vg".into(),
            meta: Some(json!({
                "region_ids": regions.iter().map(|r| r.region_id).collect::<Vec<_>>(),
            })),
        });
        Ok(())
    })?;
    Ok(built)
}
