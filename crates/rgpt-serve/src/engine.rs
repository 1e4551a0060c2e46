//! The model's own thread, serving a continuous batch (as vLLM and TGI
//! do). Requests reach it through a bounded queue (a full queue is the
//! caller's 429). Between decode steps, waiting requests join the running
//! batch, up to its size, each prepared on arrival (image encoded or found
//! in the image cache, regions pooled, prompt read into a cache of its
//! own); one step then decodes a token for every request in the batch, and
//! each request leaves as soon as it has finished or its client has gone.
//! Text is sent as it is generated; the async runtime is never blocked. A
//! panic fails the requests it touched with a 500 and the engine goes on.
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::time::Instant;

use rgpt_llm::batching::{DecodeBatch, Prompt, Slot};
use rgpt_llm::generation::FinishReason;
use rgpt_llm::StreamDecoder;
use rgpt_model::chat::RegionGenerator;
use rgpt_model::ModelError;
use tokio::sync::mpsc::UnboundedSender;

use crate::api::{ApiError, Logprobs, TokenLogprob, TopLogprob, Usage};
use crate::metrics::Metrics;
use crate::prepare::{model_error, prepare, ImageCache, Prepared};
use crate::request::Job;

/// What the engine sends back for one request.
#[derive(Debug)]
pub enum Event {
    /// Generated text, with its tokens' log-probabilities when the request
    /// asked for them.
    Text {
        text: String,
        logprobs: Option<Logprobs>,
    },
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

/// How the engine batches.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Requests that may wait; more get 429.
    pub queue: usize,
    /// Requests decoded together; 1 serves one request at a time.
    pub max_batch: usize,
    /// Encoded images kept for follow-up turns (0: none).
    pub image_cache: usize,
    /// For tests of the engine's recovery: a question containing this text
    /// followed by `join` makes the engine panic while it joins the batch,
    /// followed by `step` in the first decode step it shares with another.
    pub panic_on: Option<String>,
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
    /// serves jobs from its queue. Returns once the model is loaded, or its
    /// loading error.
    pub fn start(
        load: impl FnOnce() -> Result<RegionGenerator, ModelError> + Send + 'static,
        options: EngineOptions,
        metrics: Arc<Metrics>,
    ) -> Result<Engine, ModelError> {
        let counted = Arc::clone(&metrics);
        let (queue, jobs) = sync_channel::<Work>(options.queue.max(1));
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
                serve(&generator, &jobs, &options, &counted);
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

/// A request in the decode batch.
struct Running {
    work: Work,
    slot: Slot,
    stream: StreamDecoder,
    prompt_tokens: usize,
    /// With `logprobs`: the tokens whose text has not been sent yet.
    logprobs: Option<Logprobs>,
}

/// The engine's loop, until every sender of jobs is gone.
fn serve(
    generator: &RegionGenerator,
    jobs: &Receiver<Work>,
    options: &EngineOptions,
    metrics: &Metrics,
) {
    let llm = &generator.model.llava.llm;
    let tokenizer = Some(&generator.tokenizer);
    let mut images = ImageCache::new(options.image_cache);
    let mut batch = DecodeBatch::new(llm, options.max_batch.max(1));
    let mut running: Vec<Running> = Vec::new();
    loop {
        // Join: wait for work when idle, otherwise take what is waiting,
        // as far as the batch has room.
        let mut arrived = Vec::new();
        if running.is_empty() {
            match jobs.recv() {
                Ok(work) => arrived.push(work),
                Err(_) => return,
            }
        }
        while running.len() + arrived.len() < options.max_batch.max(1) {
            match jobs.try_recv() {
                Ok(work) => arrived.push(work),
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
        metrics.queued(-(arrived.len() as i64));
        // The client left while it waited.
        arrived.retain(|work| !work.events.is_closed());
        if !arrived.is_empty() {
            let joined = join_all(
                generator,
                &mut batch,
                &mut images,
                &arrived,
                options,
                metrics,
            );
            for (work, joined) in arrived.into_iter().zip(joined) {
                match joined {
                    Ok((slot, prompt_tokens, first)) => {
                        let logprobs = work.job.params.logprobs.then(Logprobs::default);
                        let mut request = Running {
                            work,
                            slot,
                            stream: StreamDecoder::new(),
                            prompt_tokens,
                            logprobs,
                        };
                        metrics.first_token(request.work.queued.elapsed());
                        request.push(generator, &mut batch, first);
                        running.push(request);
                    }
                    Err(error) => {
                        let _ = work.events.send(Event::Failed(error));
                    }
                }
            }
        }

        // A client that has gone leaves the batch now.
        for request in &running {
            if request.work.events.is_closed() {
                batch.cancel(request.slot);
            }
        }
        let stepping = running
            .iter()
            .filter(|r| !batch.is_finished(r.slot))
            .count();
        metrics.batch(stepping as i64);

        // Step.
        let fault = running.len() > 1
            && running
                .iter()
                .any(|r| r.work.job.asks(options.panic_on.as_deref()) == Some(Fault::Step));
        let stepped = catch_unwind(AssertUnwindSafe(|| {
            if fault {
                panic!("a question asks the engine to fail in a decode step");
            }
            batch.step(llm, tokenizer)
        }));
        match stepped {
            Ok(Ok(next)) => {
                for (slot, id) in next {
                    if let Some(request) = running.iter_mut().find(|r| r.slot == slot) {
                        request.push(generator, &mut batch, id);
                    }
                }
            }
            failed => {
                let error = match failed {
                    Ok(Err(error)) => model_error(error.into()),
                    _ => panicked(),
                };
                batch.clear();
                metrics.batch(0);
                for request in running.drain(..) {
                    let _ = request.work.events.send(Event::Failed(error.clone()));
                }
            }
        }

        // Leave.
        let (done, still): (Vec<_>, Vec<_>) =
            running.into_iter().partition(|r| batch.is_finished(r.slot));
        running = still;
        // Counted before the answers go, so a client that has its answer
        // reads a batch without it.
        metrics.batch(running.len() as i64);
        for request in done {
            request.finish(generator, &mut batch, metrics);
        }
    }
}

/// Prepares the requests that arrived together and reads their prompts
/// into the batch: their images encoded in one batch (those not in the
/// cache), their prompts read in one prefill. Per request, its slot, its
/// prompt's length and its first token, or why it failed; a panic fails
/// only the requests it happened in.
fn join_all(
    generator: &RegionGenerator,
    batch: &mut DecodeBatch,
    images: &mut ImageCache,
    arrived: &[Work],
    options: &EngineOptions,
    metrics: &Metrics,
) -> Vec<Result<(Slot, usize, i64), ApiError>> {
    let bytes: Vec<&[u8]> = arrived.iter().map(|w| w.job.image.as_slice()).collect();
    let fetched = catch_unwind(AssertUnwindSafe(|| {
        images.fetch_all(&bytes, generator, metrics)
    }))
    .unwrap_or_else(|_| arrived.iter().map(|_| Err(panicked())).collect());
    let prepared: Vec<Result<Prepared, ApiError>> = arrived
        .iter()
        .zip(fetched)
        .map(|(work, image)| {
            let image = image?;
            catch_unwind(AssertUnwindSafe(|| {
                if work.job.asks(options.panic_on.as_deref()) == Some(Fault::Join) {
                    panic!("a question asks the engine to fail while joining");
                }
                prepare(generator, image, &work.job)
            }))
            .unwrap_or_else(|_| Err(panicked()))
        })
        .collect();
    let mut results: Vec<Result<(Slot, usize, i64), ApiError>> = Vec::new();
    let mut prompts = Vec::new();
    let mut lengths = Vec::new();
    for prepared in prepared {
        match prepared {
            Ok(prepared) => {
                let spliced = &prepared.question.batch;
                lengths.push((results.len(), prepared.question.prompt_ids.len()));
                prompts.push(Prompt {
                    embeds: spliced.padded.embeds.shallow_clone(),
                    history: spliced.histories[0].clone(),
                    config: prepared.config,
                });
                results.push(Err(panicked())); // until joined
            }
            Err(error) => results.push(Err(error)),
        }
    }
    let llm = &generator.model.llava.llm;
    let free: Vec<Slot> = (0..batch.slots()).filter(|&s| !batch.is_taken(s)).collect();
    let joined = catch_unwind(AssertUnwindSafe(|| {
        batch.join_all(llm, prompts, Some(&generator.tokenizer))
    }));
    match joined {
        Ok(joined) => {
            for ((at, prompt_tokens), joined) in lengths.into_iter().zip(joined) {
                results[at] = joined
                    .map(|(slot, first)| (slot, prompt_tokens, first))
                    .map_err(|e| model_error(e.into()));
            }
        }
        Err(_) => {
            // Take out any that got in before the panic; the requests
            // already running go on.
            for slot in free {
                batch.leave(slot);
            }
        }
    }
    results
}

impl Running {
    /// Streams the text `id` completes.
    fn push(&mut self, generator: &RegionGenerator, batch: &mut DecodeBatch, id: i64) {
        if let (Some(pending), Some(output)) = (&mut self.logprobs, batch.output(self.slot)) {
            pending.content.push(token_logprob(generator, output));
        }
        match self.stream.push(&generator.tokenizer, id) {
            Ok(Some(text)) => {
                let logprobs = self.logprobs.as_mut().map(std::mem::take);
                if self
                    .work
                    .events
                    .send(Event::Text { text, logprobs })
                    .is_err()
                {
                    batch.cancel(self.slot);
                }
            }
            Ok(None) => {}
            Err(e) => {
                let _ = self.work.events.send(Event::Failed(model_error(e.into())));
                batch.cancel(self.slot);
            }
        }
    }

    /// Takes the request out of the batch and sends the rest of its text
    /// and its usage.
    fn finish(mut self, generator: &RegionGenerator, batch: &mut DecodeBatch, metrics: &Metrics) {
        let Some(output) = batch.leave(self.slot) else {
            return;
        };
        let rest = self.stream.finish(&generator.tokenizer).ok().flatten();
        let logprobs = self.logprobs.take().filter(|l| !l.content.is_empty());
        if rest.is_some() || logprobs.is_some() {
            let text = rest.unwrap_or_default();
            let _ = self.work.events.send(Event::Text { text, logprobs });
        }
        let generated = output.token_ids.len();
        let finish_reason = match output.finish_reason {
            FinishReason::Eos | FinishReason::StopString => "stop",
            FinishReason::Length => "length",
            FinishReason::Cancelled => "cancelled",
        };
        if finish_reason == "cancelled" {
            metrics.cancelled();
        }
        metrics.finished(self.prompt_tokens, generated, self.work.queued.elapsed());
        let usage = Usage {
            prompt_tokens: self.prompt_tokens,
            completion_tokens: generated,
            total_tokens: self.prompt_tokens + generated,
        };
        let _ = self.work.events.send(Event::Done {
            usage,
            finish_reason,
        });
    }
}

/// The last token of `output` in OpenAI's `logprobs` entry.
fn token_logprob(
    generator: &RegionGenerator,
    output: &rgpt_llm::generation::SequenceOutput,
) -> TokenLogprob {
    let text = |id: i64| generator.tokenizer.decode(&[id], false).unwrap_or_default();
    let id = output.token_ids.last().copied().unwrap_or_default();
    let token = text(id);
    TokenLogprob {
        bytes: token.as_bytes().to_vec(),
        token,
        logprob: output.token_logprobs.last().copied().unwrap_or(f32::NAN),
        top_logprobs: output
            .top_logprobs
            .get(output.token_ids.len() - 1)
            .into_iter()
            .flatten()
            .map(|top| {
                let token = text(top.id);
                TopLogprob {
                    bytes: token.as_bytes().to_vec(),
                    token,
                    logprob: top.logprob,
                }
            })
            .collect(),
    }
}

/// Where a test asks the engine to fail ([`EngineOptions::panic_on`]).
#[derive(Debug, PartialEq)]
enum Fault {
    Join,
    Step,
}

impl Job {
    fn asks(&self, trigger: Option<&str>) -> Option<Fault> {
        let trigger = trigger?;
        self.turns.iter().find_map(|(question, _)| {
            let after = &question[question.find(trigger)? + trigger.len()..];
            if after.starts_with("join") {
                Some(Fault::Join)
            } else if after.starts_with("step") {
                Some(Fault::Step)
            } else {
                None
            }
        })
    }
}

fn panicked() -> ApiError {
    ApiError::internal("the engine failed while answering; the request was dropped")
}
