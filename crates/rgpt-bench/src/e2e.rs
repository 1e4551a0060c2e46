//! End to end, as a user waits for it: a 336 px image and three box regions
//! (the image preprocessed, through the tower and the refiner, the regions
//! pooled and projected, the prompt spliced and read), then generation of
//! a fixed number of tokens. Time to the first token counts everything up
//! to the first generated token; decode tokens per second the rest.
use std::cell::Cell;
use std::time::Instant;

use rgpt_llm::generation::GenerationConfig;
use rgpt_model::rgpt::{RegionGpt, RegionPrompt};
use rgpt_model::ModelError;
use rgpt_region::RegionSpec;
use rgpt_vision::preprocess::{PreprocessorConfig, RgbImage};
use serde::Serialize;

use crate::timing::{median, synchronize};
use crate::BenchError;

/// The prompt an e2e run asks with: its ids (one image placeholder and a
/// region placeholder per region) and the region placeholder's id.
pub struct E2ePrompt {
    pub prompt_ids: Vec<i64>,
    pub region_token_id: i64,
}

#[derive(Debug, Clone)]
pub struct E2eOptions {
    pub image_size: u32,
    pub new_tokens: usize,
    pub runs: usize,
}

impl Default for E2eOptions {
    fn default() -> Self {
        E2eOptions {
            image_size: 336,
            new_tokens: 64,
            runs: 3,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct E2eReport {
    pub image_size: u32,
    pub regions: usize,
    pub prompt_ids: usize,
    pub new_tokens: usize,
    /// Median over runs, from the image in memory to the first token.
    pub ttft_ms: f64,
    /// Median over runs of tokens per second after the first.
    pub decode_tokens_per_s: f64,
    /// Median over runs of the whole answer.
    pub total_ms: f64,
}

/// The image (a colour gradient) and its three boxes: a tenth, a third
/// and two thirds of its side.
fn image_and_regions(size: u32) -> (RgbImage, Vec<RegionSpec>) {
    let image = RgbImage::from_fn(size, size, |x, y| {
        image::Rgb([(x * 255 / size) as u8, (y * 255 / size) as u8, 128])
    });
    let side = f64::from(size);
    let regions = [0.1, 1.0 / 3.0, 2.0 / 3.0]
        .iter()
        .map(|f| {
            let (a, b) = (side * (1.0 - f) / 2.0, side * (1.0 + f) / 2.0);
            RegionSpec::from_xyxy(a, a, b, b)
        })
        .collect();
    (image, regions)
}

/// Runs the e2e benchmark: `options.runs` timed answers after one untimed.
pub fn run(
    model: &RegionGpt,
    preprocessor: &PreprocessorConfig,
    prompt: &E2ePrompt,
    options: &E2eOptions,
) -> Result<E2eReport, BenchError> {
    let (image, regions) = image_and_regions(options.image_size);
    let placeholders = prompt
        .prompt_ids
        .iter()
        .filter(|&&id| id == prompt.region_token_id)
        .count();
    if placeholders != regions.len() {
        return Err(BenchError::Invalid(format!(
            "the prompt has {placeholders} region placeholders for {} regions",
            regions.len()
        )));
    }
    let config = GenerationConfig {
        max_new_tokens: options.new_tokens.max(2),
        ignore_eos: true,
        ..GenerationConfig::default()
    };
    let device = model.device();
    let _guard = tch::no_grad_guard();
    let (mut ttfts, mut rates, mut totals) = (Vec::new(), Vec::new(), Vec::new());
    for run in 0..=options.runs.max(1) {
        synchronize(device);
        let started = Instant::now();
        let first = Cell::new(None);
        let processed = preprocessor.preprocess(&image).map_err(ModelError::from)?;
        let pixel_values = processed.pixel_values.unsqueeze(0).to_device(device);
        let request = RegionPrompt {
            prompt_ids: &prompt.prompt_ids,
            pixel_values: &pixel_values,
            transform: &processed.transform,
            regions: &regions,
        };
        let output = model.generate(
            &request,
            prompt.region_token_id,
            &config,
            None,
            &mut |_, _| {
                if first.get().is_none() {
                    first.set(Some(started.elapsed().as_secs_f64()));
                }
            },
        )?;
        synchronize(device);
        let total = started.elapsed().as_secs_f64();
        if run > 0 {
            let ttft = first.get().unwrap_or(total);
            ttfts.push(ttft * 1e3);
            totals.push(total * 1e3);
            let generated = output.sequences[0].token_ids.len();
            rates.push((generated.saturating_sub(1)) as f64 / (total - ttft));
        }
    }
    Ok(E2eReport {
        image_size: options.image_size,
        regions: regions.len(),
        prompt_ids: prompt.prompt_ids.len(),
        new_tokens: config.max_new_tokens,
        ttft_ms: median(&ttfts),
        decode_tokens_per_s: median(&rates),
        total_ms: median(&totals),
    })
}
