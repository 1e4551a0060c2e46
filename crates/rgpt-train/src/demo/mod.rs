//! `rgpt demo`: the whole system learning to understand regions, on any
//! machine, with nothing downloaded. A synthetic world of shapes is
//! rendered (train and held-out test images), a tiny RGPT is built from
//! nothing, its vision tower is pre-trained on the world (the stand-in for
//! CLIP, [`crate::tower`]), and the model then goes through the paper's two
//! stages (Sec. 3.2): captions first, then the task mix with the
//! task-guided prompts. The held-out images are scored with `rgpt-eval`'s
//! runners and metrics. Every phase writes its result before the next
//! starts, so an interrupted demo picks up where it stopped.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use rgpt_data::prompts::PromptBank;
use rgpt_data::synth::text::TEXT_TASKS;
use rgpt_data::synth::write::{task_file, text_task_file};
use rgpt_data::synth::{write_world, ShapeKind, SynthConfig};
use rgpt_eval::caption::MeteorSource;
use rgpt_eval::items::{items_of, EvalItem};
use rgpt_eval::predictions::PredictionStore;
use rgpt_eval::results::{caption_results, classification_results, rec_results};
use rgpt_eval::runner::Evaluator;
use rgpt_llm::Tokenizer;
use rgpt_model::pipeline::RegionGenerator;
use rgpt_vision::refiner::RefinerKind;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tch::{Device, Kind, Tensor};

pub mod curves;
pub mod showcase;

use crate::config::{DataConfig, DataFile, ModelSource, TrainConfig, TrainDtype};
use crate::parts::{Part, Stage};
use crate::schedule::Schedule;
use crate::tiny::{build_tiny_with_tokenizer, train_tokenizer, TinySpec};
use crate::tower::{pretrain_tower, TowerPretrainConfig, TowerReport, TowerStep};
use crate::trainer::{StepMetrics, Trainer};
use crate::TrainError;

/// Everything a demo run does (`configs/demo-tiny.yaml`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DemoConfig {
    /// The training world.
    pub world: SynthConfig,
    /// The held-out world: the training world's settings with its own
    /// seed and image count.
    pub test: TestWorld,
    /// The tiny model.
    pub model: TinySpec,
    /// Vision-tower pre-training (its `train_images` and `seed` come from
    /// the world).
    pub tower: TowerPretrainConfig,
    /// The training stages, in order.
    pub stages: Vec<DemoStage>,
    pub eval: DemoEval,
    pub seed: u64,
    /// The bar the run is judged by on held-out images: the printed table
    /// says whether each is met, and the learning curves draw them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub targets: Option<DemoTargets>,
}

/// Held-out accuracies a demo config sets out to reach (fractions).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DemoTargets {
    /// Shape classification, the closed set by likelihood.
    pub region_cls_acc: f64,
    pub rec_acc: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestWorld {
    pub images: u64,
    pub seed: u64,
}

/// One training stage: a [`TrainConfig`] over the world's task files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DemoStage {
    /// Names the stage's directory.
    pub name: String,
    #[serde(with = "serde_yaml::with::singleton_map")]
    pub stage: Stage,
    /// Sampling weight of each world task (`synth-shape`, `synth-rec`, ...).
    pub tasks: BTreeMap<String, f64>,
    pub lr: f64,
    pub steps: u64,
    pub global_batch: usize,
    pub micro_batch: usize,
    #[serde(default = "default_warmup")]
    pub warmup_ratio: f64,
    /// After warm-up: `cosine` (the paper's) or `constant`.
    #[serde(default)]
    pub schedule: Schedule,
    /// Train on the tasks' text form (`world.text` must be on): no image,
    /// every region given by its name (`world.text_regions`). The demo's
    /// first stages pre-train the decoder so, standing in for the Vicuna
    /// RegionGPT starts from.
    #[serde(default)]
    pub text: bool,
    /// Weight of the regions' alignment with their names' codes
    /// (`TrainConfig::align_regions`; 0: off). Needs `world.text_regions`
    /// `named` or `colour_shape`, whose worlds name every region.
    #[serde(default, skip_serializing_if = "crate::config::is_zero")]
    pub align_regions: f64,
}

fn default_warmup() -> f64 {
    0.03
}

/// How much of the held-out world is scored.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DemoEval {
    /// Test images whose classification and REC questions are asked.
    pub images: usize,
    /// Test images whose region captions are generated.
    pub caption_images: usize,
    pub batch_size: usize,
    pub max_new_tokens: usize,
}

impl DemoConfig {
    pub fn from_file(path: &Path) -> Result<Self, TrainError> {
        let text = std::fs::read_to_string(path).map_err(|source| TrainError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let config: DemoConfig = serde_yaml::from_str(&text).map_err(|e| TrainError::Config {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), TrainError> {
        let invalid = |field, message: String| Err(TrainError::Invalid { field, message });
        self.world.validate()?;
        self.model.validate()?;
        if let Some(targets) = self.targets {
            for (field, value) in [
                ("targets.region_cls_acc", targets.region_cls_acc),
                ("targets.rec_acc", targets.rec_acc),
            ] {
                if !(value > 0.0 && value <= 1.0) {
                    return invalid(
                        field,
                        format!("{value} is not an accuracy: give a fraction in (0, 1]"),
                    );
                }
            }
        }
        if self.stages.is_empty() {
            return invalid("stages", "list at least one training stage".into());
        }
        for stage in &self.stages {
            if stage.tasks.is_empty() {
                return invalid(
                    "stages.tasks",
                    format!("stage `{}` trains on no task", stage.name),
                );
            }
            if stage.text && !self.world.text {
                return invalid(
                    "stages.text",
                    format!(
                        "stage `{}` trains on the world's text form: set `world.text: true`",
                        stage.name
                    ),
                );
            }
            if stage.align_regions > 0.0 {
                let why = if stage.text {
                    Some("trains on text, which has no image regions to align")
                } else if !(self.world.text && self.world.text_regions.is_named()) {
                    Some(
                        "aligns regions with their names: set `world.text: true` and \
                         `world.text_regions` to `named` or `colour_shape`",
                    )
                } else {
                    None
                };
                if let Some(why) = why {
                    return invalid(
                        "stages.align_regions",
                        format!("stage `{}` {why}", stage.name),
                    );
                }
            }
            for task in stage.tasks.keys() {
                if stage.text && !TEXT_TASKS.contains(&task.as_str()) {
                    return invalid(
                        "stages.tasks",
                        format!(
                            "stage `{}` trains on text, and `{task}` has no text form (use {})",
                            stage.name,
                            TEXT_TASKS.join(", ")
                        ),
                    );
                }
                if !rgpt_data::synth::TASKS.contains(&task.as_str()) {
                    return invalid(
                        "stages.tasks",
                        format!(
                            "stage `{}`: `{task}` is not a world task (use {})",
                            stage.name,
                            rgpt_data::synth::TASKS.join(", ")
                        ),
                    );
                }
            }
        }
        if self.test.images == 0 || self.eval.images == 0 {
            return invalid("eval.images", "score at least one test image".into());
        }
        Ok(())
    }

    fn test_world(&self) -> SynthConfig {
        SynthConfig {
            images: self.test.images,
            seed: self.test.seed,
            // Only training reads the text form.
            text: false,
            ..self.world.clone()
        }
    }
}

/// What the demo reports while it works.
pub enum DemoEvent<'a> {
    /// A phase starts.
    Phase(&'a str),
    TowerStep(&'a TowerStep),
    TrainStep {
        stage: &'a str,
        metrics: &'a StepMetrics,
    },
    /// `(task, done, total)` questions answered.
    Eval(&'a str, usize, usize),
    /// A point of the learning curve.
    Curve(&'a CurvePoint),
}

/// Scoring the model every `every` steps of each stage on the first
/// `images` test images (slower: it is for drawing learning curves).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CurveOptions {
    pub every: u64,
    pub images: usize,
}

/// Held-out accuracy after `step` steps of `stage` (`curve.jsonl`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CurvePoint {
    pub stage: String,
    pub step: u64,
    /// Seconds the stage had trained (scoring excluded).
    pub train_seconds: f64,
    pub loss: Option<f64>,
    pub region_cls_acc: f64,
    pub rec_acc: f64,
}

fn append_line(path: &Path, value: &impl Serialize) -> Result<(), TrainError> {
    use std::io::Write;
    let line = serde_json::to_string(value).unwrap_or_default() + "\n";
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(line.as_bytes()))
        .map_err(io(path))
}

/// Saves the model as it is, loads it as a generator and scores shape
/// classification and REC on a few test images.
fn curve_point(
    config: &DemoConfig,
    trainer: &Trainer,
    curve: CurveOptions,
    dirs: &RunDirs,
    stage: &str,
    train_seconds: f64,
    on_event: &mut dyn FnMut(DemoEvent<'_>),
) -> Result<CurvePoint, TrainError> {
    let saved = trainer.save_model()?;
    let generator = RegionGenerator::load(&saved, Device::Cpu, Kind::Float)?;
    let scratch = trainer.config.output_dir.join("curve-eval");
    let _ = std::fs::remove_dir_all(&scratch);
    let tasks = [("synth-shape", curve.images), ("synth-rec", curve.images)];
    let scores = score_tasks(
        config,
        &generator,
        &dirs.test_world(),
        &tasks,
        &scratch,
        on_event,
    )?;
    let _ = std::fs::remove_dir_all(&scratch);
    let last_loss = last_metric(&trainer.config.output_dir.join("metrics.jsonl"), "loss");
    Ok(CurvePoint {
        stage: stage.to_string(),
        step: trainer.state.step,
        train_seconds,
        loss: last_loss,
        region_cls_acc: scores["synth-shape"]["accuracy"]
            .as_f64()
            .unwrap_or(f64::NAN),
        rec_acc: scores["synth-rec"]["accuracy"].as_f64().unwrap_or(f64::NAN),
    })
}

/// Where a demo (or one of its ablation runs) keeps things.
struct RunDirs {
    root: PathBuf,
}

impl RunDirs {
    fn world(&self) -> PathBuf {
        self.root.join("world/train")
    }
    fn test_world(&self) -> PathBuf {
        self.root.join("world/test")
    }
    fn tower(&self) -> PathBuf {
        self.root.join("tower")
    }
}

const TOWER_WEIGHTS: &str = "vision_tower.safetensors";
const TOWER_REPORT: &str = "tower_report.json";
const STAGE_REPORT: &str = "stage_report.json";
const SETTINGS: &str = "demo_settings.json";

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TrainError + '_ {
    move |source| TrainError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn write_json(path: &Path, value: &impl Serialize) -> Result<(), TrainError> {
    let text = serde_json::to_string_pretty(value).unwrap_or_default();
    rgpt_weights::save::write_atomic(path, text.as_bytes())?;
    Ok(())
}

/// Every line of a JSON-lines file.
fn read_jsonl<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Vec<T>, TrainError> {
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| {
            serde_json::from_str(line).map_err(|e| TrainError::Checkpoint {
                path: path.to_path_buf(),
                message: format!("line {}: {e}", i + 1),
            })
        })
        .collect()
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, TrainError> {
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    serde_json::from_str(&text).map_err(|e| TrainError::Checkpoint {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// Renders a world unless a finished one is there (its `summary.json`).
fn ensure_world(config: &SynthConfig, prompts: &PromptBank, dir: &Path) -> Result<(), TrainError> {
    let summary = dir.join("summary.json");
    if summary.is_file() {
        return Ok(());
    }
    let written = write_world(config, prompts, dir)?;
    write_json(&summary, &written)
}

/// The conversations the tokenizer is trained on: the train world's task
/// files, in [`rgpt_data::synth::TASKS`] order, then its text forms when it
/// has them, whose questions have no image before them.
fn tokenizer_files(world: &Path, text: bool) -> Vec<PathBuf> {
    let text_tasks: &[&str] = if text { &TEXT_TASKS } else { &[] };
    rgpt_data::synth::TASKS
        .iter()
        .map(|task| task_file(world, task))
        .chain(text_tasks.iter().map(|task| text_task_file(world, task)))
        .collect()
}

/// The results of one demo run (`results.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DemoResults {
    pub refiner: RefinerKind,
    /// Shape classification on held-out regions, the class picked by
    /// likelihood among the closed set (the paper's protocol).
    pub region_cls_acc: f64,
    /// The same, reading the generated answer.
    pub region_cls_generated_acc: f64,
    pub rec_acc: f64,
    pub caption_cider: f64,
    /// Tower pre-training and every stage, in seconds of work.
    pub train_seconds: f64,
    /// `small` / `medium` / `large`: each with `region_cls_acc`, `rec_acc`.
    pub by_size: BTreeMap<String, BTreeMap<String, f64>>,
    pub tower: TowerReport,
    /// Each stage's steps, seconds and final loss.
    pub stages: Vec<StageReport>,
    /// Every metric of every task, as `rgpt eval` reports them.
    pub eval: BTreeMap<String, Value>,
    /// A few held-out conversations (their regions drawn in `samples.png`).
    pub dialogues: Vec<showcase::Dialogue>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StageReport {
    pub name: String,
    pub steps: u64,
    pub seconds: f64,
    pub final_loss: f64,
    /// The main run's stage directory, for a stage an ablation run took
    /// from it instead of training (its steps, seconds and loss are that
    /// stage's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared_from: Option<PathBuf>,
}

/// Runs the demo into `out`, with the model's refiner replaced by
/// `refiner` when given (the ablation). The world and the pre-trained tower
/// are shared by every run under `shared` (the first run's directory).
pub fn run_demo(
    config: &DemoConfig,
    prompts: &PromptBank,
    shared: &Path,
    out: &Path,
    refiner: Option<RefinerKind>,
    curve: Option<CurveOptions>,
    on_event: &mut dyn FnMut(DemoEvent<'_>),
) -> Result<DemoResults, TrainError> {
    config.validate()?;
    let dirs = RunDirs {
        root: shared.to_path_buf(),
    };
    std::fs::create_dir_all(out).map_err(io(out))?;
    let refiner = refiner.unwrap_or(config.model.refiner);
    claim_run_dir(config, refiner, out)?;
    on_event(DemoEvent::Phase("rendering the world"));
    ensure_world(&config.world, prompts, &dirs.world())?;
    ensure_world(&config.test_world(), prompts, &dirs.test_world())?;

    let (tokenizer, tower) = ensure_tower(config, &dirs, on_event)?;
    let spec = TinySpec {
        refiner,
        ..config.model.clone()
    };
    let mut model_dir = out.join("init");
    if !model_dir.join("config.json").is_file() {
        build_initial_model(config, &spec, &dirs, &tokenizer, &model_dir, None)?;
    }
    // An ablation run takes the main run's decoder after the stages that
    // cannot depend on the refiner, rather than training it again.
    let shared_stages = if out == shared {
        0
    } else {
        refiner_free_stages(config)
    };
    let mut stages = Vec::with_capacity(config.stages.len());
    for (index, stage) in config.stages.iter().enumerate() {
        on_event(DemoEvent::Phase(&stage.name));
        let dir = out.join(&stage.name);
        let report_path = dir.join(STAGE_REPORT);
        if !report_path.is_file() {
            let report = if index < shared_stages {
                share_stage(config, &spec, &dirs, &tokenizer, stage, &dir)?
            } else {
                train_stage(config, stage, &dirs, &model_dir, &dir, curve, on_event)?
            };
            write_json(&report_path, &report)?;
        }
        stages.push(read_json::<StageReport>(&report_path)?);
        model_dir = dir.join("model");
    }
    let final_dir = out.join("model");
    replace_dir(&model_dir, &final_dir)?;
    if curve.is_some() {
        curves::write_curve_figure(out, &stages, tower.seconds, config.targets)?;
    }

    on_event(DemoEvent::Phase("evaluating on held-out images"));
    let generator = RegionGenerator::load(&final_dir, Device::Cpu, Kind::Float)?;
    let eval = evaluate(
        config,
        &generator,
        &dirs.test_world(),
        &out.join("eval"),
        on_event,
    )?;
    let dialogues = showcase::showcase(
        &generator,
        &dirs.test_world(),
        &["synth-shape", "synth-rec"],
        2,
        &out.join("samples.png"),
    )?;
    let train_seconds = tower.seconds + stages.iter().map(|s| s.seconds).sum::<f64>();
    let mut results = summarise(spec.refiner, eval, tower, stages, train_seconds);
    results.dialogues = dialogues;
    write_json(&out.join("results.json"), &results)?;
    Ok(results)
}

/// Records the settings a run directory is made with, and refuses one made
/// with others: a rerun skips every finished phase, so a changed config
/// would otherwise be silently mixed with the old run's world and weights.
fn claim_run_dir(config: &DemoConfig, refiner: RefinerKind, out: &Path) -> Result<(), TrainError> {
    let path = out.join(SETTINGS);
    let mut settings = serde_json::to_value(config).unwrap_or_default();
    settings["model"]["refiner"] = serde_json::Value::String(refiner.name().into());
    if path.is_file() {
        let recorded: serde_json::Value = read_json(&path)?;
        if let Some(field) = first_difference(&recorded, &settings) {
            return Err(TrainError::Invalid {
                field: "out",
                message: format!(
                    "{} holds a demo run made with other settings (`{field}` differs); \
                     pass another --out, or delete the directory to start over",
                    out.display()
                ),
            });
        }
        return Ok(());
    }
    write_json(&path, &settings)
}

/// The dotted path of the first field where two settings differ.
fn first_difference(a: &serde_json::Value, b: &serde_json::Value) -> Option<String> {
    use serde_json::Value;
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            keys.into_iter()
                .find_map(|key| match (x.get(key), y.get(key)) {
                    (Some(u), Some(v)) => first_difference(u, v).map(|rest| {
                        if rest.is_empty() {
                            key.clone()
                        } else {
                            format!("{key}.{rest}")
                        }
                    }),
                    _ => Some(key.clone()),
                })
        }
        _ if a == b => None,
        _ => Some(String::new()),
    }
}

/// The final model goes to `out/model` (a copy, so the stage keeps its
/// own and a rerun finds both).
fn replace_dir(from: &Path, to: &Path) -> Result<(), TrainError> {
    let fresh = to.with_extension("new");
    let _ = std::fs::remove_dir_all(&fresh);
    std::fs::create_dir_all(&fresh).map_err(io(&fresh))?;
    for entry in std::fs::read_dir(from).map_err(io(from))? {
        let entry = entry.map_err(io(from))?;
        std::fs::copy(entry.path(), fresh.join(entry.file_name())).map_err(io(&entry.path()))?;
    }
    let _ = std::fs::remove_dir_all(to);
    std::fs::rename(&fresh, to).map_err(io(to))
}

/// The trained tokenizer and the pre-trained tower, made once per demo
/// directory.
fn ensure_tower(
    config: &DemoConfig,
    dirs: &RunDirs,
    on_event: &mut dyn FnMut(DemoEvent<'_>),
) -> Result<(Tokenizer, TowerReport), TrainError> {
    let dir = dirs.tower();
    let report_path = dir.join(TOWER_REPORT);
    if report_path.is_file() {
        let tokenizer = Tokenizer::from_dir(&dir).map_err(rgpt_model::ModelError::from)?;
        return Ok((tokenizer, read_json(&report_path)?));
    }
    on_event(DemoEvent::Phase("training the tokenizer"));
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let files = tokenizer_files(&dirs.world(), config.world.text);
    let file_refs: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    let tokenizer = train_tokenizer(&config.model, &file_refs)?;
    tokenizer
        .save(&dir.join("tokenizer.json"))
        .map_err(rgpt_model::ModelError::from)?;

    on_event(DemoEvent::Phase("pre-training the vision tower"));
    tch::manual_seed(config.seed as i64);
    let (model, vs, preprocessor) = build_tiny_with_tokenizer(&config.model, &tokenizer)?;
    let world = rgpt_data::synth::SynthWorld::new(config.world.clone())?;
    let tower_config = TowerPretrainConfig {
        train_images: config.world.images,
        seed: config.seed,
        ..config.tower
    };
    // Held out from training, and from the test world too.
    let validation = config.world.images..config.world.images + 200;
    let report = pretrain_tower(
        &model,
        &vs,
        &world,
        &preprocessor,
        &tower_config,
        validation,
        &mut |step| on_event(DemoEvent::TowerStep(step)),
    )?;
    let weights: Vec<(String, Tensor)> = vs
        .variables()
        .into_iter()
        .filter(|(name, _)| name.starts_with("vision_tower."))
        .collect();
    let tmp = dir.join(format!("{TOWER_WEIGHTS}.tmp"));
    Tensor::write_safetensors(&weights, &tmp)?;
    std::fs::rename(&tmp, dir.join(TOWER_WEIGHTS)).map_err(io(&dir))?;
    write_json(&report_path, &report)?;
    Ok((tokenizer, report))
}

/// The run's model before its first trained stage, saved as a checkpoint:
/// fresh weights around the pre-trained tower, and the decoder of
/// `decoder_from` when given.
fn build_initial_model(
    config: &DemoConfig,
    spec: &TinySpec,
    dirs: &RunDirs,
    tokenizer: &Tokenizer,
    out: &Path,
    decoder_from: Option<&Path>,
) -> Result<(), TrainError> {
    tch::manual_seed(config.seed as i64 + 1);
    let (model, vs, preprocessor) = build_tiny_with_tokenizer(spec, tokenizer)?;
    rgpt_weights::Checkpoint::open(dirs.tower().join(TOWER_WEIGHTS))?.load_under(
        &vs,
        "vision_tower.",
        &mut |_| {},
    )?;
    if let Some(dir) = decoder_from {
        rgpt_weights::Checkpoint::open(dir)?.load_under(&vs, "language_model.", &mut |_| {})?;
    }
    let source = out.with_extension("source");
    std::fs::create_dir_all(&source).map_err(io(&source))?;
    write_json(&source.join("preprocessor_config.json"), &preprocessor)?;
    let fresh = out.with_extension("new");
    let _ = std::fs::remove_dir_all(&fresh);
    model.save_pretrained(&vs, tokenizer, &[&source], &fresh, None)?;
    let _ = std::fs::remove_dir_all(out);
    std::fs::rename(&fresh, out).map_err(io(out))?;
    let _ = std::fs::remove_dir_all(&source);
    Ok(())
}

/// How many of the first stages read only text and train only the LLM.
/// Without an image their training cannot depend on the refiner, so every
/// run of an ablation would repeat the same work.
fn refiner_free_stages(config: &DemoConfig) -> usize {
    config
        .stages
        .iter()
        .take_while(|stage| stage.text && stage.stage.trainable() == [Part::Llm])
        .count()
}

/// Stands in for training a refiner-free stage in an ablation run: this
/// run's initial weights (its own refiner and connector) with the decoder
/// the main run's stage trained. Its report is the main run's, marked.
fn share_stage(
    config: &DemoConfig,
    spec: &TinySpec,
    dirs: &RunDirs,
    tokenizer: &Tokenizer,
    stage: &DemoStage,
    out: &Path,
) -> Result<StageReport, TrainError> {
    let trained = dirs.root.join(&stage.name);
    let report_path = trained.join(STAGE_REPORT);
    if !report_path.is_file() {
        return Err(TrainError::Invalid {
            field: "out",
            message: format!(
                "stage `{}` is shared with the main run, which has not finished it in {}; \
                 run the demo there first",
                stage.name,
                dirs.root.display()
            ),
        });
    }
    let report: StageReport = read_json(&report_path)?;
    build_initial_model(
        config,
        spec,
        dirs,
        tokenizer,
        &out.join("model"),
        Some(&trained.join("model")),
    )?;
    Ok(StageReport {
        shared_from: Some(trained),
        ..report
    })
}

fn train_stage(
    config: &DemoConfig,
    stage: &DemoStage,
    dirs: &RunDirs,
    from: &Path,
    out: &Path,
    curve: Option<CurveOptions>,
    on_event: &mut dyn FnMut(DemoEvent<'_>),
) -> Result<StageReport, TrainError> {
    let files = stage
        .tasks
        .iter()
        .map(|(task, weight)| DataFile {
            path: if stage.text {
                text_task_file(&dirs.world(), task)
            } else {
                task_file(&dirs.world(), task)
            },
            weight: *weight,
        })
        .collect();
    let train = TrainConfig {
        model: ModelSource::Pretrained(from.to_path_buf()),
        data: DataConfig {
            files,
            image_root: dirs.world(),
        },
        stage: stage.stage.clone(),
        lr: stage.lr,
        optimizer: Default::default(),
        lora: None,
        warmup_ratio: stage.warmup_ratio,
        schedule: stage.schedule,
        epochs: 1,
        steps: Some(stage.steps),
        global_batch: stage.global_batch,
        micro_batch: stage.micro_batch,
        grad_clip: 1.0,
        align_regions: stage.align_regions,
        seed: config.seed,
        // The tower was pre-trained on the CPU in f32, and the demo's
        // numbers are for that setting on any machine.
        device: "cpu".into(),
        dtype: TrainDtype::F32,
        checkpoint_every: (stage.steps / 4).max(1),
        output_dir: out.to_path_buf(),
        loader_workers: 1,
        eval: None,
    };
    let started = Instant::now();
    let mut trainer = Trainer::new(train)?;
    let resumed_seconds = if trainer.resume()? {
        last_elapsed(&out.join("metrics.jsonl"))
    } else {
        let _ = std::fs::remove_file(out.join("metrics.jsonl"));
        0.0
    };
    let mut final_loss = f64::NAN;
    let mut trained_seconds = resumed_seconds;
    loop {
        let mut chunk_seconds = 0.0;
        trainer.run(curve.map(|c| c.every), &mut |metrics| {
            final_loss = metrics.loss;
            chunk_seconds = metrics.elapsed_s;
            on_event(DemoEvent::TrainStep {
                stage: &stage.name,
                metrics,
            });
        })?;
        trained_seconds += chunk_seconds;
        let Some(curve) = curve else { break };
        let point = curve_point(
            config,
            &trainer,
            curve,
            dirs,
            &stage.name,
            trained_seconds,
            on_event,
        )?;
        on_event(DemoEvent::Curve(&point));
        append_line(&out.join("curve.jsonl"), &point)?;
        if trainer.state.step >= trainer.total_steps {
            break;
        }
    }
    trainer.save_model()?;
    Ok(StageReport {
        name: stage.name.clone(),
        steps: trainer.total_steps,
        seconds: if curve.is_some() {
            trained_seconds
        } else {
            resumed_seconds + started.elapsed().as_secs_f64()
        },
        final_loss,
        shared_from: None,
    })
}

/// Seconds an interrupted stage had worked, from its last metric line.
fn last_elapsed(metrics: &Path) -> f64 {
    last_metric(metrics, "elapsed_s").unwrap_or(0.0)
}

/// A field of the last line of a `metrics.jsonl` that has it (evaluation
/// records sit between the step lines).
fn last_metric(metrics: &Path, key: &str) -> Option<f64> {
    let text = std::fs::read_to_string(metrics).ok()?;
    text.lines()
        .rev()
        .find_map(|l| serde_json::from_str::<Value>(l).ok()?[key].as_f64())
}

/// Questions of the first `images` samples of one test task.
fn test_items(test_world: &Path, task: &str, images: usize) -> Result<Vec<EvalItem>, TrainError> {
    let mut items = Vec::new();
    for sample in rgpt_data::format::read_samples(&task_file(test_world, task))?.take(images) {
        items.extend(items_of(&sample?).map_err(eval_error)?);
    }
    Ok(items)
}

fn eval_error(e: rgpt_eval::EvalError) -> TrainError {
    TrainError::Invalid {
        field: "eval",
        message: e.to_string(),
    }
}

/// Scores the held-out world: shape classification, REC and region
/// captions, answers kept under `out` so a rerun resumes.
fn evaluate(
    config: &DemoConfig,
    generator: &RegionGenerator,
    test_world: &Path,
    out: &Path,
    on_event: &mut dyn FnMut(DemoEvent<'_>),
) -> Result<BTreeMap<String, Value>, TrainError> {
    let tasks = [
        ("synth-shape", config.eval.images),
        ("synth-rec", config.eval.images),
        ("synth-caption", config.eval.caption_images),
    ];
    let results = score_tasks(config, generator, test_world, &tasks, out, on_event)?;
    write_json(&out.join("results.json"), &results)?;
    Ok(results)
}

/// Answers and scores the first `images` test samples of each task.
fn score_tasks(
    config: &DemoConfig,
    generator: &RegionGenerator,
    test_world: &Path,
    tasks: &[(&str, usize)],
    out: &Path,
    on_event: &mut dyn FnMut(DemoEvent<'_>),
) -> Result<BTreeMap<String, Value>, TrainError> {
    std::fs::create_dir_all(out).map_err(io(out))?;
    let evaluator = Evaluator {
        generator,
        image_root: test_world.to_path_buf(),
        batch_size: config.eval.batch_size,
        max_new_tokens: config.eval.max_new_tokens,
        template: generator.model.template(),
    };
    let shapes: Vec<String> = ShapeKind::ALL
        .iter()
        .map(|s| s.name().to_string())
        .collect();
    let mut results = BTreeMap::new();
    for &(task, images) in tasks {
        let classes = if task == "synth-shape" {
            &shapes[..]
        } else {
            &[][..]
        };
        let items = test_items(test_world, task, images)?;
        let mut store =
            PredictionStore::open(&out.join(format!("{task}.jsonl"))).map_err(eval_error)?;
        evaluator
            .answer(&items, classes, &mut store, &mut |done, total| {
                on_event(DemoEvent::Eval(task, done, total))
            })
            .map_err(eval_error)?;
        let value = match task {
            "synth-shape" => classification_results(&items, classes, &store, test_world),
            "synth-rec" => rec_results(&items, &store, test_world),
            _ => caption_results(&items, &store, MeteorSource::Off),
        }
        .map_err(eval_error)?;
        results.insert(task.to_string(), value);
    }
    Ok(results)
}

fn summarise(
    refiner: RefinerKind,
    eval: BTreeMap<String, Value>,
    tower: TowerReport,
    stages: Vec<StageReport>,
    train_seconds: f64,
) -> DemoResults {
    let number = |task: &str, key: &str| eval[task][key].as_f64().unwrap_or(f64::NAN);
    let mut by_size: BTreeMap<String, BTreeMap<String, f64>> = BTreeMap::new();
    for (task, name) in [("synth-shape", "region_cls_acc"), ("synth-rec", "rec_acc")] {
        if let Some(sizes) = eval[task]["by_size"].as_object() {
            for (size, scores) in sizes {
                if let Some(accuracy) = scores["accuracy"].as_f64() {
                    by_size
                        .entry(size.clone())
                        .or_default()
                        .insert(name.to_string(), accuracy);
                }
            }
        }
    }
    DemoResults {
        refiner,
        region_cls_acc: number("synth-shape", "accuracy"),
        region_cls_generated_acc: number("synth-shape", "generated_accuracy"),
        rec_acc: number("synth-rec", "accuracy"),
        caption_cider: number("synth-caption", "CIDEr"),
        train_seconds,
        by_size,
        tower,
        stages,
        eval,
        dialogues: Vec::new(),
    }
}

/// `json!` of the headline numbers, for a table.
pub fn headline(results: &DemoResults) -> Value {
    json!({
        "refiner": results.refiner,
        "region_cls_acc": results.region_cls_acc,
        "rec_acc": results.rec_acc,
        "caption_cider": results.caption_cider,
        "train_seconds": results.train_seconds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quick() -> DemoConfig {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/demo-quick.yaml");
        DemoConfig::from_file(&path).unwrap()
    }

    #[test]
    fn a_run_directory_refuses_other_settings_and_names_the_field() {
        let dir = std::env::temp_dir().join(format!("rgpt-demo-claim-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let config = quick();
        claim_run_dir(&config, config.model.refiner, &dir).unwrap();
        claim_run_dir(&config, config.model.refiner, &dir).unwrap();

        let mut bigger = config.clone();
        bigger.world.images += 1;
        let err = claim_run_dir(&bigger, config.model.refiner, &dir)
            .unwrap_err()
            .to_string();
        assert!(err.contains("`world.images` differs"), "{err}");

        let err = claim_run_dir(&config, RefinerKind::None, &dir)
            .unwrap_err()
            .to_string();
        assert!(err.contains("`model.refiner` differs"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_text_stage_needs_the_text_world_and_region_tasks() {
        let full = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/demo-tiny.yaml");
        let full = DemoConfig::from_file(&full).unwrap();
        assert!(full.world.text && full.stages[0].text);

        let mut no_text_world = full.clone();
        no_text_world.world.text = false;
        let err = no_text_world.validate().unwrap_err().to_string();
        assert!(
            err.contains("stages.text") && err.contains("world.text: true"),
            "{err}"
        );

        // Aligning regions needs image regions with names.
        let image_stage = full.stages.iter().position(|s| !s.text).unwrap();
        let mut aligned_text = full.clone();
        aligned_text.stages[0].align_regions = 1.0;
        let err = aligned_text.validate().unwrap_err().to_string();
        assert!(
            err.contains("stages.align_regions") && err.contains("no image regions"),
            "{err}"
        );
        let mut unnamed = full.clone();
        unnamed.world.text_regions = rgpt_data::synth::text::TextRegions::Words;
        unnamed.stages[image_stage].align_regions = 1.0;
        let err = unnamed.validate().unwrap_err().to_string();
        assert!(
            err.contains("stages.align_regions") && err.contains("colour_shape"),
            "{err}"
        );

        let mut image_caption = full.clone();
        image_caption.stages[0]
            .tasks
            .insert("synth-image-caption".into(), 1.0);
        let err = image_caption.validate().unwrap_err().to_string();
        assert!(
            err.contains("`synth-image-caption` has no text form"),
            "{err}"
        );
        // The held-out world is never written as text.
        assert!(!full.test_world().text);
    }

    #[test]
    fn a_words_tokenizer_with_split_punctuation_is_refused_before_any_work() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/demo-tiny.yaml");
        let full = DemoConfig::from_file(&path).unwrap();
        assert_eq!(full.model.tokenizer, crate::tiny::TokenizerKind::Words);
        let mut both = full.clone();
        both.model.split_punctuation = true;
        let err = both.validate().unwrap_err().to_string();
        assert!(err.contains("model.split_punctuation"), "{err}");
    }

    #[test]
    fn a_target_given_as_a_percentage_is_refused() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/demo-tiny.yaml");
        let full = DemoConfig::from_file(&path).unwrap();
        let targets = full
            .targets
            .expect("the demo config sets the issue's targets");
        assert_eq!((targets.region_cls_acc, targets.rec_acc), (0.9, 0.85));
        let mut percent = full.clone();
        percent.targets = Some(DemoTargets {
            rec_acc: 85.0,
            ..targets
        });
        let err = percent.validate().unwrap_err().to_string();
        assert!(
            err.contains("targets.rec_acc") && err.contains("fraction"),
            "{err}"
        );
    }

    #[test]
    fn an_ablation_shares_only_the_leading_text_stages_that_train_only_the_llm() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/demo-tiny.yaml");
        let full = DemoConfig::from_file(&path).unwrap();
        // language and rec-lookup (text, LLM only), then pretrain and
        // finetune on images.
        assert_eq!(refiner_free_stages(&full), 2);

        // A text stage that also trains the connector is the run's own.
        let mut connector = full.clone();
        connector.stages[0].stage = Stage::Custom(vec![Part::Connector, Part::Llm]);
        assert_eq!(refiner_free_stages(&connector), 0);

        // Only a leading run of them: a text stage after an image stage
        // starts from weights that saw the refiner.
        let mut late = full.clone();
        late.stages.swap(0, 2);
        assert_eq!(refiner_free_stages(&late), 0);

        let mut three = full.clone();
        let mut extra = three.stages[0].clone();
        extra.name = "language-2".into();
        three.stages.insert(1, extra);
        assert_eq!(refiner_free_stages(&three), 3);
    }
}
