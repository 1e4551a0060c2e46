//! LLaVA's image-level conversations, passed through (e.g. the 558K
//! captions of pre-training): the same turns in our format, checked.
use std::path::Path;

use crate::readers::llava::for_each_record;
use crate::{DataError, Sample};

use super::Built;

pub fn build_llava(path: &Path) -> Result<Built, DataError> {
    let mut built = Built::default();
    for_each_record(path, |record| {
        let id = record.id_string();
        let conversations = match record.turns() {
            Ok(turns) => turns,
            Err(message) => {
                built
                    .skips
                    .add("unknown speaker", format!("{id} ({message})"));
                return Ok(());
            }
        };
        let sample = Sample {
            id: id.clone(),
            image: record.image.clone(),
            width: None,
            height: None,
            regions: Vec::new(),
            conversations,
            task: "llava".into(),
            meta: None,
        };
        match sample.validate() {
            Ok(()) => built.samples.push(sample),
            Err(e) => built.skips.add("invalid conversation", e),
        }
        Ok(())
    })?;
    Ok(built)
}
