//! Scoring the held-out world: shape classification, REC and region
//! captions of its first images, each task file evaluated as `rgpt eval`
//! evaluates one ([`rgpt_eval::evaluate_task`]).
use std::collections::BTreeMap;
use std::path::Path;

use rgpt_data::synth::write::task_file;
use rgpt_data::synth::ShapeKind;
use rgpt_eval::caption::MeteorSource;
use rgpt_eval::runner::Evaluator;
use rgpt_eval::{evaluate_task, TaskKind, TaskOptions};
use rgpt_model::chat::RegionGenerator;
use serde_json::Value;

use crate::run_dir::{write_error, write_json};
use crate::{DemoConfig, DemoError, DemoEvent};

/// Scores the held-out world: shape classification, REC and region
/// captions, and shape classification again with every question asked
/// about another question's regions (the control, [`SHUFFLED`]); answers
/// kept under `out` so a rerun resumes.
pub(crate) fn evaluate(
    config: &DemoConfig,
    generator: &RegionGenerator,
    test_world: &Path,
    out: &Path,
    on_event: &mut dyn FnMut(DemoEvent<'_>),
) -> Result<BTreeMap<String, Value>, DemoError> {
    let tasks = [
        ("synth-shape", config.eval.images),
        ("synth-rec", config.eval.images),
        ("synth-caption", config.eval.caption_images),
        (SHUFFLED, config.eval.images),
    ];
    let results = score_tasks(config, generator, test_world, &tasks, out, on_event)?;
    write_json(&out.join("results.json"), &results)?;
    Ok(results)
}

/// The control's name in the results: `synth-shape` with the regions
/// shuffled between questions ([`rgpt_eval::items::shuffle_regions`]).
pub(crate) const SHUFFLED: &str = "synth-shape-shuffled-regions";

/// Answers and scores the first `images` test samples of each task (the
/// control [`SHUFFLED`] among them).
pub(crate) fn score_tasks(
    config: &DemoConfig,
    generator: &RegionGenerator,
    test_world: &Path,
    tasks: &[(&str, usize)],
    out: &Path,
    on_event: &mut dyn FnMut(DemoEvent<'_>),
) -> Result<BTreeMap<String, Value>, DemoError> {
    std::fs::create_dir_all(out).map_err(write_error(out))?;
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
    for &(name, images) in tasks {
        let shuffle_regions = name == SHUFFLED;
        let task = if shuffle_regions { "synth-shape" } else { name };
        let kind = TaskKind::of(task).ok_or_else(|| DemoError::Invalid {
            field: "eval",
            message: format!("`{task}` is not a task the demo can score"),
        })?;
        let options = TaskOptions {
            limit: Some(images),
            classes: if kind == TaskKind::Classification {
                shapes.clone()
            } else {
                Vec::new()
            },
            meteor: MeteorSource::Off,
            shuffle_regions,
        };
        let scored = evaluate_task(
            &evaluator,
            &task_file(test_world, task),
            kind,
            &options,
            &out.join(format!("{name}.jsonl")),
            &mut |done, total| on_event(DemoEvent::Eval(name, done, total)),
        )?;
        results.insert(name.to_string(), scored.results);
    }
    Ok(results)
}
