//! What a demo run directory holds and how it is written: the shared
//! world and tower, each run's stages, reports and settings, written
//! atomically so that an interrupted run resumes and a run made with other
//! settings is refused.
use std::path::{Path, PathBuf};

use rgpt_vision::refiner::RefinerKind;
use serde::Serialize;

use crate::{DemoConfig, DemoError};

/// Where a demo (or one of its ablation runs) keeps things.
pub(crate) struct RunDirs {
    pub root: PathBuf,
}

impl RunDirs {
    /// The directories of the run rooted at `root`.
    pub fn new(root: &Path) -> Self {
        RunDirs {
            root: root.to_path_buf(),
        }
    }
    pub fn world(&self) -> PathBuf {
        self.root.join("world/train")
    }
    pub fn test_world(&self) -> PathBuf {
        self.root.join("world/test")
    }
    pub fn tower(&self) -> PathBuf {
        self.root.join("tower")
    }
}

pub(crate) const TOWER_WEIGHTS: &str = "vision_tower.safetensors";
pub(crate) const TOWER_REPORT: &str = "tower_report.json";
pub(crate) const STAGE_REPORT: &str = "stage_report.json";
pub(crate) const EVAL_REPORT: &str = "eval_report.json";
const SETTINGS: &str = "demo_settings.json";

/// A failed read of `path`.
pub(crate) fn read_error(path: &Path) -> impl FnOnce(std::io::Error) -> DemoError + '_ {
    move |source| DemoError::Read {
        path: path.to_path_buf(),
        source,
    }
}

/// A failed write (or directory creation, copy, rename) at `path`.
pub(crate) fn write_error(path: &Path) -> impl FnOnce(std::io::Error) -> DemoError + '_ {
    move |source| DemoError::Write {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `value` as pretty JSON, atomically.
pub(crate) fn write_json(path: &Path, value: &impl Serialize) -> Result<(), DemoError> {
    let text = serde_json::to_string_pretty(value).unwrap_or_default();
    rgpt_weights::save::write_atomic(path, text.as_bytes())?;
    Ok(())
}

/// Every line of a JSON-lines file.
pub(crate) fn read_jsonl<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Vec<T>, DemoError> {
    let text = std::fs::read_to_string(path).map_err(read_error(path))?;
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| {
            serde_json::from_str(line).map_err(|e| DemoError::Json {
                path: path.to_path_buf(),
                message: format!("line {}: {e}", i + 1),
            })
        })
        .collect()
}

/// Reads a JSON file as `T`.
pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, DemoError> {
    let text = std::fs::read_to_string(path).map_err(read_error(path))?;
    serde_json::from_str(&text).map_err(|e| DemoError::Json {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// Appends one JSON line to `path`.
pub(crate) fn append_line(path: &Path, value: &impl Serialize) -> Result<(), DemoError> {
    use std::io::Write;
    let line = serde_json::to_string(value).unwrap_or_default() + "\n";
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(line.as_bytes()))
        .map_err(write_error(path))
}

/// Records the settings a run directory is made with, and refuses one made
/// with others: a rerun skips every finished phase, so a changed config
/// would otherwise be silently mixed with the old run's world and weights.
pub(crate) fn claim_run_dir(
    config: &DemoConfig,
    refiner: RefinerKind,
    out: &Path,
) -> Result<(), DemoError> {
    let path = out.join(SETTINGS);
    let mut settings = serde_json::to_value(config).unwrap_or_default();
    settings["model"]["refiner"] = serde_json::Value::String(refiner.name().into());
    if path.is_file() {
        let recorded: serde_json::Value = read_json(&path)?;
        if let Some(field) = first_difference(&recorded, &settings) {
            return Err(DemoError::Invalid {
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
pub(crate) fn replace_dir(from: &Path, to: &Path) -> Result<(), DemoError> {
    let fresh = to.with_extension("new");
    let _ = std::fs::remove_dir_all(&fresh);
    std::fs::create_dir_all(&fresh).map_err(write_error(&fresh))?;
    for entry in std::fs::read_dir(from).map_err(read_error(from))? {
        let entry = entry.map_err(read_error(from))?;
        let copy = fresh.join(entry.file_name());
        std::fs::copy(entry.path(), &copy).map_err(write_error(&copy))?;
    }
    let _ = std::fs::remove_dir_all(to);
    std::fs::rename(&fresh, to).map_err(write_error(to))
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
}
