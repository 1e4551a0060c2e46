//! The demo's first phase, made once per demo directory and shared by its
//! ablation runs: the tokenizer trained on the world's conversations, the
//! vision tower pre-trained on its images ([`crate::tower_pretrain`]), and
//! each run's initial model around that tower.
use std::path::{Path, PathBuf};

use rgpt_data::synth::text::TEXT_TASKS;
use rgpt_data::synth::write::{task_file, text_task_file};
use rgpt_llm::Tokenizer;
use rgpt_train::scratch::{build_tiny_with_tokenizer, train_tokenizer, TinySpec};
use tch::Tensor;

use crate::run_dir::{read_json, write_error, write_json, RunDirs, TOWER_REPORT, TOWER_WEIGHTS};
use crate::tower_pretrain::{pretrain_tower, TowerPretrainConfig, TowerReport};
use crate::{DemoConfig, DemoError, DemoEvent};

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

/// The trained tokenizer and the pre-trained tower, made once per demo
/// directory.
pub(crate) fn ensure_tower(
    config: &DemoConfig,
    dirs: &RunDirs,
    on_event: &mut dyn FnMut(DemoEvent<'_>),
) -> Result<(Tokenizer, TowerReport), DemoError> {
    let dir = dirs.tower();
    let report_path = dir.join(TOWER_REPORT);
    if report_path.is_file() {
        let tokenizer = Tokenizer::from_dir(&dir).map_err(rgpt_model::ModelError::from)?;
        return Ok((tokenizer, read_json(&report_path)?));
    }
    on_event(DemoEvent::Phase("training the tokenizer"));
    std::fs::create_dir_all(&dir).map_err(write_error(&dir))?;
    let files = tokenizer_files(&dirs.world(), config.world.text);
    let file_refs: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    let tokenizer = train_tokenizer(&config.model, &file_refs)?;
    tokenizer
        .save(&dir.join("tokenizer.json"))
        .map_err(rgpt_model::ModelError::from)?;

    on_event(DemoEvent::Phase("pre-training the vision tower"));
    let (model, vs, preprocessor) =
        build_tiny_with_tokenizer(&config.model, &tokenizer, config.seed)?;
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
    std::fs::rename(&tmp, dir.join(TOWER_WEIGHTS)).map_err(write_error(&dir))?;
    write_json(&report_path, &report)?;
    Ok((tokenizer, report))
}

/// The run's model before its first trained stage, saved as a checkpoint:
/// fresh weights around the pre-trained tower, and the decoder of
/// `decoder_from` when given.
pub(crate) fn build_initial_model(
    config: &DemoConfig,
    spec: &TinySpec,
    dirs: &RunDirs,
    tokenizer: &Tokenizer,
    out: &Path,
    decoder_from: Option<&Path>,
) -> Result<(), DemoError> {
    let (model, vs, preprocessor) = build_tiny_with_tokenizer(spec, tokenizer, config.seed + 1)?;
    rgpt_weights::Checkpoint::open(dirs.tower().join(TOWER_WEIGHTS))?.load_under(
        &vs,
        "vision_tower.",
        &mut |_| {},
    )?;
    if let Some(dir) = decoder_from {
        rgpt_weights::Checkpoint::open(dir)?.load_under(&vs, "language_model.", &mut |_| {})?;
    }
    let source = out.with_extension("source");
    std::fs::create_dir_all(&source).map_err(write_error(&source))?;
    write_json(&source.join("preprocessor_config.json"), &preprocessor)?;
    let fresh = out.with_extension("new");
    let _ = std::fs::remove_dir_all(&fresh);
    model.save_pretrained(&vs, tokenizer, &[&source], &fresh, None)?;
    let _ = std::fs::remove_dir_all(out);
    std::fs::rename(&fresh, out).map_err(write_error(out))?;
    let _ = std::fs::remove_dir_all(&source);
    Ok(())
}
