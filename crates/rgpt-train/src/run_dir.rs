//! A run's output directory: claimed for a fresh run, kept to resume one,
//! or cleared of a previous run's files to start over. A directory that
//! holds a run is never reused silently.
use std::path::Path;

use crate::config::TrainConfig;
use crate::TrainError;

/// How a run starts in its output directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunStart {
    /// A new run; the directory must not hold one.
    Fresh,
    /// Continue the run the directory holds, from its last checkpoint.
    Resume,
    /// Remove the previous run's checkpoints, metrics and model first.
    Overwrite,
}

/// What a run leaves in its output directory, removed by
/// [`RunStart::Overwrite`].
const RUN_FILES: [&str; 5] = [
    "checkpoint",
    "checkpoint.new",
    "checkpoint.old",
    "metrics.jsonl",
    "model",
];

/// Prepares `config.output_dir` for a run started as `start`, and keeps a
/// copy of the config file the run was given (`config.yaml`).
pub fn claim_output_dir(
    config: &TrainConfig,
    start: RunStart,
    config_file: &Path,
) -> Result<(), TrainError> {
    let out = &config.output_dir;
    let holds_run = out.join("checkpoint").exists() || out.join("metrics.jsonl").exists();
    if holds_run && start == RunStart::Fresh {
        return Err(TrainError::Invalid {
            field: "output_dir",
            message: format!(
                "{} already holds a run: resume it (rgpt train --resume) or start over \
                 (--overwrite)",
                out.display()
            ),
        });
    }
    if start == RunStart::Overwrite {
        for entry in RUN_FILES {
            let path = out.join(entry);
            let removed = if path.is_dir() {
                std::fs::remove_dir_all(&path)
            } else if path.exists() {
                std::fs::remove_file(&path)
            } else {
                Ok(())
            };
            removed.map_err(|source| TrainError::Write {
                path: path.clone(),
                source,
            })?;
        }
    }
    std::fs::create_dir_all(out).map_err(|source| TrainError::Write {
        path: out.clone(),
        source,
    })?;
    let copy = out.join("config.yaml");
    let same_file = std::fs::canonicalize(config_file).ok() == std::fs::canonicalize(&copy).ok();
    if !same_file {
        std::fs::copy(config_file, &copy)
            .map_err(|source| TrainError::Write { path: copy, source })?;
    }
    Ok(())
}
