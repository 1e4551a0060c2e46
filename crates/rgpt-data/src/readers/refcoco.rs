//! RefCOCOg's `refs(umd).p` (the `refer` toolkit's pickle: a list of dicts
//! `ref_id, ann_id, image_id, split, sentences[{sent, raw, tokens,
//! sent_id}], category_id`), read with `serde-pickle` and joined with the
//! dataset's `instances.json`. The published file was pickled by Python 2,
//! whose `str` arrives as bytes: those are decoded as UTF-8.
use std::path::Path;

use serde::Deserialize;

use crate::DataError;

#[derive(Debug, Clone, Deserialize)]
pub struct RefSentence {
    pub sent: String,
    #[serde(default)]
    pub raw: Option<String>,
    #[serde(default)]
    pub sent_id: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RefRecord {
    pub ref_id: u64,
    pub ann_id: u64,
    pub image_id: u64,
    pub split: String,
    pub category_id: u64,
    pub sentences: Vec<RefSentence>,
}

/// Reads `refs(umd).p`.
pub fn read_refs(path: &Path) -> Result<Vec<RefRecord>, DataError> {
    let options = serde_pickle::DeOptions::new().decode_strings();
    serde_pickle::from_reader(super::open(path)?, options).map_err(|e| DataError::Format {
        path: path.to_path_buf(),
        what: "RefCOCOg refs pickle",
        message: e.to_string(),
    })
}
