//! Which parts of RGPT train (paper Sec. 3.2): pre-training trains the
//! refiner and the connector with the vision tower and the LLM frozen;
//! fine-tuning also trains the LLM. Freezing is real: a frozen variable
//! has `requires_grad` off, so it gets no gradient and the optimiser keeps
//! no state for it. With LoRA, the LLM part trains its adapters only.
use rgpt_llm::lora::is_adapter_variable;
use serde::{Deserialize, Serialize};
use tch::nn::VarStore;

/// A part of the model, by the prefix of its variable names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Part {
    Vision,
    Refiner,
    Connector,
    Llm,
}

impl Part {
    pub const ALL: [Part; 4] = [Part::Vision, Part::Refiner, Part::Connector, Part::Llm];

    /// The part a variable belongs to, from its (HF-layout) name.
    pub fn of(name: &str) -> Option<Part> {
        if name.starts_with("vision_tower.") {
            Some(Part::Vision)
        } else if name.starts_with("feature_refiner.") {
            Some(Part::Refiner)
        } else if name.starts_with("multi_modal_projector.") {
            Some(Part::Connector)
        } else if name.starts_with("language_model.") {
            Some(Part::Llm)
        } else {
            None
        }
    }
}

/// The paper's stages, or an explicit list of parts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// Refiner and connector.
    Pretrain,
    /// Refiner, connector and LLM.
    Finetune,
    /// These parts.
    Custom(Vec<Part>),
}

impl Stage {
    pub fn trainable(&self) -> Vec<Part> {
        match self {
            Stage::Pretrain => vec![Part::Refiner, Part::Connector],
            Stage::Finetune => vec![Part::Refiner, Part::Connector, Part::Llm],
            Stage::Custom(parts) => parts.clone(),
        }
    }
}

/// Turns `requires_grad` on for the variables of `parts` and off for every
/// other; returns the names of the trainable ones, sorted.
pub fn set_trainable(vs: &VarStore, parts: &[Part]) -> Vec<String> {
    set_trainable_where(vs, |name| {
        Part::of(name).is_some_and(|p| parts.contains(&p))
    })
}

/// `set_trainable` for an LLM with LoRA adapters: where `parts` has the LLM,
/// only its adapters (`*.lora_A.weight`, `*.lora_B.weight`) train and its
/// own weights stay frozen.
pub fn set_trainable_with_lora(vs: &VarStore, parts: &[Part]) -> Vec<String> {
    set_trainable_where(vs, |name| match Part::of(name) {
        Some(Part::Llm) => parts.contains(&Part::Llm) && is_adapter_variable(name),
        Some(part) => parts.contains(&part),
        None => false,
    })
}

fn set_trainable_where(vs: &VarStore, train: impl Fn(&str) -> bool) -> Vec<String> {
    let mut trainable = Vec::new();
    for (name, var) in vs.variables() {
        let train = train(&name);
        let _ = var.set_requires_grad(train);
        if train {
            trainable.push(name);
        }
    }
    trainable.sort();
    trainable
}
