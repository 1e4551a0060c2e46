//! Evaluating a task file, the one way `rgpt eval` and the demo do it: its
//! samples become questions ([`crate::items`]), a model answers those the
//! predictions file does not hold yet ([`Evaluator`], so a stopped run
//! resumes), and the task's metric family scores them
//! ([`crate::results`]). POPE's question files, which are not in the
//! conversation format, go through [`evaluate_items`] with
//! [`crate::items::pope_items`].
use std::collections::BTreeSet;
use std::path::Path;

use rgpt_data::format::read_samples;
use serde_json::Value;

use crate::caption::MeteorSource;
use crate::items::{items_of, shuffle_regions, EvalItem};
use crate::predictions::PredictionStore;
use crate::results::{caption_results, classification_results, pope_results, rec_results};
use crate::runner::Evaluator;
use crate::{EvalError, TaskKind};

/// How much of a task file is asked, and how it is scored.
#[derive(Debug, Clone, Default)]
pub struct TaskOptions {
    /// Only the first `limit` samples of the file (all when `None`).
    pub limit: Option<usize>,
    /// Classification: the closed set scored by likelihood; empty: every
    /// answer in the data.
    pub classes: Vec<String>,
    /// Captioning: where METEOR comes from.
    pub meteor: MeteorSource,
    /// Ask each question with another question's regions
    /// ([`crate::items::shuffle_regions`]): the control that shows how
    /// much of a score the regions carry.
    pub shuffle_regions: bool,
}

/// The scores of one task.
#[derive(Debug, Clone)]
pub struct TaskResults {
    /// The questions' `task` (the first one's; empty when there is none).
    pub task: String,
    /// Questions asked.
    pub questions: usize,
    /// The metrics, as `results.json` holds them.
    pub results: Value,
}

/// The questions of the first `limit` samples of `path`, each of which must
/// be a `kind` task (checked before any is answered).
pub fn task_items(
    path: &Path,
    kind: TaskKind,
    limit: Option<usize>,
) -> Result<Vec<EvalItem>, EvalError> {
    let mut items = Vec::new();
    for sample in read_samples(path)?.take(limit.unwrap_or(usize::MAX)) {
        items.extend(items_of(&sample?)?);
    }
    if let Some(other) = items.iter().find(|i| i.kind != kind) {
        return Err(EvalError::TaskMismatch {
            path: path.to_path_buf(),
            task: other.task.clone(),
            expected: kind,
        });
    }
    Ok(items)
}

/// Answers and scores the task file `path` (a `kind` task) with
/// `evaluator`, keeping the answers in `predictions`; `on_progress(done,
/// total)` after each batch.
pub fn evaluate_task(
    evaluator: &Evaluator<'_>,
    path: &Path,
    kind: TaskKind,
    options: &TaskOptions,
    predictions: &Path,
    on_progress: &mut dyn FnMut(usize, usize),
) -> Result<TaskResults, EvalError> {
    let mut items = task_items(path, kind, options.limit)?;
    if options.shuffle_regions {
        shuffle_regions(&mut items);
    }
    evaluate_items(evaluator, &items, kind, options, predictions, on_progress)
}

/// [`evaluate_task`] of questions already read (`options.limit` is not
/// applied again).
pub fn evaluate_items(
    evaluator: &Evaluator<'_>,
    items: &[EvalItem],
    kind: TaskKind,
    options: &TaskOptions,
    predictions: &Path,
    on_progress: &mut dyn FnMut(usize, usize),
) -> Result<TaskResults, EvalError> {
    let classes: Vec<String> = if options.classes.is_empty() && kind == TaskKind::Classification {
        let set: BTreeSet<String> = items.iter().map(|i| i.answer.trim().to_string()).collect();
        set.into_iter().collect()
    } else {
        options.classes.clone()
    };
    let mut store = PredictionStore::open(predictions)?;
    evaluator.answer(items, &classes, &mut store, on_progress)?;
    let image_root = &evaluator.image_root;
    let results = match kind {
        TaskKind::Classification => classification_results(items, &classes, &store, image_root)?,
        TaskKind::Rec => rec_results(items, &store, image_root)?,
        TaskKind::Caption => caption_results(items, &store, options.meteor.clone())?,
        TaskKind::Pope => pope_results(items, &store)?,
    };
    Ok(TaskResults {
        task: items.first().map(|i| i.task.clone()).unwrap_or_default(),
        questions: items.len(),
        results,
    })
}
