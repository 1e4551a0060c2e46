//! The training loader: samples of the conversation format become what
//! `RegionGpt::forward_train` takes. On worker threads, ahead of the
//! trainer, each sample is tokenised with the model's tokenizer and
//! conversation template (labels on the answers only, via
//! `rgpt_model::prompt::conversation_segments_with`, the checkpoint's way), its image decoded and
//! preprocessed, and its regions rasterised and checked against the image.
//! Samples are ordered by a seeded shuffle per epoch, split across ranks
//! (`rank`, `world_size`), and a run resumes from a position in that order.
//! A sample that cannot be prepared (missing image, bad region) is skipped
//! and counted, or is an error with `strict`. It lives with the trainer,
//! not in `rgpt-data`, because it is where samples meet the model's
//! tokenizer, template and preprocessing.
use std::path::PathBuf;
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::{Arc, Mutex};

use rand::seq::SliceRandom;
use rayon::prelude::*;
use rgpt_data::builders::seeded_rng;
use rgpt_data::format::{Region, Speaker, REGION_NAMES_META};
use rgpt_data::{DataError, Sample, Skips};
use rgpt_llm::{Conversation, Role, Template, Tokenizer};
use rgpt_model::prompt::{conversation_segments_with, Placeholders};
use rgpt_model::prompt_ids::PromptTokenization;
use rgpt_model::rgpt::{ExampleImage, TrainingExample};
use rgpt_model::splice::Segment;
use rgpt_region::{RegionSpec, Rle};
use rgpt_vision::preprocess::{load_image, ImageTransform, PreprocessorConfig};
use tch::Tensor;

use crate::TrainError;

#[derive(Debug, Clone)]
pub struct LoaderConfig {
    /// Sample `image` paths are relative to this directory.
    pub image_root: PathBuf,
    pub batch_size: usize,
    /// Threads preparing samples.
    pub workers: usize,
    /// Batches prepared ahead of the consumer.
    pub prefetch: usize,
    pub rank: usize,
    pub world_size: usize,
    /// Shuffle seed; each epoch reshuffles with `seed + epoch`. None keeps
    /// the file order.
    pub seed: Option<u64>,
    /// Fail on a sample that cannot be prepared instead of skipping it.
    pub strict: bool,
    /// Skip (and count) samples longer than this many tokens, counting an
    /// image as `image_tokens` tokens.
    pub max_tokens: Option<usize>,
    pub image_tokens: usize,
}

impl Default for LoaderConfig {
    fn default() -> Self {
        LoaderConfig {
            image_root: PathBuf::from("."),
            batch_size: 8,
            workers: 2,
            prefetch: 4,
            rank: 0,
            world_size: 1,
            seed: Some(0),
            strict: false,
            max_tokens: None,
            image_tokens: 576,
        }
    }
}

/// How a model reads prompts: its tokenizer, template, placeholders and
/// image preprocessing.
#[derive(Debug, Clone)]
pub struct PromptFormat {
    pub tokenizer: Tokenizer,
    pub template: Template,
    pub placeholders: Placeholders,
    /// How a rendered conversation becomes ids: the checkpoint's way, as
    /// generation prompts it ([`PromptTokenization::for_checkpoint`]).
    pub tokenization: PromptTokenization,
    pub preprocessor: PreprocessorConfig,
}

/// One sample, ready for `forward_train`.
#[derive(Debug)]
pub struct PreparedSample {
    /// Position in this rank's order for the epoch: resume after it.
    pub position: usize,
    pub id: String,
    pub task: String,
    pub segments: Vec<Segment>,
    /// [3, H, W] and how original pixels map onto it.
    pub image: Option<(Tensor, ImageTransform)>,
    /// Rasterised and checked on the image (as RLEs, so the model's own
    /// rasterisation is a decode).
    pub regions: Vec<RegionSpec>,
    /// The token ids of each region's name, for a sample without an image
    /// whose regions are given by name.
    pub region_names: Vec<Vec<i64>>,
    /// With an image: the token ids of the name each region should read as
    /// (`meta.region_names`, see [`REGION_NAMES_META`]); empty when the
    /// sample names none.
    pub region_targets: Vec<Vec<i64>>,
}

impl PreparedSample {
    pub fn as_example(&self) -> TrainingExample<'_> {
        TrainingExample {
            segments: &self.segments,
            image: self
                .image
                .as_ref()
                .map(|(pixel_values, transform)| ExampleImage {
                    pixel_values,
                    transform,
                }),
            regions: &self.regions,
            region_names: &self.region_names,
            region_targets: &self.region_targets,
        }
    }

    /// Tokens of text in the sample (placeholders excluded).
    pub fn text_tokens(&self) -> usize {
        self.segments
            .iter()
            .map(|s| match s {
                Segment::Text { ids, .. } => ids.len(),
                _ => 0,
            })
            .sum()
    }
}

#[derive(Debug)]
pub struct Batch {
    pub samples: Vec<PreparedSample>,
    /// The position to resume from after this batch.
    pub next_position: usize,
}

impl Batch {
    pub fn examples(&self) -> Vec<TrainingExample<'_>> {
        self.samples
            .iter()
            .map(PreparedSample::as_example)
            .collect()
    }
}

pub struct Loader {
    samples: Arc<Vec<Sample>>,
    format: Arc<PromptFormat>,
    config: LoaderConfig,
    pool: Arc<rayon::ThreadPool>,
    skips: Arc<Mutex<Skips>>,
}

impl Loader {
    pub fn new(
        samples: Vec<Sample>,
        format: PromptFormat,
        config: LoaderConfig,
    ) -> Result<Self, TrainError> {
        let invalid = |message| TrainError::Invalid {
            field: "loader",
            message,
        };
        if config.batch_size == 0 || config.workers == 0 {
            return Err(invalid(
                "the loader needs a batch size and a worker count of at least 1".into(),
            ));
        }
        if config.world_size == 0 || config.rank >= config.world_size {
            return Err(invalid(format!(
                "rank {} is not below world size {}",
                config.rank, config.world_size
            )));
        }
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(config.workers)
            .thread_name(|i| format!("rgpt-loader-{i}"))
            .build()
            .map_err(|e| invalid(format!("cannot start loader threads: {e}")))?;
        Ok(Loader {
            samples: Arc::new(samples),
            format: Arc::new(format),
            config,
            pool: Arc::new(pool),
            skips: Arc::new(Mutex::new(Skips::new())),
        })
    }

    /// This rank's sample indices for `epoch`, in order.
    pub fn order(&self, epoch: u64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.samples.len()).collect();
        if let Some(seed) = self.config.seed {
            order.shuffle(&mut seeded_rng(seed.wrapping_add(epoch)));
        }
        order
            .into_iter()
            .skip(self.config.rank)
            .step_by(self.config.world_size)
            .collect()
    }

    /// Samples of this rank per epoch.
    pub fn len(&self) -> usize {
        self.order(0).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// What was skipped so far.
    pub fn skips(&self) -> Skips {
        self.skips.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Prepares one sample (on the calling thread).
    pub fn prepare(&self, position: usize, index: usize) -> Result<PreparedSample, TrainError> {
        prepare(&self.samples[index], position, &self.format, &self.config)
    }

    /// Batches of `epoch` from `start` (a position in this rank's order),
    /// prepared on the worker threads while the consumer works. A skipped
    /// sample is counted in [`Loader::skips`]; batches stay full except the
    /// last.
    pub fn batches(&self, epoch: u64, start: usize) -> Receiver<Result<Batch, TrainError>> {
        let order = self.order(epoch);
        let (sender, receiver) = sync_channel(self.config.prefetch.max(1));
        let samples = Arc::clone(&self.samples);
        let format = Arc::clone(&self.format);
        let config = self.config.clone();
        let pool = Arc::clone(&self.pool);
        let skips = Arc::clone(&self.skips);
        std::thread::spawn(move || {
            let mut position = start.min(order.len());
            let mut pending: Vec<PreparedSample> = Vec::new();
            while position < order.len() {
                // Prepare a batch's worth (more if some get skipped).
                let want = config.batch_size - pending.len();
                let end = (position + want).min(order.len());
                let prepared: Vec<Result<PreparedSample, TrainError>> = pool.install(|| {
                    (position..end)
                        .into_par_iter()
                        .map(|p| prepare(&samples[order[p]], p, &format, &config))
                        .collect()
                });
                position = end;
                for result in prepared {
                    match result {
                        Ok(sample) => pending.push(sample),
                        Err(e) if !config.strict => {
                            if let Ok(mut skips) = skips.lock() {
                                skips.add(skip_reason(&e), e);
                            }
                        }
                        Err(e) => {
                            let _ = sender.send(Err(e));
                            return;
                        }
                    }
                }
                if pending.len() == config.batch_size || position == order.len() {
                    if pending.is_empty() {
                        break;
                    }
                    let batch = Batch {
                        samples: std::mem::take(&mut pending),
                        next_position: position,
                    };
                    if sender.send(Ok(batch)).is_err() {
                        return; // the consumer hung up
                    }
                }
            }
        });
        receiver
    }
}

fn skip_reason(error: &TrainError) -> &'static str {
    match error {
        TrainError::Data(DataError::Image { .. }) => "image missing or unreadable",
        TrainError::Data(DataError::Region { .. }) => "region invalid on its image",
        TrainError::Data(DataError::Sample { .. }) => "invalid sample",
        _ => "could not be prepared",
    }
}

/// The conversation of a sample, in the model's template.
pub fn conversation_of(sample: &Sample, template: Template) -> Conversation {
    let mut conversation = Conversation::new(template);
    for turn in &sample.conversations {
        let role = match turn.from {
            Speaker::Human => Role::User,
            Speaker::Gpt => Role::Assistant,
        };
        conversation.push(role, Some(turn.value.clone()));
    }
    conversation
}

fn prepare(
    sample: &Sample,
    position: usize,
    format: &PromptFormat,
    config: &LoaderConfig,
) -> Result<PreparedSample, TrainError> {
    sample.validate()?;
    let conversation = conversation_of(sample, format.template);
    let segments = conversation_segments_with(
        &format.tokenizer,
        &conversation,
        format.placeholders,
        format.tokenization,
    )?;
    let fail = |message: String| DataError::Sample {
        id: sample.id.clone(),
        message,
    };
    if let Some(max) = config.max_tokens {
        let tokens: usize = segments
            .iter()
            .map(|s| match s {
                Segment::Text { ids, .. } => ids.len(),
                Segment::Image => config.image_tokens,
                Segment::Region => 1,
            })
            .sum();
        if tokens > max {
            return Err(fail(format!("{tokens} tokens exceed the limit of {max}")).into());
        }
    }
    let name_ids = |name: &str| {
        let ids = format
            .tokenizer
            .encode(name, false)
            .map_err(|e| fail(format!("region name {name:?}: {e}")))?;
        if ids.is_empty() {
            return Err(fail(format!(
                "region name {name:?} has no tokens; name the region in words"
            )));
        }
        Ok(ids)
    };
    let region_names = sample
        .regions
        .iter()
        .filter_map(|region| match region {
            Region::Name(name) => Some(name_ids(name)),
            _ => None,
        })
        .collect::<Result<Vec<_>, DataError>>()?;
    let region_targets = match sample.meta.as_ref().and_then(|m| m.get(REGION_NAMES_META)) {
        Some(names) if sample.image.is_some() => {
            let names: Vec<String> = serde_json::from_value(names.clone()).map_err(|_| {
                fail(format!(
                    "meta.{REGION_NAMES_META} must be a list of strings, one per region"
                ))
            })?;
            if names.len() != sample.regions.len() {
                return Err(fail(format!(
                    "meta.{REGION_NAMES_META} names {} regions of {}; give one name per region",
                    names.len(),
                    sample.regions.len()
                ))
                .into());
            }
            names
                .iter()
                .map(|name| name_ids(name))
                .collect::<Result<Vec<_>, DataError>>()?
        }
        _ => Vec::new(),
    };
    let (image, regions) = match &sample.image {
        None => (None, Vec::new()),
        Some(relative) => {
            let path = config.image_root.join(relative);
            let rgb = load_image(&path).map_err(|e| DataError::Image {
                id: sample.id.clone(),
                path: path.clone(),
                message: e.to_string(),
            })?;
            let (width, height) = rgb.dimensions();
            let regions = sample
                .regions
                .iter()
                .enumerate()
                .map(|(index, region)| {
                    let region_error = |source| DataError::Region {
                        id: sample.id.clone(),
                        index,
                        source,
                    };
                    let spec = region.to_spec(&config.image_root).map_err(region_error)?;
                    let rle: Rle = spec.to_rle(height, width).map_err(region_error)?;
                    Ok(RegionSpec::Rle(rle))
                })
                .collect::<Result<Vec<_>, DataError>>()?;
            let processed = format
                .preprocessor
                .preprocess(&rgb)
                .map_err(|e| DataError::Image {
                    id: sample.id.clone(),
                    path,
                    message: e.to_string(),
                })?;
            (Some((processed.pixel_values, processed.transform)), regions)
        }
    };
    Ok(PreparedSample {
        position,
        id: sample.id.clone(),
        task: sample.task.clone(),
        segments,
        image,
        regions,
        region_names,
        region_targets,
    })
}
