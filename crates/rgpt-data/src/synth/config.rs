//! What a synthetic world looks like and how its conversations are drawn:
//! image size, shape counts and sizes, palette, background texture, how
//! much shapes may hide each other, and the task mix. Read from YAML or
//! JSON with every field optional.
use serde::{Deserialize, Serialize};

use super::text::TextRegions;
use super::vocab::{ColorName, ShapeKind};
use crate::prompts::CandidateLabels;
use crate::DataError;

/// Largest image side accepted; the world is meant for tiny models, and
/// the layout repaints the whole image for every placement it tries.
pub const MAX_IMAGE_SIZE: u32 = 4096;
/// Most shapes in one image (each needs a label in a `u8` label map).
pub const MAX_SHAPES: usize = 64;
/// Smallest shape extent accepted: below it a star or a cross is a blob.
pub const MIN_SHAPE_SIZE: u32 = 4;
/// Strongest background texture accepted, in grey levels either way.
pub const MAX_TEXTURE_CONTRAST: u8 = 40;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SynthConfig {
    /// Images [`super::write_world`] renders.
    pub images: u64,
    /// Seeds everything; image `i` depends only on `seed` and `i`.
    pub seed: u64,
    /// Side of the square images, in pixels.
    pub image_size: u32,
    /// Shapes per image, drawn uniformly from `min_shapes..=max_shapes`
    /// (fewer when the layout cannot fit them, see [`super::scene`]).
    pub min_shapes: usize,
    pub max_shapes: usize,
    /// A shape's extent across (its outline's bounding square), in pixels,
    /// drawn uniformly from `min_size..=max_size`.
    pub min_size: u32,
    pub max_size: u32,
    /// The shapes and colours drawn from (uniformly).
    pub shapes: Vec<ShapeKind>,
    pub colors: Vec<ColorName>,
    /// Low-contrast noise or stripes behind the shapes; off gives a plain
    /// grey background.
    pub texture: bool,
    /// Texture amplitude, in grey levels either way.
    pub texture_contrast: u8,
    /// Chance that a shape may overlap the shapes placed before it;
    /// otherwise it is placed clear of them.
    pub overlap: f64,
    /// Least fraction of a shape's own area that must stay visible once
    /// the shapes drawn after it cover part of it.
    pub min_visible: f64,
    /// A shape is small when its visible area is below this fraction of
    /// the image, large from `large_area` on, medium in between.
    pub small_area: f64,
    pub large_area: f64,
    /// Chance that a region is given as its box rather than its mask.
    pub box_fraction: f64,
    /// Chance that a REC conversation opens with an expression that matches
    /// no candidate.
    pub rec_first_negative: f64,
    /// Chance of a REC follow-up question, and that it matches nothing.
    pub rec_followup: f64,
    pub rec_followup_negative: f64,
    /// Chance that a referring expression names more than it needs to
    /// (e.g. "the small red circle" where "the circle" is unique).
    pub overspecify: f64,
    /// Chance that a REC expression matching nothing is a near miss (a
    /// colour and shape present, with another size or position) rather
    /// than a colour and shape absent from the image. Near misses can only
    /// be told apart by a region's size or position.
    pub rec_near_miss: f64,
    /// Label each REC candidate with its answer: `none` (the paper's
    /// Table 1 list), `before` (`Region [1] <region>, ...`) or `after`
    /// (`<region> as Region [1], ...`), so the answer can be copied from
    /// beside the matched region instead of counted.
    pub candidate_labels: CandidateLabels,
    /// Separate the REC candidates with commas, as the paper's prompt does
    /// (`<region>, <region> and <region>`); false lists them side by side
    /// (`<region> <region> and <region>`). A decoder of two layers trained from
    /// nothing learned to match an expression's colour only without the commas
    /// (in about a third of the runs), in a toy and in the demo's world
    /// (docs/experiments/demo-journal.md, thirteenth and fourteenth rounds).
    pub rec_candidate_commas: bool,
    /// Ask REC with the expression, unquoted, before the candidates (the
    /// prompt set `rec_question_expression_first`), so a causal decoder
    /// has read the expression when it reaches each region and can judge
    /// the match there; with the candidates first, the answer must look
    /// every region up by content afterwards. Follow-ups keep their
    /// phrasing.
    pub rec_expression_first: bool,
    /// Ask the first REC question in only the first N phrasings of its prompt
    /// set (the first of `rec_question` is the paper's); none: all of them. A
    /// decoder trained from nothing finds the regions an expression names
    /// several times sooner in one phrasing than in ten
    /// (docs/experiments/demo-journal.md, tenth round).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rec_phrasings: Option<usize>,
    /// Also write each region task as text (`text/<task>.jsonl`, see
    /// [`super::text`]): the image dropped and every region named in words,
    /// for pre-training a decoder on the world's language.
    pub text: bool,
    /// How the text form gives each region: `words` (its name written out),
    /// `named` (`<region>` kept, given by its name) or `colour_shape` (as
    /// `named`, by colour and shape alone; see [`super::text::TextRegions`]).
    pub text_regions: TextRegions,
}

impl Default for SynthConfig {
    fn default() -> Self {
        SynthConfig {
            images: 1000,
            seed: 0,
            image_size: 64,
            min_shapes: 2,
            max_shapes: 4,
            min_size: 10,
            max_size: 30,
            shapes: ShapeKind::ALL.to_vec(),
            colors: ColorName::ALL.to_vec(),
            texture: true,
            texture_contrast: 10,
            overlap: 0.25,
            min_visible: 0.6,
            // At 64 px these put the classes near extents of 15 and 23 px
            // for an average shape, so all three are common.
            small_area: 0.03,
            large_area: 0.08,
            box_fraction: 0.25,
            rec_first_negative: 0.15,
            rec_followup: 0.5,
            rec_followup_negative: 0.5,
            overspecify: 0.3,
            rec_near_miss: 0.5,
            candidate_labels: CandidateLabels::None,
            rec_candidate_commas: true,
            rec_expression_first: false,
            rec_phrasings: None,
            text: false,
            text_regions: TextRegions::Words,
        }
    }
}

impl SynthConfig {
    /// Checks every field is in range, naming the first that is not.
    pub fn validate(&self) -> Result<(), DataError> {
        let bad = |message: String| Err(DataError::InvalidArgument(message));
        if !(16..=MAX_IMAGE_SIZE).contains(&self.image_size) {
            return bad(format!(
                "synth image_size {} is outside 16..={MAX_IMAGE_SIZE}",
                self.image_size
            ));
        }
        if self.min_shapes == 0 || self.min_shapes > self.max_shapes || self.max_shapes > MAX_SHAPES
        {
            return bad(format!(
                "synth shapes per image {}..={} must satisfy 1 <= min_shapes <= max_shapes <= {MAX_SHAPES}",
                self.min_shapes, self.max_shapes
            ));
        }
        if self.min_size < MIN_SHAPE_SIZE
            || self.min_size > self.max_size
            || self.max_size > self.image_size
        {
            return bad(format!(
                "synth shape sizes {}..={} must satisfy {MIN_SHAPE_SIZE} <= min_size <= max_size <= image_size ({})",
                self.min_size, self.max_size, self.image_size
            ));
        }
        if self.shapes.is_empty() || self.colors.is_empty() {
            return bad("synth shapes and colors must each list at least one entry".into());
        }
        if self.texture_contrast > MAX_TEXTURE_CONTRAST {
            return bad(format!(
                "synth texture_contrast {} is above {MAX_TEXTURE_CONTRAST}",
                self.texture_contrast
            ));
        }
        if !(self.small_area > 0.0 && self.small_area < self.large_area && self.large_area < 1.0) {
            return bad(format!(
                "synth size classes need 0 < small_area ({}) < large_area ({}) < 1",
                self.small_area, self.large_area
            ));
        }
        if self.rec_phrasings == Some(0) {
            return bad("synth rec_phrasings 0: give 1 or more, or leave it out for all".into());
        }
        for (name, p) in [
            ("overlap", self.overlap),
            ("min_visible", self.min_visible),
            ("box_fraction", self.box_fraction),
            ("rec_first_negative", self.rec_first_negative),
            ("rec_followup", self.rec_followup),
            ("rec_followup_negative", self.rec_followup_negative),
            ("overspecify", self.overspecify),
            ("rec_near_miss", self.rec_near_miss),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return bad(format!("synth {name} {p} is not a probability in [0, 1]"));
            }
        }
        Ok(())
    }
}
