//! The model's own thread. Requests reach it through a bounded queue (a
//! full queue is the caller's 429); it answers one request at a time,
//! sending the text as it is generated, and never blocks the async
//! runtime. A panic while answering fails that request with a 500 and the
//! engine goes on with the next.
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Instant;

use rgpt_llm::generation::{FinishReason, GenerationConfig, Sampling};
use rgpt_model::chat::{RegionChat, RegionGenerator};
use rgpt_model::ModelError;
use rgpt_region::RegionSpec;
use tokio::sync::mpsc::UnboundedSender;

use crate::api::{ApiError, ApiRegion, Usage};
use crate::metrics::Metrics;
use crate::request::{Job, Params};

/// What the engine sends back for one request.
#[derive(Debug)]
pub enum Event {
    Text(String),
    Done {
        usage: Usage,
        finish_reason: &'static str,
    },
    Failed(ApiError),
}

struct Work {
    job: Job,
    events: UnboundedSender<Event>,
    queued: Instant,
}

#[derive(Clone)]
pub struct Engine {
    queue: SyncSender<Work>,
    /// The placeholder regions are written with in prompts.
    pub region_token: String,
    metrics: Arc<Metrics>,
}

impl Engine {
    /// Loads the model on a thread of its own (`load` runs there) and
    /// serves jobs from a queue of `queue` places. Returns once the model
    /// is loaded, or its loading error.
    pub fn start(
        load: impl FnOnce() -> Result<RegionGenerator, ModelError> + Send + 'static,
        queue: usize,
        metrics: Arc<Metrics>,
    ) -> Result<Engine, ModelError> {
        let counted = Arc::clone(&metrics);
        let (queue, jobs) = sync_channel::<Work>(queue.max(1));
        let (ready, loaded) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("rgpt-engine".into())
            .spawn(move || {
                let generator = match load() {
                    Ok(generator) => {
                        let token = generator.model.section.region_token.clone();
                        let _ = ready.send(Ok(token));
                        generator
                    }
                    Err(e) => {
                        let _ = ready.send(Err(e));
                        return;
                    }
                };
                let metrics = counted;
                for work in jobs {
                    metrics.queued(-1);
                    if work.events.is_closed() {
                        continue; // the client left while it waited
                    }
                    metrics.batch(1);
                    let events = work.events.clone();
                    let outcome =
                        catch_unwind(AssertUnwindSafe(|| answer(&generator, &work, &metrics)));
                    metrics.batch(0);
                    let event = match outcome {
                        Ok(Ok((usage, finish_reason))) => {
                            let elapsed = work.queued.elapsed();
                            metrics.finished(usage.prompt_tokens, usage.completion_tokens, elapsed);
                            if finish_reason == "cancelled" {
                                metrics.cancelled();
                            }
                            Event::Done {
                                usage,
                                finish_reason,
                            }
                        }
                        Ok(Err(error)) => Event::Failed(error),
                        Err(_) => Event::Failed(ApiError::internal(
                            "the engine failed while answering; the request was dropped",
                        )),
                    };
                    let _ = events.send(event);
                }
            })
            .map_err(|e| ModelError::Io {
                path: "rgpt-engine thread".into(),
                source: e,
            })?;
        let region_token = loaded.recv().map_err(|_| {
            ModelError::from(rgpt_llm::LlmError::InvalidRequest(
                "the engine thread ended while loading the model".into(),
            ))
        })??;
        Ok(Engine {
            queue,
            region_token,
            metrics,
        })
    }

    /// Queues `job`; its events arrive on `events`. A full queue is a 429.
    pub fn submit(&self, job: Job, events: UnboundedSender<Event>) -> Result<(), ApiError> {
        // Counted first: the engine may take it at once.
        self.metrics.queued(1);
        let work = Work {
            job,
            events,
            queued: Instant::now(),
        };
        self.queue.try_send(work).map_err(|e| {
            self.metrics.queued(-1);
            match e {
                TrySendError::Full(_) => ApiError {
                    status: axum::http::StatusCode::TOO_MANY_REQUESTS,
                    message: "the server is busy: its queue is full; retry shortly".into(),
                    kind: "rate_limit_error",
                    param: None,
                },
                TrySendError::Disconnected(_) => ApiError::internal("the engine has stopped"),
            }
        })
    }
}

/// Runs one job: the conversation's turns replayed, the last question
/// answered, its text streamed to `events`.
fn answer(
    generator: &RegionGenerator,
    work: &Work,
    metrics: &Metrics,
) -> Result<(Usage, &'static str), ApiError> {
    let (job, events) = (&work.job, &work.events);
    let decoded = image::load_from_memory(&job.image)
        .map_err(|e| ApiError::invalid(Some("messages"), format!("image_url: {e}")))?;
    let image = decoded.to_rgb8();
    let (width, height) = image.dimensions();
    // Describe Anything's convention: with one placeholder and no
    // `regions`, the region is where the image is opaque.
    let alpha = if job.regions.is_empty() && job.alpha_region {
        Some(alpha_region(&decoded)?)
    } else {
        None
    };
    let mut chat =
        RegionChat::new(generator, &image, generator.model.template()).map_err(model_error)?;
    let token = generator.model.section.region_token.as_str();
    let mut regions = job.regions.iter().enumerate();
    let mut config = generation_config(&job.params, generator.default_config());
    // A client that has gone stops its generation after the step in hand.
    let cancel = Arc::new(std::sync::atomic::AtomicBool::new(false));
    config.cancel = Some(Arc::clone(&cancel));
    let mut completion = None;
    let mut first_text = true;
    for (question, reply) in &job.turns {
        if let Some(alpha) = &alpha {
            if question.contains(token) {
                chat.add_region(alpha.clone()).map_err(model_error)?;
            }
        }
        for _ in 0..question.matches(token).count() {
            let Some((index, region)) = regions.next() else {
                break; // counted when the request was read
            };
            let spec = region_spec(region, index, width, height)?;
            chat.add_region(spec).map_err(model_error)?;
        }
        match reply {
            Some(reply) => chat.replay(question, reply).map_err(model_error)?,
            None => {
                let mut on_text = |text: &str| {
                    if std::mem::take(&mut first_text) {
                        metrics.first_token(work.queued.elapsed());
                    }
                    if events.send(Event::Text(text.to_string())).is_err() {
                        cancel.store(true, std::sync::atomic::Ordering::Relaxed);
                    }
                };
                completion = Some(
                    chat.ask(question, &config, &mut on_text)
                        .map_err(model_error)?,
                );
            }
        }
    }
    let completion = completion.ok_or_else(|| ApiError::internal("no question was asked"))?;
    let generated = completion.output.token_ids.len();
    let finish_reason = match completion.output.finish_reason {
        FinishReason::Eos | FinishReason::StopString => "stop",
        FinishReason::Length => "length",
        FinishReason::Cancelled => "cancelled",
    };
    Ok((
        Usage {
            prompt_tokens: completion.prompt_ids.len(),
            completion_tokens: generated,
            total_tokens: completion.prompt_ids.len() + generated,
        },
        finish_reason,
    ))
}

/// The request's sampling on the model's defaults (EOS, pad), as `rgpt
/// generate` puts its flags on them.
fn generation_config(params: &Params, mut config: GenerationConfig) -> GenerationConfig {
    config.max_new_tokens = params.max_tokens;
    config.sampling = if params.temperature == 0.0 {
        Sampling::Greedy
    } else {
        Sampling::Sample {
            temperature: params.temperature,
            top_k: None,
            top_p: params.top_p,
        }
    };
    config.seed = params.seed;
    config.stop_strings = params.stop.clone();
    config.ignore_eos = params.ignore_eos;
    config
}

fn region_spec(
    region: &ApiRegion,
    index: usize,
    width: u32,
    height: u32,
) -> Result<RegionSpec, ApiError> {
    let invalid =
        |message: String| ApiError::invalid(Some("regions"), format!("region {index}: {message}"));
    Ok(match region {
        ApiRegion::Box([x1, y1, x2, y2]) => RegionSpec::from_xyxy(*x1, *y1, *x2, *y2),
        ApiRegion::Polygon(parts) => RegionSpec::polygon(parts.clone()),
        ApiRegion::Rle(value) => RegionSpec::Rle(
            rgpt_region::coco_json::rle_from_json_value(value)
                .map_err(|e| invalid(e.to_string()))?,
        ),
        ApiRegion::Point(xy) => match xy[..] {
            [x, y] => RegionSpec::Point { x, y, radius: None },
            [x, y, r] => RegionSpec::Point {
                x,
                y,
                radius: Some(r),
            },
            _ => return Err(invalid("a point is [x, y] or [x, y, radius]".into())),
        },
        ApiRegion::MaskPng(data) => {
            use base64::Engine as _;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(data.trim())
                .map_err(|e| invalid(format!("mask_png does not decode as base64: {e}")))?;
            let mask = rgpt_region::Bitmap::from_image_bytes(&bytes, "mask_png")
                .map_err(|e| invalid(e.to_string()))?;
            if (mask.width, mask.height) != (width, height) {
                return Err(invalid(format!(
                    "mask_png is {}x{}, the image {width}x{height}; give a mask of the image's size",
                    mask.width, mask.height
                )));
            }
            RegionSpec::Mask(mask)
        }
    })
}

/// The region an RGBA image's alpha channel marks: its pixels with alpha
/// at least 128.
fn alpha_region(image: &image::DynamicImage) -> Result<RegionSpec, ApiError> {
    let missing = || {
        ApiError::invalid(
            Some("regions"),
            "the question has a <region> but `regions` is empty, and the image has no alpha \
             channel marking one: give `regions`, or an RGBA image opaque on the region and \
             transparent elsewhere",
        )
    };
    if !image.color().has_alpha() {
        return Err(missing());
    }
    let rgba = image.to_rgba8();
    let data: Vec<u8> = rgba.pixels().map(|p| u8::from(p.0[3] >= 128)).collect();
    if data.iter().all(|&v| v == 1) || data.iter().all(|&v| v == 0) {
        return Err(missing());
    }
    Ok(RegionSpec::Mask(rgpt_region::Bitmap {
        height: rgba.height(),
        width: rgba.width(),
        data,
    }))
}

/// The model's complaint about a request, as the API's: what the user can
/// fix is a 400, the rest a 500.
fn model_error(error: ModelError) -> ApiError {
    match &error {
        ModelError::Region { .. }
        | ModelError::Pool(_)
        | ModelError::Splice(_)
        | ModelError::TooManyRegions { .. }
        | ModelError::Preprocess(_)
        | ModelError::Llm(rgpt_llm::LlmError::InvalidRequest(_)) => {
            ApiError::invalid(None, error.to_string())
        }
        _ => ApiError::internal(error.to_string()),
    }
}
