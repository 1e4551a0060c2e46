//! The demo's training stages: each a [`TrainConfig`] over the world's
//! task files, trained (with held-out points of the learning curve when
//! asked) or, in an ablation run, taken from the main run when it cannot
//! depend on the refiner; each leaves a [`StageReport`].
use std::path::{Path, PathBuf};
use std::time::Instant;

use rgpt_data::synth::write::{task_file, text_task_file};
use rgpt_llm::Tokenizer;
use rgpt_model::chat::RegionGenerator;
use rgpt_train::config::{DataConfig, DataFile, ModelSource, TrainConfig, TrainDtype};
use rgpt_train::freeze::Part;
use rgpt_train::scratch::TinySpec;
use rgpt_train::trainer::Trainer;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tch::{Device, Kind};

use crate::evaluate::score_tasks;
use crate::run_dir::{append_line, read_json, RunDirs, STAGE_REPORT};
use crate::tower_phase::build_initial_model;
use crate::{DemoConfig, DemoError, DemoEvent, DemoStage};

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
) -> Result<CurvePoint, DemoError> {
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

/// How many of the first stages read only text and train only the LLM.
/// Without an image their training cannot depend on the refiner, so every
/// run of an ablation would repeat the same work.
pub(crate) fn refiner_free_stages(config: &DemoConfig) -> usize {
    config
        .stages
        .iter()
        .take_while(|stage| stage.text && stage.stage.trainable() == [Part::Llm])
        .count()
}

/// Stands in for training a refiner-free stage in an ablation run: this
/// run's initial weights (its own refiner and connector) with the decoder
/// the main run's stage trained. Its report is the main run's, marked.
pub(crate) fn share_stage(
    config: &DemoConfig,
    spec: &TinySpec,
    dirs: &RunDirs,
    tokenizer: &Tokenizer,
    stage: &DemoStage,
    out: &Path,
) -> Result<StageReport, DemoError> {
    let trained = dirs.root.join(&stage.name);
    let report_path = trained.join(STAGE_REPORT);
    if !report_path.is_file() {
        return Err(DemoError::Invalid {
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

pub(crate) fn train_stage(
    config: &DemoConfig,
    stage: &DemoStage,
    dirs: &RunDirs,
    from: &Path,
    out: &Path,
    curve: Option<CurveOptions>,
    on_event: &mut dyn FnMut(DemoEvent<'_>),
) -> Result<StageReport, DemoError> {
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
            strict: true,
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
        activation_checkpointing: false,
        distributed: None,
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

#[cfg(test)]
mod tests {
    use super::*;
    use rgpt_train::freeze::Stage;

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
