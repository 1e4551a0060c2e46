//! `rgpt demo`: the whole system learning to understand regions, on any
//! machine, with nothing downloaded. A synthetic world of shapes is
//! rendered (train and held-out test images), a tiny RGPT is built from
//! nothing, its vision tower is pre-trained on the world (the stand-in for
//! CLIP, [`tower_pretrain`]), and the model then goes through the paper's two
//! stages (Sec. 3.2): captions first, then the task mix with the
//! task-guided prompts. The held-out images are scored with `rgpt-eval`'s
//! runners and metrics. Every phase writes its result before the next
//! starts, so an interrupted demo picks up where it stopped.
//!
//! This file runs the phases in order; each phase lives in its own module:
//! [`config`] (the demo's settings), [`run_dir`] (what a run directory
//! holds), [`tower_phase`] (tokenizer, tower and initial model),
//! [`stages`] (the training stages), [`evaluate`] (scoring the held-out
//! world), [`summary`] (the results), [`showcase`] and [`curves`] (the
//! pictures).
use std::path::Path;
use std::time::Instant;

use rgpt_data::prompts::PromptBank;
use rgpt_data::synth::{write_world, SynthConfig};
use rgpt_model::chat::RegionGenerator;
use rgpt_train::scratch::TinySpec;
use rgpt_train::trainer::StepMetrics;
use rgpt_vision::refiner::RefinerKind;
use tch::{Device, Kind};

pub mod config;
pub mod curves;
mod error;
pub mod evaluate;
pub mod run_dir;
pub mod showcase;
pub mod stages;
pub mod summary;
pub mod text;
pub mod tower_phase;
pub mod tower_pretrain;

pub use config::{DemoConfig, DemoEval, DemoStage, DemoTargets, TestWorld};
pub use error::DemoError;
pub use stages::{CurveOptions, CurvePoint, StageReport};
pub use summary::{headline, DemoResults};

use evaluate::evaluate;
use run_dir::{
    claim_run_dir, read_json, replace_dir, write_json, RunDirs, EVAL_REPORT, STAGE_REPORT,
};
use stages::{refiner_free_stages, share_stage, train_stage};
use summary::summarise;
use tower_phase::{build_initial_model, ensure_tower};
use tower_pretrain::TowerStep;

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
) -> Result<DemoResults, DemoError> {
    config.validate()?;
    let dirs = RunDirs::new(shared);
    std::fs::create_dir_all(out).map_err(run_dir::write_error(out))?;
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
    let eval_started = Instant::now();
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
    let eval_seconds = eval_seconds(&out.join("eval"), eval_started.elapsed().as_secs_f64())?;
    let train_seconds = tower.seconds + stages.iter().map(|s| s.seconds).sum::<f64>();
    let mut results = summarise(spec.refiner, eval, tower, stages, train_seconds);
    results.eval_seconds = eval_seconds;
    results.dialogues = dialogues;
    write_json(&out.join("results.json"), &results)?;
    Ok(results)
}

/// The evaluation's seconds: those of the run that first finished it (a
/// rerun only re-reads its answers), recorded in `eval/eval_report.json`
/// as a stage's are in its report.
fn eval_seconds(dir: &Path, measured: f64) -> Result<f64, DemoError> {
    let path = dir.join(EVAL_REPORT);
    if path.is_file() {
        let report: serde_json::Value = read_json(&path)?;
        if let Some(seconds) = report["seconds"].as_f64() {
            return Ok(seconds);
        }
    }
    write_json(&path, &serde_json::json!({ "seconds": measured }))?;
    Ok(measured)
}

/// Renders a world unless a finished one is there (its `summary.json`).
fn ensure_world(config: &SynthConfig, prompts: &PromptBank, dir: &Path) -> Result<(), DemoError> {
    let summary = dir.join("summary.json");
    if summary.is_file() {
        return Ok(());
    }
    let written = write_world(config, prompts, dir)?;
    write_json(&summary, &written)
}
