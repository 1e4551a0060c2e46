//! The predictions file of a run: one JSON line per answered question,
//! appended and flushed batch by batch, so a stopped run resumes where it
//! was by skipping the ids already there. A torn last line (the process
//! died mid-write) is ignored and rewritten.
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::EvalError;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    pub id: String,
    pub answer: String,
    /// Classification: each class's probability (log-likelihoods of the
    /// class names, normalised over the classes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scores: Option<BTreeMap<String, f64>>,
    /// Why the model could not answer (e.g. the prompt exceeds its
    /// context); such a question counts as wrong and is reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

pub struct PredictionStore {
    path: PathBuf,
    done: BTreeMap<String, Prediction>,
    file: File,
}

impl PredictionStore {
    /// Opens (or creates) `path`, reading what an earlier run answered.
    pub fn open(path: &Path) -> Result<Self, EvalError> {
        let io = |source| EvalError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut done = BTreeMap::new();
        let mut valid_bytes = 0u64;
        if path.exists() {
            let reader = BufReader::new(File::open(path).map_err(io)?);
            let mut lines = reader.split(b'\n').enumerate().peekable();
            while let Some((i, line)) = lines.next() {
                let line = line.map_err(io)?;
                let last = lines.peek().is_none();
                match serde_json::from_slice::<Prediction>(&line) {
                    Ok(p) => {
                        valid_bytes += line.len() as u64 + 1;
                        done.insert(p.id.clone(), p);
                    }
                    Err(_) if last => break,
                    Err(e) => {
                        return Err(EvalError::Prediction {
                            path: path.to_path_buf(),
                            line: i + 1,
                            message: e.to_string(),
                        })
                    }
                }
            }
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(io)?;
        file.set_len(valid_bytes.min(file.metadata().map_err(io)?.len()))
            .map_err(io)?;
        Ok(PredictionStore {
            path: path.to_path_buf(),
            done,
            file,
        })
    }

    pub fn get(&self, id: &str) -> Option<&Prediction> {
        self.done.get(id)
    }

    pub fn len(&self) -> usize {
        self.done.len()
    }

    pub fn is_empty(&self) -> bool {
        self.done.is_empty()
    }

    /// Appends a batch and flushes it to disk.
    pub fn append(&mut self, batch: Vec<Prediction>) -> Result<(), EvalError> {
        let mut text = String::new();
        for p in &batch {
            text.push_str(&serde_json::to_string(p).unwrap_or_default());
            text.push('\n');
        }
        let io = |source| EvalError::Io {
            path: self.path.clone(),
            source,
        };
        self.file.write_all(text.as_bytes()).map_err(io)?;
        self.file.sync_data().map_err(io)?;
        for p in batch {
            self.done.insert(p.id.clone(), p);
        }
        Ok(())
    }
}
