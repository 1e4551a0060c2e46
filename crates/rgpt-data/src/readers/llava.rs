//! LLaVA's conversation JSON (`blip_laion_cc_sbu_558k.json`,
//! `llava_v1_5_mix665k.json`): `[{id, image?, conversations: [{from,
//! value}]}]`, streamed. Ids are strings or numbers in the published files.
use std::path::Path;

use serde::Deserialize;

use crate::format::Turn;
use crate::DataError;

#[derive(Debug, Clone, Deserialize)]
pub struct LlavaRecord {
    pub id: serde_json::Value,
    #[serde(default)]
    pub image: Option<String>,
    pub conversations: Vec<LlavaTurn>,
}

/// A turn as published; `from` is kept as text because the files hold a
/// few speakers beyond human / gpt.
#[derive(Debug, Clone, Deserialize)]
pub struct LlavaTurn {
    pub from: String,
    pub value: String,
}

impl LlavaRecord {
    pub fn id_string(&self) -> String {
        match &self.id {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        }
    }

    /// The turns in our format, or why they cannot be.
    pub fn turns(&self) -> Result<Vec<Turn>, String> {
        self.conversations
            .iter()
            .map(|t| match t.from.as_str() {
                "human" | "user" => Ok(Turn::human(t.value.clone())),
                "gpt" | "assistant" => Ok(Turn::gpt(t.value.clone())),
                other => Err(format!("unknown speaker `{other}`")),
            })
            .collect()
    }
}

pub fn for_each_record(
    path: &Path,
    each: impl FnMut(LlavaRecord) -> Result<(), DataError>,
) -> Result<(), DataError> {
    super::for_each_in_json_array(path, "LLaVA conversation JSON", each)
}
