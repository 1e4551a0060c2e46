//! Reading a run's `metrics.jsonl` back, as series against the step, for
//! plots and reports.
//!
//! Each line is either a step record, the trainer's `StepMetrics` (only
//! `step`, `loss` and `lr` are read), or an evaluation record,
//! `{"step": 200, "eval": {"accuracy": 0.61, ...}}`, whose values become one
//! series per name.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::TrainError;

/// One optimiser step as the log recorded it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepPoint {
    pub step: u64,
    pub loss: f64,
    pub lr: f64,
}

/// The records of one `metrics.jsonl`, in step order.
#[derive(Debug, Clone, Default)]
pub struct MetricsLog {
    pub steps: Vec<StepPoint>,
    /// Evaluation series by name: `(step, value)` in step order.
    pub eval: BTreeMap<String, Vec<(u64, f64)>>,
}

#[derive(Deserialize)]
struct Line {
    step: Option<u64>,
    loss: Option<f64>,
    lr: Option<f64>,
    /// serde_json writes a non-finite value as `null`: such points are
    /// skipped rather than refused.
    eval: Option<BTreeMap<String, Option<f64>>>,
}

impl MetricsLog {
    /// Reads `path`. A resumed run repeats the steps after its last
    /// checkpoint, so when a step appears twice the later record (the run
    /// that went on) wins.
    pub fn read(path: &Path) -> Result<Self, TrainError> {
        let text = std::fs::read_to_string(path).map_err(|source| TrainError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses the text of a metrics file; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, TrainError> {
        let mut steps = BTreeMap::new();
        let mut eval: BTreeMap<String, BTreeMap<u64, f64>> = BTreeMap::new();
        for (index, raw) in text.lines().enumerate() {
            if raw.trim().is_empty() {
                continue;
            }
            let fail = |message: String| TrainError::Metrics {
                path: PathBuf::from(path),
                line: index + 1,
                message,
            };
            let line: Line = serde_json::from_str(raw).map_err(|e| {
                // serde_json's message ends "at line 1 column N": the line
                // is ours to give, the column is still worth keeping.
                let message = e.to_string();
                let message = message.split(" at line ").next().unwrap_or_default();
                fail(format!("{message} (column {})", e.column()))
            })?;
            let step = line
                .step
                .ok_or_else(|| fail("the record has no `step`".into()))?;
            match (line.eval, line.loss, line.lr) {
                (Some(values), _, _) => {
                    for (name, value) in values {
                        if let Some(value) = value {
                            eval.entry(name).or_default().insert(step, value);
                        }
                    }
                }
                (None, Some(loss), Some(lr)) => {
                    steps.insert(step, StepPoint { step, loss, lr });
                }
                (None, _, _) => {
                    return Err(fail(
                        "neither a step record (`loss` and `lr`) nor an `eval` record".into(),
                    ))
                }
            }
        }
        Ok(MetricsLog {
            steps: steps.into_values().collect(),
            eval: eval
                .into_iter()
                .map(|(name, points)| (name, points.into_iter().collect()))
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_records_of_a_step_win_and_eval_series_split_by_name() {
        let text = r#"{"step":1,"loss":3.0,"lr":0.001,"grad_norm":1.0}
{"step":2,"loss":2.5,"lr":0.002}
{"step":2,"eval":{"accuracy":0.4,"cider":null}}

{"step":2,"loss":2.4,"lr":0.002}
{"step":4,"eval":{"accuracy":0.5,"cider":0.7}}
"#;
        let log = MetricsLog::parse(text, Path::new("m.jsonl")).unwrap();
        let losses: Vec<_> = log.steps.iter().map(|p| (p.step, p.loss)).collect();
        assert_eq!(losses, [(1, 3.0), (2, 2.4)]);
        assert_eq!(log.eval["accuracy"], [(2, 0.4), (4, 0.5)]);
        assert_eq!(log.eval["cider"], [(4, 0.7)]);
    }

    #[test]
    fn a_record_that_is_neither_kind_names_its_line() {
        let text = "{\"step\":1,\"loss\":3.0,\"lr\":0.001}\n{\"step\":2,\"loss\":2.0}\n";
        let err = MetricsLog::parse(text, Path::new("run/metrics.jsonl"))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("run/metrics.jsonl, line 2: neither"),
            "{err}"
        );
    }
}
