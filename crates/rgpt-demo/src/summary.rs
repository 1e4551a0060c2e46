//! The results of one demo run (`results.json`): the headline accuracies,
//! by region size, every metric of every task, and what each phase did.
use std::collections::BTreeMap;

use rgpt_vision::refiner::RefinerKind;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::showcase::Dialogue;
use crate::stages::StageReport;
use crate::tower_pretrain::TowerReport;

/// The results of one demo run (`results.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DemoResults {
    pub refiner: RefinerKind,
    /// Shape classification on held-out regions, the class picked by
    /// likelihood among the closed set (the paper's protocol).
    pub region_cls_acc: f64,
    /// The same, reading the generated answer.
    pub region_cls_generated_acc: f64,
    /// The control: shape classification with each question asked about
    /// another question's regions. A model that reads its regions scores
    /// far below `region_cls_acc` here; one that ignores them, the same.
    #[serde(default)]
    pub region_cls_shuffled_acc: f64,
    pub rec_acc: f64,
    pub caption_cider: f64,
    /// Tower pre-training and every stage, in seconds of work.
    pub train_seconds: f64,
    /// Scoring the held-out world and replaying the dialogues, in seconds.
    #[serde(default)]
    pub eval_seconds: f64,
    /// `small` / `medium` / `large`: each with `region_cls_acc`, `rec_acc`.
    pub by_size: BTreeMap<String, BTreeMap<String, f64>>,
    pub tower: TowerReport,
    /// Each stage's steps, seconds and final loss.
    pub stages: Vec<StageReport>,
    /// Every metric of every task, as `rgpt eval` reports them.
    pub eval: BTreeMap<String, Value>,
    /// A few held-out conversations (their regions drawn in `samples.png`).
    pub dialogues: Vec<Dialogue>,
}

pub(crate) fn summarise(
    refiner: RefinerKind,
    eval: BTreeMap<String, Value>,
    tower: TowerReport,
    stages: Vec<StageReport>,
    train_seconds: f64,
) -> DemoResults {
    let number = |task: &str, key: &str| eval[task][key].as_f64().unwrap_or(f64::NAN);
    let mut by_size: BTreeMap<String, BTreeMap<String, f64>> = BTreeMap::new();
    for (task, name) in [("synth-shape", "region_cls_acc"), ("synth-rec", "rec_acc")] {
        if let Some(sizes) = eval[task]["by_size"].as_object() {
            for (size, scores) in sizes {
                if let Some(accuracy) = scores["accuracy"].as_f64() {
                    by_size
                        .entry(size.clone())
                        .or_default()
                        .insert(name.to_string(), accuracy);
                }
            }
        }
    }
    DemoResults {
        refiner,
        region_cls_acc: number("synth-shape", "accuracy"),
        region_cls_generated_acc: number("synth-shape", "generated_accuracy"),
        region_cls_shuffled_acc: eval
            .get(crate::evaluate::SHUFFLED)
            .and_then(|scores| scores["accuracy"].as_f64())
            .unwrap_or(f64::NAN),
        rec_acc: number("synth-rec", "accuracy"),
        caption_cider: number("synth-caption", "CIDEr"),
        train_seconds,
        eval_seconds: 0.0,
        by_size,
        tower,
        stages,
        eval,
        dialogues: Vec::new(),
    }
}

/// `json!` of the headline numbers, for a table.
pub fn headline(results: &DemoResults) -> Value {
    json!({
        "refiner": results.refiner,
        "region_cls_acc": results.region_cls_acc,
        "rec_acc": results.rec_acc,
        "caption_cider": results.caption_cider,
        "train_seconds": results.train_seconds,
    })
}
