//! A POPE-style existence split of the synthetic world (paper Table 8's
//! protocol on known ground truth): per image, "Is there a {colour}
//! {shape} in the image?" once for an object it shows (label yes) and once
//! for a colour-shape pair it does not show (label no), written as POPE's
//! question files are (`{question_id, image, text, label}` lines).
use std::path::Path;

use rand::seq::IndexedRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::vocab::{ColorName, ShapeKind};
use super::write::{ImageObjects, OBJECTS_FILE};
use crate::format::JsonlWriter;
use crate::readers::pope::PopeQuestion;
use crate::DataError;

#[derive(Serialize)]
struct Line<'a> {
    question_id: u64,
    image: &'a str,
    text: String,
    label: &'a str,
}

fn question(color: ColorName, shape: ShapeKind) -> String {
    format!("Is there a {} {} in the image?", color.name(), shape.name())
}

/// The questions for a world's `objects.jsonl`, balanced yes / no.
pub fn pope_questions(world_dir: &Path, seed: u64) -> Result<Vec<PopeQuestion>, DataError> {
    let path = world_dir.join(OBJECTS_FILE);
    let text = std::fs::read_to_string(&path).map_err(|source| DataError::Io {
        path: path.clone(),
        source,
    })?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut out = Vec::new();
    for (line, row) in text.lines().enumerate() {
        let image: ImageObjects = serde_json::from_str(row).map_err(|e| DataError::JsonLine {
            path: path.clone(),
            line: line + 1,
            message: e.to_string(),
        })?;
        let present: Vec<(ColorName, ShapeKind)> =
            image.objects.iter().map(|o| (o.color, o.shape)).collect();
        let absent: Vec<(ColorName, ShapeKind)> = ColorName::ALL
            .iter()
            .flat_map(|&c| ShapeKind::ALL.iter().map(move |&s| (c, s)))
            .filter(|pair| !present.contains(pair))
            .collect();
        if let (Some(&(c, s)), Some(&(ac, as_))) =
            (present.choose(&mut rng), absent.choose(&mut rng))
        {
            for (text, label) in [(question(c, s), "yes"), (question(ac, as_), "no")] {
                out.push(PopeQuestion {
                    question_id: out.len() as u64 + 1,
                    image: image.image.clone(),
                    text,
                    label: label.into(),
                });
            }
        }
    }
    Ok(out)
}

/// Writes the questions as a POPE question file.
pub fn write_pope_questions(questions: &[PopeQuestion], out: &Path) -> Result<u64, DataError> {
    let mut writer = JsonlWriter::create(out)?;
    for q in questions {
        writer.write(&Line {
            question_id: q.question_id,
            image: &q.image,
            text: q.text.clone(),
            label: &q.label,
        })?;
    }
    writer.finish()
}
