//! The demo's settings (`configs/demo-tiny.yaml`, `configs/demo-quick.yaml`):
//! the world, the tiny model, the tower's pre-training, the stages and how
//! much of the held-out world is scored, checked before any work starts.
use std::collections::BTreeMap;
use std::path::Path;

use rgpt_data::synth::text::TEXT_TASKS;
use rgpt_data::synth::SynthConfig;
use rgpt_train::freeze::Stage;
use rgpt_train::schedule::Schedule;
use rgpt_train::scratch::TinySpec;
use serde::{Deserialize, Serialize};

use crate::tower_pretrain::TowerPretrainConfig;
use crate::DemoError;

/// Everything a demo run does (`configs/demo-tiny.yaml`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DemoConfig {
    /// The training world.
    pub world: SynthConfig,
    /// The held-out world: the training world's settings with its own
    /// seed and image count.
    pub test: TestWorld,
    /// The tiny model.
    pub model: TinySpec,
    /// Vision-tower pre-training (its `train_images` and `seed` come from
    /// the world).
    pub tower: TowerPretrainConfig,
    /// The training stages, in order.
    pub stages: Vec<DemoStage>,
    pub eval: DemoEval,
    pub seed: u64,
    /// The bar the run is judged by on held-out images: the printed table
    /// says whether each is met, and the learning curves draw them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub targets: Option<DemoTargets>,
}

/// Held-out accuracies a demo config sets out to reach (fractions).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DemoTargets {
    /// Shape classification, the closed set by likelihood.
    pub region_cls_acc: f64,
    pub rec_acc: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestWorld {
    pub images: u64,
    pub seed: u64,
}

/// One training stage: a [`rgpt_train::config::TrainConfig`] over the world's task files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DemoStage {
    /// Names the stage's directory.
    pub name: String,
    #[serde(with = "serde_yaml::with::singleton_map")]
    pub stage: Stage,
    /// Sampling weight of each world task (`synth-shape`, `synth-rec`, ...).
    pub tasks: BTreeMap<String, f64>,
    pub lr: f64,
    pub steps: u64,
    pub global_batch: usize,
    pub micro_batch: usize,
    #[serde(default = "default_warmup")]
    pub warmup_ratio: f64,
    /// After warm-up: `cosine` (the paper's) or `constant`.
    #[serde(default)]
    pub schedule: Schedule,
    /// Train on the tasks' text form (`world.text` must be on): no image,
    /// every region given by its name (`world.text_regions`). The demo's
    /// first stages pre-train the decoder so, standing in for the Vicuna
    /// RegionGPT starts from.
    #[serde(default)]
    pub text: bool,
    /// Weight of the regions' alignment with their names' codes
    /// (`TrainConfig::align_regions`; 0: off). Needs `world.text_regions`
    /// `named` or `colour_shape`, whose worlds name every region.
    #[serde(default, skip_serializing_if = "rgpt_train::config::is_zero")]
    pub align_regions: f64,
}

fn default_warmup() -> f64 {
    0.03
}

/// How much of the held-out world is scored.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DemoEval {
    /// Test images whose classification and REC questions are asked.
    pub images: usize,
    /// Test images whose region captions are generated.
    pub caption_images: usize,
    pub batch_size: usize,
    pub max_new_tokens: usize,
}

/// `configs/demo-tiny.yaml` and `configs/demo-quick.yaml`, built into the
/// binary so `rgpt demo` runs from any directory.
const BUILTIN: [(&str, &str); 2] = [
    (
        "configs/demo-tiny.yaml",
        include_str!("../../../configs/demo-tiny.yaml"),
    ),
    (
        "configs/demo-quick.yaml",
        include_str!("../../../configs/demo-quick.yaml"),
    ),
];

impl DemoConfig {
    pub fn from_file(path: &Path) -> Result<Self, DemoError> {
        let text = std::fs::read_to_string(path).map_err(|source| DemoError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_yaml(&text, path)
    }

    /// The committed demo config (`quick`: the smaller one), as built into
    /// the binary.
    pub fn builtin(quick: bool) -> Result<Self, DemoError> {
        let (name, text) = BUILTIN[usize::from(quick)];
        Self::from_yaml(text, Path::new(name))
    }

    /// Parses and checks a config; `path` names it in errors.
    fn from_yaml(text: &str, path: &Path) -> Result<Self, DemoError> {
        let config: DemoConfig = serde_yaml::from_str(text).map_err(|e| DemoError::Config {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), DemoError> {
        let invalid = |field, message: String| Err(DemoError::Invalid { field, message });
        self.world.validate()?;
        self.model.validate()?;
        if let Some(targets) = self.targets {
            for (field, value) in [
                ("targets.region_cls_acc", targets.region_cls_acc),
                ("targets.rec_acc", targets.rec_acc),
            ] {
                if !(value > 0.0 && value <= 1.0) {
                    return invalid(
                        field,
                        format!("{value} is not an accuracy: give a fraction in (0, 1]"),
                    );
                }
            }
        }
        if self.stages.is_empty() {
            return invalid("stages", "list at least one training stage".into());
        }
        for stage in &self.stages {
            if stage.tasks.is_empty() {
                return invalid(
                    "stages.tasks",
                    format!("stage `{}` trains on no task", stage.name),
                );
            }
            if stage.text && !self.world.text {
                return invalid(
                    "stages.text",
                    format!(
                        "stage `{}` trains on the world's text form: set `world.text: true`",
                        stage.name
                    ),
                );
            }
            if stage.align_regions > 0.0 {
                let why = if stage.text {
                    Some("trains on text, which has no image regions to align")
                } else if !(self.world.text && self.world.text_regions.is_named()) {
                    Some(
                        "aligns regions with their names: set `world.text: true` and \
                         `world.text_regions` to `named` or `colour_shape`",
                    )
                } else {
                    None
                };
                if let Some(why) = why {
                    return invalid(
                        "stages.align_regions",
                        format!("stage `{}` {why}", stage.name),
                    );
                }
            }
            for task in stage.tasks.keys() {
                if stage.text && !TEXT_TASKS.contains(&task.as_str()) {
                    return invalid(
                        "stages.tasks",
                        format!(
                            "stage `{}` trains on text, and `{task}` has no text form (use {})",
                            stage.name,
                            TEXT_TASKS.join(", ")
                        ),
                    );
                }
                if !rgpt_data::synth::TASKS.contains(&task.as_str()) {
                    return invalid(
                        "stages.tasks",
                        format!(
                            "stage `{}`: `{task}` is not a world task (use {})",
                            stage.name,
                            rgpt_data::synth::TASKS.join(", ")
                        ),
                    );
                }
            }
        }
        if self.test.images == 0 || self.eval.images == 0 {
            return invalid("eval.images", "score at least one test image".into());
        }
        Ok(())
    }

    /// The held-out world's settings.
    pub fn test_world(&self) -> SynthConfig {
        SynthConfig {
            images: self.test.images,
            seed: self.test.seed,
            // Only training reads the text form.
            text: false,
            ..self.world.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_text_stage_needs_the_text_world_and_region_tasks() {
        let full = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/demo-tiny.yaml");
        let full = DemoConfig::from_file(&full).unwrap();
        assert!(full.world.text && full.stages[0].text);

        let mut no_text_world = full.clone();
        no_text_world.world.text = false;
        let err = no_text_world.validate().unwrap_err().to_string();
        assert!(
            err.contains("stages.text") && err.contains("world.text: true"),
            "{err}"
        );

        // Aligning regions needs image regions with names.
        let image_stage = full.stages.iter().position(|s| !s.text).unwrap();
        let mut aligned_text = full.clone();
        aligned_text.stages[0].align_regions = 1.0;
        let err = aligned_text.validate().unwrap_err().to_string();
        assert!(
            err.contains("stages.align_regions") && err.contains("no image regions"),
            "{err}"
        );
        let mut unnamed = full.clone();
        unnamed.world.text_regions = rgpt_data::synth::text::TextRegions::Words;
        unnamed.stages[image_stage].align_regions = 1.0;
        let err = unnamed.validate().unwrap_err().to_string();
        assert!(
            err.contains("stages.align_regions") && err.contains("colour_shape"),
            "{err}"
        );

        let mut image_caption = full.clone();
        image_caption.stages[0]
            .tasks
            .insert("synth-image-caption".into(), 1.0);
        let err = image_caption.validate().unwrap_err().to_string();
        assert!(
            err.contains("`synth-image-caption` has no text form"),
            "{err}"
        );
        // The held-out world is never written as text.
        assert!(!full.test_world().text);
    }

    #[test]
    fn a_words_tokenizer_with_split_punctuation_is_refused_before_any_work() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/demo-tiny.yaml");
        let full = DemoConfig::from_file(&path).unwrap();
        assert_eq!(
            full.model.tokenizer,
            rgpt_train::scratch::TokenizerKind::Words
        );
        let mut both = full.clone();
        both.model.split_punctuation = true;
        let err = both.validate().unwrap_err().to_string();
        assert!(err.contains("model.split_punctuation"), "{err}");
    }

    #[test]
    fn a_target_given_as_a_percentage_is_refused() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/demo-tiny.yaml");
        let full = DemoConfig::from_file(&path).unwrap();
        let targets = full
            .targets
            .expect("the demo config sets the issue's targets");
        assert_eq!((targets.region_cls_acc, targets.rec_acc), (0.9, 0.85));
        let mut percent = full.clone();
        percent.targets = Some(DemoTargets {
            rec_acc: 85.0,
            ..targets
        });
        let err = percent.validate().unwrap_err().to_string();
        assert!(
            err.contains("targets.rec_acc") && err.contains("fraction"),
            "{err}"
        );
    }
}
