//! Instruction variants and task-guided prompts (paper Sec. 3.2, Table 1),
//! kept in `configs/prompts/*.yaml` rather than written in code: each
//! file maps a set name to its list of paraphrases, and `guides` to the
//! task-guided prompts and fixed answers. One variant is sampled per
//! question, so a dataset sees about ten phrasings of each task.
//!
//! Those files are also compiled into the crate ([`PromptBank::builtin`]),
//! so a program built on it (an installed `rgpt`) needs no checkout and
//! works from any directory; [`PromptBank::from_dir`] reads a directory of
//! one's own instead.
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

/// The project's `configs/prompts/*.yaml`, embedded at build time, by file
/// name (a unit test checks that they equal the files on disk).
pub const BUILTIN_FILES: [(&str, &str); 5] = [
    (
        "captions.yaml",
        include_str!("../../../configs/prompts/captions.yaml"),
    ),
    (
        "classification.yaml",
        include_str!("../../../configs/prompts/classification.yaml"),
    ),
    (
        "guides.yaml",
        include_str!("../../../configs/prompts/guides.yaml"),
    ),
    (
        "rec.yaml",
        include_str!("../../../configs/prompts/rec.yaml"),
    ),
    (
        "recap.yaml",
        include_str!("../../../configs/prompts/recap.yaml"),
    ),
];

impl PromptBank {
    /// The prompt variants built into the crate: the project's
    /// `configs/prompts/*.yaml` as they were when it was compiled.
    pub fn builtin() -> Result<Self, DataError> {
        let mut bank = PromptBank::default();
        for (name, text) in BUILTIN_FILES {
            bank.add_yaml(text).map_err(|message| DataError::Format {
                path: Path::new("configs/prompts").join(name),
                what: "built-in prompt file",
                message,
            })?;
        }
        Ok(bank)
    }

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
                "{} holds no prompt files (*.yaml); pass a directory like the project's configs/prompts",
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The embedded copy is the files on disk, file for file, byte for
    /// byte: a prompt file added, removed or edited without rebuilding the
    /// list above fails here.
    #[test]
    fn builtin_prompts_equal_the_files_on_disk() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/prompts");
        let mut on_disk: Vec<(String, String)> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
            .map(|p| {
                let name = p.file_name().unwrap().to_string_lossy().into_owned();
                (name, std::fs::read_to_string(&p).unwrap())
            })
            .collect();
        on_disk.sort();
        let builtin: Vec<(String, String)> = BUILTIN_FILES
            .iter()
            .map(|(name, text)| (name.to_string(), text.to_string()))
            .collect();
        let names = |files: &[(String, String)]| -> Vec<String> {
            files.iter().map(|(name, _)| name.clone()).collect()
        };
        assert_eq!(names(&builtin), names(&on_disk), "prompt files");
        for ((name, embedded), (_, disk)) in builtin.iter().zip(&on_disk) {
            assert!(
                embedded == disk,
                "{name}: the embedded copy differs from the file"
            );
        }

        // And both read to the same bank.
        let from_disk = PromptBank::from_dir(&dir).unwrap();
        let builtin = PromptBank::builtin().unwrap();
        assert_eq!(builtin.sets, from_disk.sets);
        assert_eq!(builtin.guides, from_disk.guides);
        assert!(builtin.sets.len() >= 4 && !builtin.guides.is_empty());
    }
}
