//! Instruction variants and task-guided prompts (paper Sec. 3.2, Table 1),
//! read from `configs/prompts/*.yaml` rather than written in code: each
//! file maps a set name to its list of paraphrases, and `guides` to the
//! task-guided prompts and fixed answers. One variant is sampled per
//! question, so a dataset sees about ten phrasings of each task.
use std::collections::BTreeMap;
use std::path::Path;

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::DataError;

/// Every prompt set of a prompts directory.
#[derive(Debug, Clone, Default)]
pub struct PromptBank {
    sets: BTreeMap<String, Vec<String>>,
    guides: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Entry {
    Variants(Vec<String>),
    Guides(BTreeMap<String, String>),
}

impl PromptBank {
    /// Reads every `*.yaml` file of `dir`.
    pub fn from_dir(dir: &Path) -> Result<Self, DataError> {
        let entries = std::fs::read_dir(dir).map_err(|source| DataError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let mut files: Vec<_> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(DataError::InvalidArgument(format!(
                "{} holds no prompt files (*.yaml); pass the project's configs/prompts",
                dir.display()
            )));
        }
        let mut bank = PromptBank::default();
        for file in files {
            let text = std::fs::read_to_string(&file).map_err(|source| DataError::Io {
                path: file.clone(),
                source,
            })?;
            bank.add_yaml(&text).map_err(|message| DataError::Format {
                path: file.clone(),
                what: "prompt file",
                message,
            })?;
        }
        Ok(bank)
    }

    /// Adds the sets of one YAML document.
    pub fn add_yaml(&mut self, text: &str) -> Result<(), String> {
        let doc: BTreeMap<String, Entry> = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
        for (name, entry) in doc {
            match entry {
                Entry::Variants(variants) if variants.is_empty() => {
                    return Err(format!("prompt set `{name}` is empty"))
                }
                Entry::Variants(variants) => {
                    self.sets.insert(name, variants);
                }
                Entry::Guides(guides) => self.guides.extend(guides),
            }
        }
        Ok(())
    }

    /// The variants of a set.
    pub fn variants(&self, set: &str) -> Result<&[String], DataError> {
        self.sets.get(set).map(Vec::as_slice).ok_or_else(|| {
            DataError::InvalidArgument(format!(
                "no prompt set `{set}` in the prompts directory (have: {})",
                self.sets.keys().cloned().collect::<Vec<_>>().join(", ")
            ))
        })
    }

    /// One variant of `set`, chosen by `rng`.
    pub fn pick<R: Rng>(&self, set: &str, rng: &mut R) -> Result<&str, DataError> {
        let variants = self.variants(set)?;
        Ok(&variants[rng.random_range(0..variants.len())])
    }

    /// A task-guided prompt or fixed answer from `guides`.
    pub fn guide(&self, name: &str) -> Result<&str, DataError> {
        self.guides.get(name).map(String::as_str).ok_or_else(|| {
            DataError::InvalidArgument(format!(
                "no guide `{name}` under `guides:` in the prompts directory"
            ))
        })
    }
}

/// Fills `{name}` fields of a template.
pub fn fill(template: &str, fields: &[(&str, &str)]) -> String {
    let mut out = template.to_string();
    for (name, value) in fields {
        out = out.replace(&format!("{{{name}}}"), value);
    }
    out
}

/// Where a REC candidate list writes each candidate's answer label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CandidateLabels {
    /// `<region>, <region> and <region>`, as the paper's Table 1.
    #[default]
    None,
    /// `Region [1] <region>, Region [2] <region> and Region [3] <region>`.
    Before,
    /// `<region> as Region [1], <region> as Region [2] and <region> as
    /// Region [3]`: a causal decoder reads each label after its region, so
    /// the label's own position can know whether its region is the answer.
    After,
}

/// The candidate list of a REC question with `count` regions, each labelled
/// as its answer (`Region [k]`) is written, as `labels` says; with `commas`
/// the candidates before the last are separated by commas, as the paper's
/// are, otherwise by a space alone.
pub fn candidate_list(count: usize, labels: CandidateLabels, commas: bool) -> String {
    let one = crate::format::REGION_TOKEN;
    let items: Vec<String> = (1..=count)
        .map(|k| match labels {
            CandidateLabels::None => one.to_string(),
            CandidateLabels::Before => format!("Region [{k}] {one}"),
            CandidateLabels::After => format!("{one} as Region [{k}]"),
        })
        .collect();
    match items.split_last() {
        None => String::new(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => {
            let separator = if commas { ", " } else { " " };
            format!("{} and {last}", rest.join(separator))
        }
    }
}

/// `<region>, <region> and <region>`: the candidate list of a REC question.
pub fn region_list(count: usize) -> String {
    candidate_list(count, CandidateLabels::None, true)
}
