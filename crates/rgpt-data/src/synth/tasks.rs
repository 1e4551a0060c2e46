//! The world's conversations, each built from an image's ground truth
//! (paper Sec. 3.2, Table 1): shape and colour classification (one region
//! per turn, the task-guided prompt after the first question), detailed
//! region captions, referring expressions answered `Region [k].` or with
//! the no-match answer, and image captions. Ground truth for scoring goes
//! in each sample's `meta`.
use rand::seq::{IndexedRandom, SliceRandom};
use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::config::SynthConfig;
use super::describe::{
    absent_expression, image_caption, left_to_right, referring_expression, region_caption,
    CaptionFacts, Expression,
};
use super::rng::{stream_rng, Stream};
use super::scene::{SynthImage, SynthObject};
use super::vocab::SizeClass;
use crate::format::{Region, Sample, Turn, IMAGE_TOKEN};
use crate::prompts::{candidate_list, fill, PromptBank};
use crate::DataError;

pub const TASK_SHAPE: &str = "synth-shape";
pub const TASK_COLOR: &str = "synth-color";
pub const TASK_CAPTION: &str = "synth-caption";
pub const TASK_REC: &str = "synth-rec";
pub const TASK_IMAGE_CAPTION: &str = "synth-image-caption";
/// Every task, in the order their files are written.
pub const TASKS: [&str; 5] = [
    TASK_SHAPE,
    TASK_COLOR,
    TASK_CAPTION,
    TASK_REC,
    TASK_IMAGE_CAPTION,
];

/// Prompt sets and guides the builders draw on.
const PROMPT_SETS: [&str; 6] = [
    "region_classification",
    "region_color",
    "region_caption_detailed",
    "rec_question",
    "rec_followup",
    "image_caption",
];
const GUIDES: [&str; 4] = ["shapes", "colors", "rec", "rec_no_match"];
const REC_ANSWER_GUIDE: &str = "rec_answer";

/// Errors unless `prompts` holds every set and guide the world uses, so a
/// missing one stops a run before any work.
pub fn check_prompts(prompts: &PromptBank) -> Result<(), DataError> {
    for set in PROMPT_SETS {
        prompts.variants(set)?;
    }
    for guide in GUIDES.into_iter().chain([REC_ANSWER_GUIDE]) {
        prompts.guide(guide)?;
    }
    Ok(())
}

/// Where image `index` is written, relative to the world's directory.
pub fn image_path(index: u64) -> String {
    format!("images/{index:06}.png")
}

/// Every sample of one image, one task each (captions: one per object).
#[derive(Debug, Clone, PartialEq)]
pub struct SynthSamples {
    pub shape: Sample,
    pub color: Sample,
    pub captions: Vec<Sample>,
    pub rec: Sample,
    pub image_caption: Sample,
}

impl SynthSamples {
    /// The samples of each task, in the order of [`TASKS`].
    pub fn by_task(&self) -> [(&'static str, &[Sample]); 5] {
        [
            (TASK_SHAPE, std::slice::from_ref(&self.shape)),
            (TASK_COLOR, std::slice::from_ref(&self.color)),
            (TASK_CAPTION, &self.captions),
            (TASK_REC, std::slice::from_ref(&self.rec)),
            (
                TASK_IMAGE_CAPTION,
                std::slice::from_ref(&self.image_caption),
            ),
        ]
    }

    pub fn iter(&self) -> impl Iterator<Item = &Sample> {
        self.by_task().into_iter().flat_map(|(_, samples)| samples)
    }
}

/// Every task's samples for `image`, each task drawing from its own stream
/// of `config.seed`, so the result depends only on the seed and the image.
pub fn samples_for_image(
    image: &SynthImage,
    config: &SynthConfig,
    prompts: &PromptBank,
) -> Result<SynthSamples, DataError> {
    let rng = |purpose| stream_rng(config.seed, image.index, purpose);
    Ok(SynthSamples {
        shape: shape_classification(image, config, prompts, &mut rng(Stream::Shape))?,
        color: color_classification(image, config, prompts, &mut rng(Stream::Color))?,
        captions: region_captions(image, config, prompts, &mut rng(Stream::Caption))?,
        rec: referring_expressions(image, config, prompts, &mut rng(Stream::Rec))?,
        image_caption: image_caption_sample(image, prompts, &mut rng(Stream::ImageCaption))?,
    })
}

/// Shape classification, one object per turn in random order:
///
/// ```text
/// What is the object in <region>? Answer the question using shape names.
/// circle
/// ```
///
/// Meta: `objects` (indices into the image's objects), `answers`, `sizes`.
pub fn shape_classification<R: Rng>(
    image: &SynthImage,
    config: &SynthConfig,
    prompts: &PromptBank,
    rng: &mut R,
) -> Result<Sample, DataError> {
    classification(
        image,
        config,
        prompts,
        rng,
        Classification {
            task: TASK_SHAPE,
            questions: "region_classification",
            guide: "shapes",
            answer: |o| o.shape.name(),
        },
    )
}

/// Colour classification, as [`shape_classification`]:
///
/// ```text
/// What colour is <region>? Answer the question using colour names.
/// red
/// ```
pub fn color_classification<R: Rng>(
    image: &SynthImage,
    config: &SynthConfig,
    prompts: &PromptBank,
    rng: &mut R,
) -> Result<Sample, DataError> {
    classification(
        image,
        config,
        prompts,
        rng,
        Classification {
            task: TASK_COLOR,
            questions: "region_color",
            guide: "colors",
            answer: |o| o.color.name(),
        },
    )
}

struct Classification {
    task: &'static str,
    questions: &'static str,
    guide: &'static str,
    answer: fn(&SynthObject) -> &'static str,
}

fn classification<R: Rng>(
    image: &SynthImage,
    config: &SynthConfig,
    prompts: &PromptBank,
    rng: &mut R,
    kind: Classification,
) -> Result<Sample, DataError> {
    let order = shuffled_objects(image, kind.task, rng)?;
    let guide = prompts.guide(kind.guide)?;
    let mut conversations = Vec::with_capacity(2 * order.len());
    let mut regions = Vec::with_capacity(order.len());
    for (turn, &i) in order.iter().enumerate() {
        let question = prompts.pick(kind.questions, rng)?;
        conversations.push(Turn::human(if turn == 0 {
            format!("{IMAGE_TOKEN}\n{question} {guide}")
        } else {
            question.to_string()
        }));
        conversations.push(Turn::gpt((kind.answer)(&image.objects[i])));
        regions.push(region_of(&image.objects[i], config.box_fraction, rng));
    }
    let meta = to_meta(&RegionQuestionMeta {
        answers: order
            .iter()
            .map(|&i| (kind.answer)(&image.objects[i]).to_string())
            .collect(),
        sizes: sizes(image, &order),
        objects: order,
    });
    Ok(sample(
        image,
        format!("{}/{:06}", kind.task, image.index),
        kind.task,
        regions,
        conversations,
        meta,
    ))
}

/// Detailed region captions, one sample per object:
///
/// ```text
/// Describe <region> in detail.
/// A small red circle in the top left of the image, to the left of a large blue square.
/// ```
///
/// Meta: the caption's facts (`object`, `shape`, `color`, `size`,
/// `position`, `nearest`, `relation`).
pub fn region_captions<R: Rng>(
    image: &SynthImage,
    config: &SynthConfig,
    prompts: &PromptBank,
    rng: &mut R,
) -> Result<Vec<Sample>, DataError> {
    (0..image.objects.len())
        .map(|i| {
            let question = prompts.pick("region_caption_detailed", rng)?;
            let conversations = vec![
                Turn::human(format!("{IMAGE_TOKEN}\n{question}")),
                Turn::gpt(region_caption(image, i)),
            ];
            let region = region_of(&image.objects[i], config.box_fraction, rng);
            let meta = to_meta(&CaptionFacts::of(image, i));
            Ok(sample(
                image,
                format!("{TASK_CAPTION}/{:06}/{i}", image.index),
                TASK_CAPTION,
                vec![region],
                conversations,
                meta,
            ))
        })
        .collect()
}

/// Referring expression comprehension over every object of the image as a
/// candidate, in random order:
///
/// ```text
/// From the provided masks denoted by <region>, <region> and <region>, which one
/// fits "the red circle"? Answer the question using the template Region [x].
/// Region [2].
/// Match the object with its description: the large green star.
/// No corresponding options found.
/// ```
///
/// The first question matches nothing with chance `rec_first_negative`;
/// a follow-up comes with chance `rec_followup`, about another object or
/// (with chance `rec_followup_negative`) about nothing.
/// Meta: `candidates` (object indices in candidate order), `sizes` (per
/// candidate), and per question `expressions` and `targets` (1-based
/// candidate number, null for no match).
pub fn referring_expressions<R: Rng>(
    image: &SynthImage,
    config: &SynthConfig,
    prompts: &PromptBank,
    rng: &mut R,
) -> Result<Sample, DataError> {
    let order = shuffled_objects(image, TASK_REC, rng)?;
    let regions: Vec<Region> = order
        .iter()
        .map(|&i| region_of(&image.objects[i], config.box_fraction, rng))
        .collect();
    let mut asked: Vec<(Expression, Option<usize>)> = Vec::new();
    let first_negative = rng.random::<f64>() < config.rec_first_negative;
    let first = pick_question(image, config, &asked, first_negative, rng).ok_or_else(|| {
        DataError::InvalidArgument(format!(
            "synthetic image {}: no object can be singled out and no expression misses them all",
            image.index
        ))
    })?;
    asked.push(first);
    if rng.random::<f64>() < config.rec_followup {
        let negative = rng.random::<f64>() < config.rec_followup_negative;
        if let Some(followup) = pick_question(image, config, &asked, negative, rng) {
            asked.push(followup);
        }
    }

    let guide = prompts.guide("rec")?;
    let no_match = prompts.guide("rec_no_match")?;
    let answer_template = prompts.guide(REC_ANSWER_GUIDE)?;
    let candidate_of = |object: usize| order.iter().position(|&i| i == object).map(|k| k + 1);
    let candidates = candidate_list(
        order.len(),
        config.candidate_labels,
        config.rec_candidate_commas,
    );
    let mut conversations = Vec::with_capacity(2 * asked.len());
    let mut targets = Vec::with_capacity(asked.len());
    for (turn, (expression, target)) in asked.iter().enumerate() {
        let expr = expression.text();
        let question = if turn == 0 {
            let set = if config.rec_expression_first {
                "rec_question_expression_first"
            } else {
                "rec_question"
            };
            let variants = prompts.variants(set)?;
            let phrasings = config.rec_phrasings.unwrap_or(variants.len());
            let template = &variants[rng.random_range(0..phrasings.min(variants.len()))];
            let question = fill(template, &[("regions", &candidates), ("expr", &expr)]);
            format!("{IMAGE_TOKEN}\n{question} {guide}")
        } else {
            fill(prompts.pick("rec_followup", rng)?, &[("expr", &expr)])
        };
        let candidate = target.and_then(candidate_of);
        let answer = match candidate {
            Some(k) => fill(answer_template, &[("index", &k.to_string())]),
            None => no_match.to_string(),
        };
        conversations.push(Turn::human(question));
        conversations.push(Turn::gpt(answer));
        targets.push(candidate);
    }
    let meta = to_meta(&RecMeta {
        sizes: sizes(image, &order),
        candidates: order,
        expressions: asked.iter().map(|(e, _)| e.text()).collect(),
        targets,
    });
    Ok(sample(
        image,
        format!("{TASK_REC}/{:06}", image.index),
        TASK_REC,
        regions,
        conversations,
        meta,
    ))
}

/// A question's expression and the object it singles out (None: it
/// matches nothing). A positive question prefers an object not asked about
/// yet; either kind falls back to the other when impossible.
fn pick_question<R: Rng>(
    image: &SynthImage,
    config: &SynthConfig,
    asked: &[(Expression, Option<usize>)],
    negative: bool,
    rng: &mut R,
) -> Option<(Expression, Option<usize>)> {
    let negative_question = |rng: &mut R| {
        absent_expression(
            &image.objects,
            &config.shapes,
            &config.colors,
            config.rec_near_miss,
            rng,
        )
        .filter(|e| !asked.iter().any(|(a, _)| a == e))
        .map(|e| (e, None))
    };
    let positive_question = |rng: &mut R| {
        let fresh: Vec<usize> = (0..image.objects.len())
            .filter(|&i| !asked.iter().any(|&(_, t)| t == Some(i)))
            .collect();
        let &target = fresh.choose(rng)?;
        referring_expression(&image.objects, target, config.overspecify, rng)
            .map(|e| (e, Some(target)))
    };
    if negative {
        negative_question(rng).or_else(|| positive_question(rng))
    } else {
        positive_question(rng).or_else(|| negative_question(rng))
    }
}

/// "Give a short caption for this image." / "Three shapes: a red circle,
/// a blue square and a green triangle." Meta: `objects` in the order the
/// caption names them (left to right).
pub fn image_caption_sample<R: Rng>(
    image: &SynthImage,
    prompts: &PromptBank,
    rng: &mut R,
) -> Result<Sample, DataError> {
    let question = prompts.pick("image_caption", rng)?;
    let conversations = vec![
        Turn::human(format!("{IMAGE_TOKEN}\n{question}")),
        Turn::gpt(image_caption(image)),
    ];
    let meta = to_meta(&ImageCaptionMeta {
        objects: left_to_right(&image.objects),
    });
    Ok(sample(
        image,
        format!("{TASK_IMAGE_CAPTION}/{:06}", image.index),
        TASK_IMAGE_CAPTION,
        Vec::new(),
        conversations,
        meta,
    ))
}

fn shuffled_objects<R: Rng>(
    image: &SynthImage,
    task: &str,
    rng: &mut R,
) -> Result<Vec<usize>, DataError> {
    if image.objects.is_empty() {
        return Err(DataError::InvalidArgument(format!(
            "synthetic image {} has no objects to build {task} from",
            image.index
        )));
    }
    let mut order: Vec<usize> = (0..image.objects.len()).collect();
    order.shuffle(rng);
    Ok(order)
}

/// The object's exact mask, or with chance `box_fraction` its tight box.
fn region_of<R: Rng>(object: &SynthObject, box_fraction: f64, rng: &mut R) -> Region {
    if rng.random::<f64>() < box_fraction {
        Region::Box(object.bbox.map(f64::from))
    } else {
        Region::from_rle(&object.mask)
    }
}

fn sizes(image: &SynthImage, order: &[usize]) -> Vec<SizeClass> {
    order.iter().map(|&i| image.objects[i].size).collect()
}

/// The meta of a shape or colour sample: the object behind each region,
/// in turn order, with its answer and size class.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegionQuestionMeta {
    pub objects: Vec<usize>,
    pub answers: Vec<String>,
    pub sizes: Vec<SizeClass>,
}

/// The meta of a REC sample: the object behind each candidate, in
/// candidate order, with its size class; each question's expression and
/// its answer, a 1-based candidate or none for the no-match answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecMeta {
    pub candidates: Vec<usize>,
    pub sizes: Vec<SizeClass>,
    pub expressions: Vec<String>,
    pub targets: Vec<Option<usize>>,
}

/// The meta of an image caption: its objects, left to right.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageCaptionMeta {
    pub objects: Vec<usize>,
}

fn to_meta(meta: &impl Serialize) -> Value {
    // Structs of plain fields always serialise.
    serde_json::to_value(meta).unwrap_or(Value::Null)
}

fn sample(
    image: &SynthImage,
    id: String,
    task: &str,
    regions: Vec<Region>,
    conversations: Vec<Turn>,
    meta: Value,
) -> Sample {
    Sample {
        id,
        image: Some(image_path(image.index)),
        width: Some(image.rgb.width()),
        height: Some(image.rgb.height()),
        regions,
        conversations,
        task: task.to_string(),
        meta: Some(meta),
    }
}
