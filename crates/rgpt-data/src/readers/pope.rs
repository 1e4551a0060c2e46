//! POPE question files (JSON lines `{question_id, image, text, label}`,
//! label `yes` / `no`), as the POPE repository publishes them.
use std::io::BufRead;
use std::path::Path;

use serde::Deserialize;

use crate::DataError;

#[derive(Debug, Clone, Deserialize)]
pub struct PopeQuestion {
    pub question_id: u64,
    pub image: String,
    pub text: String,
    pub label: String,
}

pub fn read_questions(path: &Path) -> Result<Vec<PopeQuestion>, DataError> {
    let reader = super::open(path)?;
    let mut out = Vec::new();
    for (i, line) in reader.lines().enumerate() {
        let line = line.map_err(|source| DataError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        if line.trim().is_empty() {
            continue;
        }
        let question: PopeQuestion =
            serde_json::from_str(&line).map_err(|e| DataError::JsonLine {
                path: path.to_path_buf(),
                line: i + 1,
                message: e.to_string(),
            })?;
        if question.label != "yes" && question.label != "no" {
            return Err(DataError::JsonLine {
                path: path.to_path_buf(),
                line: i + 1,
                message: format!("label must be \"yes\" or \"no\", got {:?}", question.label),
            });
        }
        out.push(question);
    }
    Ok(out)
}
