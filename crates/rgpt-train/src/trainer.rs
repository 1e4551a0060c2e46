//! The training loop: micro-batches from the loader, token-weighted
//! gradient accumulation, clipping, AdamW on the trainable parts under the
//! cosine schedule, a JSON-lines metric per step, and checkpoints that let
//! `--resume` continue exactly (weights, optimiser moments, step and data
//! position), written to a new directory and swapped in by rename so a
//! crash never leaves half a checkpoint. A non-finite loss stops the run
//! before the update, keeping the last good checkpoint.
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use rgpt_data::builders::mix::{mix, MixInput};
use rgpt_data::format::{read_all_samples, Region, Sample};
use rgpt_data::Skips;
use rgpt_llm::Tokenizer;
use rgpt_model::prompt::Placeholders;
use rgpt_model::rgpt::RegionGpt;
use rgpt_vision::preprocess::PreprocessorConfig;
use serde::{Deserialize, Serialize};
use tch::{nn, Device, Kind, Tensor};

use crate::config::{ModelSource, TrainConfig};
use crate::data_parallel::DataParallel;
use crate::freeze::{set_trainable, set_trainable_with_lora};
use crate::loader::{Loader, LoaderConfig, PromptFormat};
use crate::optimizer::AdamW;
use crate::step::{accumulate_share, without_region_targets, StepTotals};
use crate::zero::ShardedAdamW;
use crate::TrainError;
use rgpt_model::prompt_ids::PromptTokenization;

/// Where a run is, as a checkpoint records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RunState {
    /// Optimiser steps done.
    pub step: u64,
    pub epoch: u64,
    /// Next position in the epoch's sample order.
    pub position: usize,
}

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, Serialize)]
pub struct StepMetrics {
    pub step: u64,
    pub total_steps: u64,
    pub loss: f64,
    pub lr: f64,
    pub grad_norm: f64,
    pub samples_per_s: f64,
    pub tokens_per_s: f64,
    pub elapsed_s: f64,
    /// Resident set size in MiB after the step (`null` off Linux).
    pub memory_mb: Option<f64>,
    /// Mean loss over the held-out answers after this step, on the steps
    /// the config's `eval.every` names (and the last). It goes into
    /// `metrics.jsonl` as an evaluation record of its own,
    /// `{"step": N, "eval": {"held_out_loss": x}}`, which `rgpt plot` draws.
    #[serde(skip)]
    pub eval_loss: Option<f64>,
    /// Mean alignment of the step's named regions, when the config trains
    /// it (`align_regions`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub align_loss: Option<f64>,
    /// The samples the run skips (each reason, its count and first
    /// example), in the first step's record only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<Skips>,
    /// Seconds the step spent on gradients across the ranks of a
    /// data-parallel run: the all-reduce, or with ZeRO-1 the
    /// reduce-scatter, sharded update and all-gather (absent in one
    /// process).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comm_s: Option<f64>,
}

/// The run's optimiser: AdamW on every rank (one process, or DDP), or
/// sharded across the ranks (ZeRO-1).
enum Optimizer {
    Replicated(AdamW),
    Sharded(ShardedAdamW),
}

pub struct Trainer {
    pub config: TrainConfig,
    pub model: RegionGpt,
    pub vs: nn::VarStore,
    tokenizer: Tokenizer,
    source_dirs: Vec<PathBuf>,
    optimizer: Optimizer,
    loader: Loader,
    eval_loader: Option<Loader>,
    /// The training samples left out before the run, and why.
    skipped: Skips,
    /// Set (from a signal handler, say) to stop after the current step.
    interrupt: Arc<AtomicBool>,
    pub state: RunState,
    pub total_steps: u64,
    /// The process group of a data-parallel run.
    dist: Option<DataParallel>,
}

const CHECKPOINT: &str = "checkpoint";

impl Trainer {
    /// Loads the model and data the config names; starts at step 0.
    pub fn new(config: TrainConfig) -> Result<Self, TrainError> {
        Self::in_group(config, None)
    }

    /// [`Trainer::new`] as one rank of a data-parallel run
    /// ([`DataParallel::join`]); `None` is one process.
    pub fn in_group(config: TrainConfig, dist: Option<DataParallel>) -> Result<Self, TrainError> {
        config.validate()?;
        let (rank, world) = dist.as_ref().map_or((0, 1), |d| (d.rank(), d.world_size()));
        if let Some(dist) = &dist {
            dist.check_same_config(&config)?;
            if config.global_batch % (config.micro_batch * world) != 0 {
                return Err(TrainError::Invalid {
                    field: "global_batch",
                    message: format!(
                        "{} is not a multiple of micro_batch {} times the {world} ranks",
                        config.global_batch, config.micro_batch
                    ),
                });
            }
        }
        let held_out = match &config.eval {
            Some(eval) => {
                let mut held_out = Vec::new();
                for file in &eval.files {
                    held_out.extend(read_all_samples(file)?);
                }
                held_out.truncate(eval.max_samples.unwrap_or(usize::MAX));
                check_held_out_files(&held_out, &config.data.image_root)?;
                Some(held_out)
            }
            None => None,
        };
        // A tiny model draws from its own generator seeded with `seed`;
        // libtorch's global one still initialises what a pretrained
        // checkpoint lacks (a composed model's fresh refiner and connector).
        tch::manual_seed(config.seed as i64);
        let device = match &dist {
            // Each rank of an NCCL run trains on its own GPU.
            Some(dist) if dist.device().is_cuda() => dist.device(),
            _ => config.device()?,
        };
        let kind = config.dtype.kind(device);
        // How prompts become ids: the way a pretrained checkpoint was
        // trained (LLaVA's original checkpoints: `tokenizer_image_token`),
        // the processor's for models made here.
        let tokenization = match &config.model {
            ModelSource::Pretrained(dir) => PromptTokenization::for_checkpoint(dir)?,
            _ => PromptTokenization::Processor,
        };
        let (mut model, mut vs, tokenizer, source_dirs) = match &config.model {
            ModelSource::Tiny(spec) => {
                let files: Vec<&Path> =
                    config.data.files.iter().map(|f| f.path.as_path()).collect();
                let (model, vs, trained, preprocessor) =
                    crate::scratch::build_tiny(spec, &files, config.seed)?;
                // The run's own preprocessing and tokenizer, kept so a
                // resumed run reads exactly what the first one did.
                let source = config.output_dir.join("source");
                std::fs::create_dir_all(&source).map_err(|e| TrainError::Write {
                    path: source.clone(),
                    source: e,
                })?;
                // Rank 0 writes them (a resumed run keeps its tokenizer);
                // the other ranks read them once it has.
                let saved = source.join("tokenizer.json");
                if rank == 0 {
                    if !saved.is_file() {
                        trained.save(&saved).map_err(rgpt_model::ModelError::from)?;
                    }
                    let json = serde_json::to_string_pretty(&preprocessor).unwrap_or_default();
                    rgpt_weights::save::write_atomic(
                        &source.join("preprocessor_config.json"),
                        json.as_bytes(),
                    )?;
                }
                if let Some(dist) = &dist {
                    dist.barrier()?;
                }
                let tokenizer =
                    Tokenizer::from_dir(&source).map_err(rgpt_model::ModelError::from)?;
                if (device, kind) == (Device::Cpu, Kind::Float) {
                    (model, vs, tokenizer, vec![source])
                } else {
                    // Built on the CPU in f32; saved and loaded again so
                    // every buffer, not only the variables, takes the run's
                    // device and dtype.
                    let init = match rank {
                        0 => config.output_dir.join("init"),
                        r => config.output_dir.join(format!("init.rank{r}")),
                    };
                    model.save_pretrained(&vs, &tokenizer, &[&source], &init, None)?;
                    let (model, vs) = RegionGpt::from_pretrained(&init, device, kind)?;
                    (model, vs, tokenizer, vec![source])
                }
            }
            ModelSource::Pretrained(dir) => {
                let (model, vs) = RegionGpt::from_pretrained(dir, device, kind)?;
                let tokenizer = tokenization.tokenizer(dir)?;
                (model, vs, tokenizer, vec![dir.clone()])
            }
            ModelSource::Compose {
                vision,
                llm,
                refiner,
            } => {
                let (model, vs, tokenizer) =
                    RegionGpt::compose(vision, llm, *refiner, device, kind)?;
                (model, vs, tokenizer, vec![vision.clone(), llm.clone()])
            }
        };
        vs.unfreeze();
        model
            .llava
            .set_activation_checkpointing(config.activation_checkpointing);
        let trainable = match &config.lora {
            Some(lora) => {
                let llm = vs.root() / "language_model";
                model
                    .llava
                    .llm
                    .add_lora(&llm, lora, config.seed)
                    .map_err(rgpt_model::ModelError::from)?;
                set_trainable_with_lora(&vs, &config.stage.trainable())
            }
            None => set_trainable(&vs, &config.stage.trainable()),
        };
        if trainable.is_empty() {
            return Err(TrainError::Invalid {
                field: "stage",
                message: "no variable of the model belongs to the parts it trains".into(),
            });
        }
        let vars = vs.variables();
        if let Some(dist) = &dist {
            // Every rank starts from rank 0's weights, as DDP does.
            let mut names: Vec<&String> = vars.keys().collect();
            names.sort();
            let values: Vec<Tensor> = names.iter().map(|n| vars[*n].shallow_clone()).collect();
            dist.broadcast(&values)?;
        }
        let params: Vec<(String, Tensor)> = trainable
            .iter()
            .map(|n| (n.clone(), vars[n].shallow_clone()))
            .collect();
        let zero = config.distributed.as_ref().is_some_and(|d| d.zero == 1);
        let optimizer = match &dist {
            Some(dist) if zero => {
                Optimizer::Sharded(ShardedAdamW::new(params, config.optimizer, dist))
            }
            _ => Optimizer::Replicated(AdamW::new(params, config.optimizer)),
        };
        // The checkpoint's image processor, or (a tower that shipped none)
        // its class's defaults, which the saved model then carries too.
        let preprocessor = match source_dirs
            .iter()
            .map(|d| d.join("preprocessor_config.json"))
            .find(|p| p.is_file())
        {
            Some(path) => {
                PreprocessorConfig::from_file(&path).map_err(rgpt_model::ModelError::from)?
            }
            None => model.default_preprocessor()?,
        };
        let region = model.region_token_id(&tokenizer)?;
        let format = PromptFormat {
            tokenizer: tokenizer.clone(),
            template: model.template(),
            placeholders: Placeholders {
                image: model.llava.config.image_token_index,
                region,
            },
            tokenization,
            preprocessor,
        };
        let inputs: Vec<MixInput> = config
            .data
            .files
            .iter()
            .map(|f| MixInput {
                path: f.path.clone(),
                weight: f.weight,
            })
            .collect();
        let samples = mix(&inputs, config.seed)?.samples;
        let (samples, skipped) =
            usable_samples(samples, &config.data.image_root, config.data.strict)?;
        // Each rank takes every `world`-th sample of the order, so the
        // ranks' shares of a step are together the samples one process
        // with the same global batch would take.
        let loader_config = |seed| LoaderConfig {
            image_root: config.data.image_root.clone(),
            batch_size: config.micro_batch,
            workers: config.loader_workers,
            seed,
            strict: config.data.strict,
            rank,
            world_size: world,
            ..LoaderConfig::default()
        };
        let eval_loader = match held_out {
            Some(held_out) => Some(Loader::new(held_out, format.clone(), loader_config(None))?),
            None => None,
        };
        let per_epoch = (samples.len() / config.global_batch).max(1) as u64;
        let loader = Loader::new(samples, format, loader_config(Some(config.seed)))?;
        let total_steps = config.steps.unwrap_or(per_epoch * config.epochs);
        Ok(Trainer {
            config,
            model,
            vs,
            tokenizer,
            source_dirs,
            optimizer,
            loader,
            eval_loader,
            skipped,
            interrupt: Arc::new(AtomicBool::new(false)),
            state: RunState::default(),
            total_steps,
            dist,
        })
    }

    /// The training samples left out before any step (a missing image or
    /// mask file, placeholders that do not match the regions), by reason;
    /// also in `metrics.jsonl`'s first record. Samples that fail later, as
    /// they are loaded (an unreadable image), are counted by the loader.
    pub fn skipped(&self) -> &Skips {
        &self.skipped
    }

    /// A flag that, once set, ends [`Trainer::run`] after the step in
    /// progress with a checkpoint of it and [`TrainError::Interrupted`]:
    /// what a Ctrl-C handler sets, so stopping a run loses no step.
    pub fn interrupt_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.interrupt)
    }

    /// Whether this process writes the run's files: the only one, or rank 0.
    pub fn is_main(&self) -> bool {
        self.dist.as_ref().is_none_or(|d| d.rank() == 0)
    }

    /// Micro-batches each rank takes per optimiser step.
    fn accumulation(&self) -> usize {
        let world = self.dist.as_ref().map_or(1, DataParallel::world_size);
        self.config.global_batch / (self.config.micro_batch * world)
    }

    fn checkpoint_dir(&self) -> PathBuf {
        self.config.output_dir.join(CHECKPOINT)
    }

    /// Continues from the output directory's checkpoint; false when there
    /// is none.
    pub fn resume(&mut self) -> Result<bool, TrainError> {
        let dir = self.checkpoint_dir();
        if !dir.join("state.json").is_file() {
            return Ok(false);
        }
        let fail = |message: String| TrainError::Checkpoint {
            path: dir.clone(),
            message,
        };
        let text =
            std::fs::read_to_string(dir.join("state.json")).map_err(|e| fail(e.to_string()))?;
        let saved: SavedState = serde_json::from_str(&text).map_err(|e| fail(e.to_string()))?;
        rgpt_weights::Checkpoint::open(dir.join("model.safetensors"))?.load_into(&self.vs)?;
        let moments = rgpt_weights::Checkpoint::open(dir.join("optimizer.safetensors"))?;
        let tensors: BTreeMap<String, Tensor> = moments
            .names()
            .map(|n| Ok((n.to_string(), moments.tensor(n)?)))
            .collect::<Result<_, rgpt_weights::WeightsError>>()?;
        match &mut self.optimizer {
            Optimizer::Replicated(adamw) => adamw.load_state(&tensors, saved.optimizer_steps)?,
            Optimizer::Sharded(sharded) => sharded.load_state(&tensors, saved.optimizer_steps)?,
        }
        self.state = saved.run;
        // Each rank resumes at its own place in its share of the order; a
        // run resumed on another number of ranks at the same share of the
        // epoch.
        let (rank, world) = self
            .dist
            .as_ref()
            .map_or((0, 1), |d| (d.rank(), d.world_size()));
        self.state.position = if saved.rank_positions.len() == world {
            saved.rank_positions[rank]
        } else if saved.rank_positions.is_empty() {
            saved.run.position / world
        } else {
            saved.rank_positions.iter().sum::<usize>() / world
        };
        if self.is_main() {
            self.cut_metrics_to(self.state.step)?;
        }
        Ok(true)
    }

    /// Drops from `metrics.jsonl` what was logged after step `step` (the
    /// checkpoint's): those steps run again, and would be logged twice.
    /// A torn last line goes too. The file is rewritten atomically.
    fn cut_metrics_to(&self, step: u64) -> Result<(), TrainError> {
        let path = self.config.output_dir.join("metrics.jsonl");
        let Ok(text) = std::fs::read_to_string(&path) else {
            return Ok(()); // nothing logged yet
        };
        let logged_at = |line: &str| {
            serde_json::from_str::<serde_json::Value>(line)
                .ok()
                .and_then(|v| v.get("step").and_then(serde_json::Value::as_u64))
        };
        let kept: String = text
            .lines()
            .filter(|line| logged_at(line).is_some_and(|at| at <= step))
            .map(|line| format!("{line}\n"))
            .collect();
        if kept.len() == text.len() {
            return Ok(());
        }
        Ok(rgpt_weights::save::write_atomic(&path, kept.as_bytes())?)
    }

    /// Writes the checkpoint: a new directory, then swapped in. In a
    /// data-parallel run every rank calls it (their data positions are
    /// gathered) and rank 0 writes.
    pub fn save_checkpoint(&self) -> Result<(), TrainError> {
        let rank_positions = match &self.dist {
            Some(dist) => dist.gather(self.state.position)?,
            None => Vec::new(),
        };
        let (moments, optimizer_steps) = match (&self.optimizer, &self.dist) {
            (Optimizer::Sharded(sharded), Some(dist)) => sharded.state(dist)?,
            (Optimizer::Replicated(adamw), _) => adamw.state(),
            (Optimizer::Sharded(_), None) => return Err(no_group()),
        };
        if !self.is_main() {
            return Ok(());
        }
        let dir = self.checkpoint_dir();
        let fresh = self.config.output_dir.join("checkpoint.new");
        let old = self.config.output_dir.join("checkpoint.old");
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| TrainError::Write { path, source }
        };
        let _ = std::fs::remove_dir_all(&fresh);
        std::fs::create_dir_all(&fresh).map_err(io(&fresh))?;
        let weights: Vec<(String, Tensor)> = self.vs.variables().into_iter().collect();
        Tensor::write_safetensors(&weights, fresh.join("model.safetensors"))?;
        Tensor::write_safetensors(&moments, fresh.join("optimizer.safetensors"))?;
        let state = SavedState {
            run: self.state,
            optimizer_steps,
            rank_positions,
        };
        let text = serde_json::to_string_pretty(&state).unwrap_or_default();
        std::fs::write(fresh.join("state.json"), text).map_err(io(&fresh))?;
        let _ = std::fs::remove_dir_all(&old);
        if dir.exists() {
            std::fs::rename(&dir, &old).map_err(io(&dir))?;
        }
        std::fs::rename(&fresh, &dir).map_err(io(&dir))?;
        let _ = std::fs::remove_dir_all(&old);
        Ok(())
    }

    /// Trains to the last step (or `stop_after` steps, to interrupt a run
    /// on purpose), calling `on_step` after each.
    pub fn run(
        &mut self,
        stop_after: Option<u64>,
        on_step: &mut dyn FnMut(&StepMetrics),
    ) -> Result<(), TrainError> {
        std::fs::create_dir_all(&self.config.output_dir).map_err(|source| TrainError::Write {
            path: self.config.output_dir.clone(),
            source,
        })?;
        let metrics_path = self.config.output_dir.join("metrics.jsonl");
        let mut metrics = if self.is_main() {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&metrics_path)
                .map_err(|source| TrainError::Write {
                    path: metrics_path.clone(),
                    source,
                })?;
            Some(file)
        } else {
            None
        };
        let started = Instant::now();
        let mut batches = self.loader.batches(self.state.epoch, self.state.position);
        let mut taken = 0u64;
        let mut empty_epochs = 0;
        while self.state.step < self.total_steps && stop_after.is_none_or(|n| taken < n) {
            let step_started = Instant::now();
            let _step = tracing::info_span!("train_step", step = self.state.step + 1).entered();
            let data_wait = tracing::debug_span!("data_wait").entered();
            let mut micro = Vec::with_capacity(self.accumulation());
            while micro.len() < self.accumulation() {
                match batches.recv() {
                    Ok(batch) => {
                        let batch = batch?;
                        self.state.position = batch.next_position;
                        micro.push(batch);
                        empty_epochs = 0;
                    }
                    // The epoch is over: the next one, reshuffled.
                    Err(_) => {
                        empty_epochs += 1;
                        if empty_epochs > 1 {
                            return Err(TrainError::Invalid {
                                field: "data.files",
                                message: format!(
                                    "no sample could be prepared ({})",
                                    self.loader.skips().to_string().trim()
                                ),
                            });
                        }
                        self.state.epoch += 1;
                        self.state.position = 0;
                        batches = self.loader.batches(self.state.epoch, 0);
                    }
                }
            }
            drop(data_wait);
            let examples: Vec<Vec<_>> = micro.iter().map(|b| b.examples()).collect();
            let mut samples: usize = micro.iter().map(|b| b.samples.len()).sum();
            match &mut self.optimizer {
                Optimizer::Replicated(adamw) => adamw.zero_grad(),
                Optimizer::Sharded(sharded) => sharded.zero_grad(),
            }
            if self.config.align_regions > 0.0 {
                let unnamed = micro.iter().flat_map(|b| &b.samples).find(|s| {
                    s.image.is_some() && !s.regions.is_empty() && s.region_targets.is_empty()
                });
                if let Some(sample) = unnamed {
                    return Err(TrainError::Invalid {
                        field: "align_regions",
                        message: format!(
                            "sample `{}` has regions but no meta.region_names to align them \
                             with; name them (rgpt data synth writes them with named text \
                             regions) or set align_regions to 0",
                            sample.id
                        ),
                    });
                }
            }
            let mut totals = StepTotals::of(&examples);
            if let Some(dist) = &self.dist {
                let sums =
                    dist.sum(&[totals.target_tokens as f64, totals.aligned_regions as f64])?;
                totals = StepTotals {
                    target_tokens: sums[0] as usize,
                    aligned_regions: sums[1] as usize,
                };
            }
            let mut loss =
                accumulate_share(&self.model, &examples, self.config.align_regions, totals)?;
            if let Some(dist) = &self.dist {
                let sums = dist.sum(&[
                    loss.loss,
                    loss.alignment.unwrap_or(0.0),
                    f64::from(u8::from(loss.alignment.is_some())),
                    samples as f64,
                ])?;
                loss.loss = sums[0];
                loss.alignment = (sums[2] > 0.0).then_some(sums[1]);
                samples = sums[3] as usize;
            }
            if !loss.loss.is_finite() {
                return Err(TrainError::NonFiniteLoss {
                    step: self.state.step + 1,
                    loss: loss.loss,
                });
            }
            let lr = self.config.schedule.lr(
                self.config.lr,
                self.state.step,
                self.total_steps,
                self.config.warmup_ratio,
            );
            let (grad_norm, comm_s) = self.update(lr)?;
            self.state.step += 1;
            taken += 1;
            let seconds = step_started.elapsed().as_secs_f64().max(1e-9);
            let eval_due = self.config.eval.as_ref().is_some_and(|e| {
                self.state.step % e.every == 0 || self.state.step == self.total_steps
            });
            let eval_loss = if eval_due { self.eval_loss()? } else { None };
            let record = StepMetrics {
                step: self.state.step,
                total_steps: self.total_steps,
                loss: loss.loss,
                lr,
                grad_norm,
                samples_per_s: samples as f64 / seconds,
                tokens_per_s: loss.target_tokens as f64 / seconds,
                elapsed_s: started.elapsed().as_secs_f64(),
                memory_mb: crate::memory::resident_set_mib(),
                eval_loss,
                align_loss: loss.alignment,
                skipped: (self.state.step == 1).then(|| self.skipped.clone()),
                comm_s,
            };
            let mut line = serde_json::to_string(&record).unwrap_or_default() + "\n";
            if let Some(loss) = eval_loss {
                let eval =
                    serde_json::json!({"step": record.step, "eval": {"held_out_loss": loss}});
                line += &(eval.to_string() + "\n");
            }
            if let Some(metrics) = &mut metrics {
                metrics
                    .write_all(line.as_bytes())
                    .and_then(|()| metrics.flush())
                    .map_err(|source| TrainError::Write {
                        path: metrics_path.clone(),
                        source,
                    })?;
            }
            on_step(&record);
            // Every rank stops after the same step.
            let interrupted = match &self.dist {
                Some(dist) => dist.any(self.interrupt.load(Ordering::SeqCst))?,
                None => self.interrupt.load(Ordering::SeqCst),
            };
            if self.state.step % self.config.checkpoint_every.max(1) == 0
                || self.state.step == self.total_steps
                || interrupted
            {
                self.save_checkpoint()?;
            }
            if interrupted && self.state.step < self.total_steps {
                return Err(TrainError::Interrupted {
                    step: self.state.step,
                    checkpoint: self.checkpoint_dir(),
                });
            }
        }
        Ok(())
    }

    /// Sums the gradients over the ranks, clips them and takes the
    /// optimiser step; returns the gradients' norm (0 without clipping)
    /// and the seconds spent on the ranks' gradients together.
    fn update(&mut self, lr: f64) -> Result<(f64, Option<f64>), TrainError> {
        let _span = tracing::debug_span!("optimizer").entered();
        let clip = self.config.grad_clip;
        let started = Instant::now();
        match (&mut self.optimizer, &self.dist) {
            (Optimizer::Sharded(sharded), Some(dist)) => {
                let norm = sharded.step(dist, lr, clip)?;
                Ok((norm, Some(started.elapsed().as_secs_f64())))
            }
            (Optimizer::Replicated(adamw), dist) => {
                let comm_s = match dist {
                    Some(dist) => {
                        let _span = tracing::debug_span!("all_reduce").entered();
                        dist.all_reduce_gradients(&adamw.params())?;
                        Some(started.elapsed().as_secs_f64())
                    }
                    None => None,
                };
                let norm = if clip > 0.0 {
                    adamw.clip_grad_norm(clip)
                } else {
                    0.0
                };
                adamw.step(lr);
                Ok((norm, comm_s))
            }
            (Optimizer::Sharded(_), None) => Err(no_group()),
        }
    }

    /// The mean loss over the answer tokens of the config's held-out
    /// samples, without gradient; `None` without `eval` in the config.
    pub fn eval_loss(&self) -> Result<Option<f64>, TrainError> {
        let Some(loader) = &self.eval_loader else {
            return Ok(None);
        };
        let _no_grad = tch::no_grad_guard();
        let (mut sum, mut tokens) = (0.0, 0i64);
        for batch in loader.batches(0, 0) {
            let batch = batch?;
            let out = self
                .model
                .forward_train(&without_region_targets(&batch.examples()))?;
            sum += f64::try_from(&out.loss)? * out.target_tokens as f64;
            tokens += out.target_tokens;
        }
        if let Some(dist) = &self.dist {
            // Each rank scored its share of the held-out samples.
            let sums = dist.sum(&[sum, tokens as f64])?;
            (sum, tokens) = (sums[0], sums[1] as i64);
        }
        if tokens == 0 {
            return Err(TrainError::Invalid {
                field: "eval.files",
                message: format!(
                    "no held-out sample could be prepared ({})",
                    loader.skips().to_string().trim()
                ),
            });
        }
        Ok(Some(sum / tokens as f64))
    }

    /// Saves the trained model in RGPT's format under `output_dir/model`,
    /// LoRA adapters merged into the LLM (training keeps them unmerged).
    /// In a data-parallel run rank 0 writes it (the ranks hold the same
    /// weights).
    pub fn save_model(&self) -> Result<PathBuf, TrainError> {
        let out = self.config.output_dir.join("model");
        if !self.is_main() {
            return Ok(out);
        }
        let sources: Vec<&Path> = self.source_dirs.iter().map(PathBuf::as_path).collect();
        let llm = &self.model.llava.llm;
        let merged = llm.has_lora().then(|| llm.merged_var_store(&self.vs));
        let vs = merged.as_ref().unwrap_or(&self.vs);
        self.model
            .save_pretrained(vs, &self.tokenizer, &sources, &out, None)?;
        Ok(out)
    }
}

/// A sharded optimiser without its group: not built by `Trainer::in_group`.
fn no_group() -> TrainError {
    TrainError::Invalid {
        field: "distributed.zero",
        message: "ZeRO-1 needs the run's process group".into(),
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct SavedState {
    run: RunState,
    optimizer_steps: u64,
    /// Each rank's position in its share of the epoch's order (a
    /// data-parallel run; `run.position` is rank 0's).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    rank_positions: Vec<usize>,
}

/// The samples a run can use, and the rest counted by reason (or, with
/// `strict`, the first as the error): each must be valid as a conversation
/// and name only files that exist under `image_root`. Checked before the
/// run, so a user learns at the start, not from a count at the end.
fn usable_samples(
    samples: Vec<Sample>,
    image_root: &Path,
    strict: bool,
) -> Result<(Vec<Sample>, Skips), TrainError> {
    let mut skipped = Skips::new();
    let mut usable = Vec::with_capacity(samples.len());
    for sample in samples {
        let problem = match sample.validate() {
            Err(e) => Some(("invalid sample", e.to_string())),
            Ok(()) => sample_files(&sample)
                .find(|file| !image_root.join(file).is_file())
                .map(|file| {
                    let what = if sample.image.as_deref() == Some(file) {
                        "image missing"
                    } else {
                        "region mask missing"
                    };
                    (
                        what,
                        format!("sample {}: {}", sample.id, image_root.join(file).display()),
                    )
                }),
        };
        match problem {
            None => usable.push(sample),
            Some((_, message)) if strict => {
                return Err(TrainError::Invalid {
                    field: "data.strict",
                    message: format!("{message} (strict: true refuses the run)"),
                })
            }
            Some((reason, message)) => skipped.add(reason, message),
        }
    }
    Ok((usable, skipped))
}

/// The files a sample names: its image and its regions' mask files.
fn sample_files(sample: &Sample) -> impl Iterator<Item = &str> {
    let masks = sample.regions.iter().filter_map(|region| match region {
        Region::Mask(path) => Some(path.as_str()),
        _ => None,
    });
    sample.image.as_deref().into_iter().chain(masks)
}

/// Refuses held-out samples whose images are missing before any training,
/// rather than at the first evaluation: a partial held-out set would also
/// quietly change what the metric measures.
fn check_held_out_files(held_out: &[Sample], image_root: &Path) -> Result<(), TrainError> {
    // Mask files too: they are read only when the first evaluation loads
    // the sample, minutes into a run.
    let missing: Vec<&str> = held_out
        .iter()
        .flat_map(sample_files)
        .filter(|file| !image_root.join(file).is_file())
        .collect();
    match missing.first() {
        None => Ok(()),
        Some(first) => Err(TrainError::Invalid {
            field: "eval.files",
            message: format!(
                "{} of the files named by {} held-out samples (images and region masks) are not \
                 under {} (first: {first}); fix data.image_root or the held-out files",
                missing.len(),
                held_out.len(),
                image_root.display()
            ),
        }),
    }
}
