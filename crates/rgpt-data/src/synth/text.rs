//! The world as text: a conversation with `<image>` dropped and each `<region>`
//! named in words ("small red circle in the top left"). RegionGPT starts from
//! Vicuna, which knew language, and how to look things up in its prompt, before
//! it saw a region; a model trained from nothing has neither. Pre-training its
//! decoder on the world's questions with the regions spelt out gives it the
//! reading first, so the later stages only have to make a region embedding read
//! like the words it stands for (docs/experiments/demo-journal.md). With
//! [`TextRegions::Named`] each `<region>` stays and is given by its name
//! instead, which the model reads as one embedding, the mean of the name's word
//! embeddings: the decoder then learns to look up regions that are one position
//! each, as image regions will be.
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::describe::{object_phrase, CaptionFacts};
use super::scene::{SynthImage, SynthObject};
use super::tasks::{RecMeta, RegionQuestionMeta, TASK_CAPTION, TASK_COLOR, TASK_REC, TASK_SHAPE};
use crate::format::{Region, Sample, Turn, IMAGE_TOKEN, REGION_NAMES_META, REGION_TOKEN};
use crate::DataError;

/// The tasks that have a text form: those that ask about regions. An image
/// caption without its image would be a guess.
pub const TEXT_TASKS: [&str; 4] = [TASK_SHAPE, TASK_COLOR, TASK_CAPTION, TASK_REC];

/// How the text form gives a region.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TextRegions {
    /// Its name written in place of `<region>`: several tokens.
    #[default]
    Words,
    /// `<region>` kept, the region given as `{"name": ...}`: one position,
    /// read as the mean of the name's word embeddings.
    Named,
    /// As `named`, with the name cut to colour and shape ("red circle"). Its
    /// mean is the code the toy learns REC's lookup from fastest
    /// (docs/experiments/demo-journal.md, ninth round); size and position are
    /// left for the image stages to bring.
    #[serde(rename = "colour_shape")]
    ColourShape,
}

impl TextRegions {
    /// Whether each region stays one `<region>` position, given by a name.
    pub fn is_named(self) -> bool {
        self != TextRegions::Words
    }
}

/// `sample`, a conversation about `image` built by [`super::tasks`], with
/// its image dropped and every region given by its object's size, colour,
/// shape and position (written out, or as a named region: `regions`):
/// everything a referring expression may name, so every REC question in
/// words has the answer the image gives it (with colour and shape alone,
/// "the large red circle" against a small one would read as a match and
/// be answered "no match"). The id and task gain a `text-` prefix; the meta
/// is kept, but for the image regions' names.
pub fn as_text(
    sample: &Sample,
    image: &SynthImage,
    regions: TextRegions,
) -> Result<Sample, DataError> {
    let objects = region_objects(sample)?;
    if objects.len() != sample.regions.len() {
        return Err(malformed(
            sample,
            format!(
                "its meta names {} objects for {} regions",
                objects.len(),
                sample.regions.len()
            ),
        ));
    }
    let mut names = Vec::with_capacity(objects.len());
    for index in objects {
        let object = image.objects.get(index).ok_or_else(|| {
            malformed(
                sample,
                format!("object {index} is not in image {}", image.index),
            )
        })?;
        names.push(match regions {
            TextRegions::ColourShape => format!("{} {}", object.color, object.shape),
            TextRegions::Words | TextRegions::Named => region_name(object),
        });
    }
    let (names, named_regions) = if regions.is_named() {
        (Vec::new(), names.into_iter().map(Region::Name).collect())
    } else {
        (names, Vec::new())
    };
    let mut names = names.into_iter();
    let mut conversations = Vec::with_capacity(sample.conversations.len());
    for turn in &sample.conversations {
        let text = turn.value.replace(&format!("{IMAGE_TOKEN}\n"), "");
        if regions.is_named() {
            conversations.push(Turn {
                from: turn.from,
                value: text,
            });
            continue;
        }
        let mut pieces = text.split(REGION_TOKEN);
        let mut value = pieces.next().unwrap_or_default().to_string();
        for piece in pieces {
            // The count was checked above, so a name is always left.
            value.push_str(&names.next().unwrap_or_default());
            value.push_str(piece);
        }
        conversations.push(Turn {
            from: turn.from,
            value,
        });
    }
    Ok(Sample {
        id: format!("text-{}", sample.id),
        image: None,
        width: None,
        height: None,
        regions: named_regions,
        conversations,
        task: format!("text-{}", sample.task),
        meta: text_meta(sample),
    })
}

/// The sample's meta without the names of its image regions
/// ([`REGION_NAMES_META`]): the text form's regions are those names.
fn text_meta(sample: &Sample) -> Option<serde_json::Value> {
    let mut meta = sample.meta.clone()?;
    if let serde_json::Value::Object(fields) = &mut meta {
        fields.remove(REGION_NAMES_META);
    }
    Some(meta)
}

/// "small red circle in the top left": what a region stands for in words.
pub fn region_name(object: &SynthObject) -> String {
    format!("{} {}", object_phrase(object), object.position.phrase())
}

/// The image's object behind each region, from the meta the task builders
/// write.
fn region_objects(sample: &Sample) -> Result<Vec<usize>, DataError> {
    fn read<T: DeserializeOwned>(sample: &Sample) -> Option<T> {
        serde_json::from_value(sample.meta.clone()?).ok()
    }
    let objects = match sample.task.as_str() {
        TASK_SHAPE | TASK_COLOR => read::<RegionQuestionMeta>(sample).map(|m| m.objects),
        TASK_REC => read::<RecMeta>(sample).map(|m| m.candidates),
        TASK_CAPTION => read::<CaptionFacts>(sample).map(|m| vec![m.object]),
        other => {
            return Err(malformed(
                sample,
                format!(
                    "task `{other}` has no text form (use {})",
                    TEXT_TASKS.join(", ")
                ),
            ))
        }
    };
    objects.ok_or_else(|| {
        malformed(
            sample,
            "its meta does not say which object each region is".into(),
        )
    })
}

fn malformed(sample: &Sample, message: String) -> DataError {
    DataError::InvalidArgument(format!("synthetic sample `{}`: {message}", sample.id))
}
