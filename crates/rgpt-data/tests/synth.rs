//! The synthetic world checked against its own geometry: masks are exactly
//! the pixels each shape shows, and every answer (classification, caption,
//! referring expression, image caption) is recomputed here from the masks
//! with rules written independently of the library's.
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use rgpt_data::format::{read_all_samples, Region, Sample, Speaker, IMAGE_TOKEN, REGION_TOKEN};
use rgpt_data::prompts::CandidateLabels;
use rgpt_data::synth::text::{as_text, TextRegions, TEXT_TASKS};
use rgpt_data::synth::vocab::BACKGROUND_LEVELS;
use rgpt_data::synth::write::text_task_file;
use rgpt_data::synth::{
    write_world, ColorName, ImageObjects, ShapeKind, SizeClass, SynthConfig, SynthImage,
    SynthObject, SynthSamples, SynthWorld, TASKS,
};
use rgpt_data::{DataError, PromptBank};
use rgpt_region::Bitmap;

/// Images checked by the property tests: enough for every shape, colour,
/// size class, position and relation to turn up.
const IMAGES: u64 = 150;

fn prompts() -> &'static PromptBank {
    static PROMPTS: OnceLock<PromptBank> = OnceLock::new();
    PROMPTS.get_or_init(|| {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/prompts");
        PromptBank::from_dir(&dir).expect("configs/prompts reads")
    })
}

fn world(config: SynthConfig) -> SynthWorld {
    SynthWorld::new(config).expect("valid config")
}

/// The default world's first [`IMAGES`] images with their samples.
fn default_world() -> &'static [(SynthImage, SynthSamples)] {
    static WORLD: OnceLock<Vec<(SynthImage, SynthSamples)>> = OnceLock::new();
    WORLD.get_or_init(|| {
        let world = world(SynthConfig {
            seed: 7,
            ..SynthConfig::default()
        });
        (0..IMAGES)
            .map(|i| {
                let image = world.generate_image(i);
                let samples = world.samples(&image, prompts()).expect("samples build");
                (image, samples)
            })
            .collect()
    })
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rgpt-synth-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

// ---- independent geometry -------------------------------------------------

/// (row, column) of the 3×3 grid cell holding a point.
fn grid_cell(center: [f64; 2], size: u32) -> (usize, usize) {
    let third = |v: f64| ((3.0 * v / f64::from(size)) as usize).min(2);
    (third(center[1]), third(center[0]))
}

const POSITION_PHRASES: [(&str, (usize, usize)); 9] = [
    ("in the top left", (0, 0)),
    ("at the top", (0, 1)),
    ("in the top right", (0, 2)),
    ("on the left", (1, 0)),
    ("in the centre", (1, 1)),
    ("on the right", (1, 2)),
    ("in the bottom left", (2, 0)),
    ("at the bottom", (2, 1)),
    ("in the bottom right", (2, 2)),
];

fn mask_bitmap(object: &SynthObject) -> Bitmap {
    Bitmap::from_rle(&object.mask).expect("mask decodes")
}

/// The other object with the nearest centroid.
fn nearest(objects: &[SynthObject], i: usize) -> Option<usize> {
    let d = |j: usize| {
        let (a, b) = (objects[i].center, objects[j].center);
        (a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2)
    };
    let mut best: Option<usize> = None;
    for j in (0..objects.len()).filter(|&j| j != i) {
        if best.is_none_or(|b| d(j) < d(b)) {
            best = Some(j);
        }
    }
    best
}

/// Whether object `front` (drawn later) shows on a pixel that object
/// `back`'s outline covers.
fn hides(image: &SynthImage, front: usize, back: usize) -> bool {
    let outline = image.objects[back].outline;
    let mask = mask_bitmap(&image.objects[front]);
    front > back
        && image.rgb.enumerate_pixels().any(|(x, y, _)| {
            mask.get(x, y) == Some(true) && outline.contains(f64::from(x) + 0.5, f64::from(y) + 0.5)
        })
}

/// The first word of `text` and the rest.
fn next_word(text: &str) -> (&str, &str) {
    text.split_once(' ').unwrap_or((text, ""))
}

/// A parsed "size colour shape" phrase; each part optional but the shape.
#[derive(Debug, Default)]
struct Described {
    size: Option<SizeClass>,
    color: Option<ColorName>,
    shape: Option<ShapeKind>,
    cell: Option<(usize, usize)>,
}

impl Described {
    /// Reads "[size] [colour] shape [position phrase]".
    fn parse(text: &str) -> Described {
        let mut d = Described::default();
        let (mut word, mut rest) = next_word(text.trim());
        if let Some(size) = SizeClass::ALL.into_iter().find(|s| s.name() == word) {
            d.size = Some(size);
            (word, rest) = next_word(rest);
        }
        if let Some(color) = ColorName::ALL.into_iter().find(|c| c.name() == word) {
            d.color = Some(color);
            (word, rest) = next_word(rest);
        }
        d.shape = ShapeKind::ALL.into_iter().find(|s| s.name() == word);
        assert!(d.shape.is_some(), "no shape word in {text:?}");
        if !rest.is_empty() {
            let cell = POSITION_PHRASES.iter().find(|(p, _)| *p == rest);
            assert!(
                cell.is_some(),
                "unknown position phrase {rest:?} in {text:?}"
            );
            d.cell = cell.map(|(_, c)| *c);
        }
        d
    }

    fn matches(&self, o: &SynthObject, size: u32) -> bool {
        self.shape == Some(o.shape)
            && self.size.is_none_or(|s| s == o.size)
            && self.color.is_none_or(|c| c == o.color)
            && self.cell.is_none_or(|c| c == grid_cell(o.center, size))
    }

    fn describes_fully(&self, o: &SynthObject) -> bool {
        self.size == Some(o.size) && self.color == Some(o.color) && self.shape == Some(o.shape)
    }
}

fn article_for(word: &str) -> &'static str {
    if word.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    }
}

/// Strips "a "/"an " and checks it suits the next word.
fn strip_article(text: &str) -> &str {
    let (article, rest) = text.split_once(' ').expect("an article and a phrase");
    assert_eq!(
        article.to_lowercase(),
        article_for(rest),
        "wrong article in {text:?}"
    );
    rest
}

/// The region a sample gives for an object: its exact mask or tight box.
fn assert_region_is(region: &Region, object: &SynthObject) {
    let as_mask = Region::from_rle(&object.mask);
    let as_box = Region::Box(object.bbox.map(f64::from));
    assert!(
        *region == as_mask || *region == as_box,
        "region {region:?} is neither the mask nor the box of {object:?}"
    );
}

fn human_turns(sample: &Sample) -> Vec<&str> {
    sample
        .conversations
        .iter()
        .filter(|t| t.from == Speaker::Human)
        .map(|t| t.value.as_str())
        .collect()
}

fn gpt_turns(sample: &Sample) -> Vec<&str> {
    sample
        .conversations
        .iter()
        .filter(|t| t.from == Speaker::Gpt)
        .map(|t| t.value.as_str())
        .collect()
}

fn meta_indices(sample: &Sample, key: &str) -> Vec<usize> {
    let meta = sample.meta.as_ref().expect("meta");
    meta[key]
        .as_array()
        .unwrap_or_else(|| panic!("meta {key} in {}", sample.id))
        .iter()
        .map(|v| v.as_u64().expect("index") as usize)
        .collect()
}

// ---- determinism ----------------------------------------------------------

#[test]
fn same_seed_gives_the_same_world_and_another_seed_another() {
    let config = SynthConfig {
        seed: 3,
        ..SynthConfig::default()
    };
    let a = world(config.clone());
    let b = world(config.clone());
    let c = world(SynthConfig { seed: 4, ..config });
    let mut differ = 0;
    for i in 0..20 {
        let (ia, ib, ic) = (
            a.generate_image(i),
            b.generate_image(i),
            c.generate_image(i),
        );
        assert_eq!(ia, ib, "image {i}");
        assert_eq!(
            a.samples(&ia, prompts()).unwrap(),
            b.samples(&ib, prompts()).unwrap(),
            "samples of image {i}"
        );
        differ += usize::from(ia.rgb != ic.rgb);
    }
    assert_eq!(differ, 20, "another seed gives other images");
    // An image does not depend on what was generated before it.
    assert_eq!(
        a.generate_image(17),
        world(SynthConfig {
            seed: 3,
            ..SynthConfig::default()
        })
        .generate_image(17)
    );
}

// ---- masks and geometry ---------------------------------------------------

#[test]
fn masks_are_exactly_the_pixels_of_their_colour() {
    for (image, _) in default_world() {
        let size = image.size();
        let masks: Vec<Bitmap> = image.objects.iter().map(mask_bitmap).collect();
        for (y, x, pixel) in image.rgb.enumerate_pixels().map(|(x, y, p)| (y, x, p)) {
            let owners: Vec<usize> = (0..masks.len())
                .filter(|&i| masks[i].get(x, y) == Some(true))
                .collect();
            assert!(
                owners.len() <= 1,
                "image {}: masks overlap at ({x}, {y})",
                image.index
            );
            match owners.first() {
                Some(&i) => assert_eq!(
                    pixel.0,
                    image.objects[i].color.rgb(),
                    "image {}: ({x}, {y}) is in the {:?} mask",
                    image.index,
                    image.objects[i].color
                ),
                None => assert!(
                    pixel.0.iter().all(|c| BACKGROUND_LEVELS.contains(c)),
                    "image {}: background pixel ({x}, {y}) = {:?}",
                    image.index,
                    pixel.0
                ),
            }
        }
        assert!(masks.iter().all(|m| m.width == size && m.height == size));
    }
}

#[test]
fn boxes_areas_centres_and_size_classes_follow_the_masks() {
    let config = SynthConfig::default();
    for (image, _) in default_world() {
        let size = image.size();
        let image_area = f64::from(size * size);
        let mut keys = HashSet::new();
        assert!((config.min_shapes..=config.max_shapes).contains(&image.objects.len()));
        for object in &image.objects {
            let mask = mask_bitmap(object);
            let (mut x1, mut y1, mut x2, mut y2) = (u32::MAX, u32::MAX, 0, 0);
            let (mut sx, mut sy, mut n) = (0.0, 0.0, 0u64);
            for y in 0..size {
                for x in 0..size {
                    if mask.get(x, y) == Some(true) {
                        (x1, y1, x2, y2) = (x1.min(x), y1.min(y), x2.max(x + 1), y2.max(y + 1));
                        sx += f64::from(x) + 0.5;
                        sy += f64::from(y) + 0.5;
                        n += 1;
                    }
                }
            }
            assert_eq!(object.bbox, [x1, y1, x2, y2], "image {}", image.index);
            assert_eq!(object.area, n);
            assert_eq!(object.mask.area(), n);
            let centre = [sx / n as f64, sy / n as f64];
            // Centroids are stored to 1/1024 px.
            assert!((object.center[0] - centre[0]).abs() <= 1.0 / 2048.0);
            assert!((object.center[1] - centre[1]).abs() <= 1.0 / 2048.0);
            let (row, column) = grid_cell(object.center, size);
            assert_eq!(object.position.cell(), (row, column));
            // Bounded overlap: most of each shape stays visible.
            assert!(object.area <= object.full_area);
            assert!(object.area as f64 >= config.min_visible * object.full_area as f64);
            let fraction = n as f64 / image_area;
            let expected = if fraction < config.small_area {
                SizeClass::Small
            } else if fraction >= config.large_area {
                SizeClass::Large
            } else {
                SizeClass::Medium
            };
            assert_eq!(object.size, expected, "area {n} of {image_area}");
            assert!(
                keys.insert((object.shape, object.color, object.size)),
                "image {}: two {:?}",
                image.index,
                (object.shape, object.color, object.size)
            );
        }
    }
}

/// Unoccluded shapes look like their names: a square fills its box, the
/// others leave the box's corners empty, a triangle is widest at the
/// bottom, and a cross covers its centre but not its box's corners.
#[test]
fn shapes_are_drawn_as_named() {
    let mut checked = HashSet::new();
    for (image, _) in default_world() {
        for object in image.objects.iter().filter(|o| o.area == o.full_area) {
            let mask = mask_bitmap(object);
            let [x1, y1, x2, y2] = object.bbox;
            let box_area = u64::from((x2 - x1) * (y2 - y1));
            let corners = [(x1, y1), (x2 - 1, y1), (x1, y2 - 1), (x2 - 1, y2 - 1)]
                .iter()
                .filter(|&&(x, y)| mask.get(x, y) == Some(true))
                .count();
            let row_width = |y: u32| (x1..x2).filter(|&x| mask.get(x, y) == Some(true)).count();
            let context = format!("image {} {:?}", image.index, object.shape);
            match object.shape {
                ShapeKind::Square => assert_eq!(object.area, box_area, "{context}"),
                ShapeKind::Triangle => {
                    assert!(row_width(y2 - 1) > row_width(y1), "{context}");
                    let top_corners = [(x1, y1), (x2 - 1, y1)]
                        .iter()
                        .filter(|&&(x, y)| mask.get(x, y) == Some(true))
                        .count();
                    assert_eq!(top_corners, 0, "{context}");
                }
                ShapeKind::Cross => {
                    let [cx, cy] = object.center;
                    assert_eq!(mask.get(cx as u32, cy as u32), Some(true), "{context}");
                    assert_eq!(corners, 0, "{context}");
                }
                ShapeKind::Circle | ShapeKind::Diamond | ShapeKind::Star => {
                    assert_eq!(corners, 0, "{context}");
                    assert!(object.area < box_area, "{context}");
                }
            }
            checked.insert(object.shape);
        }
    }
    assert_eq!(
        checked.len(),
        ShapeKind::ALL.len(),
        "every shape seen unoccluded"
    );
}

#[test]
fn the_world_is_varied() {
    let mut shapes = HashSet::new();
    let mut colors = HashSet::new();
    let mut sizes = HashSet::new();
    let mut cells = HashSet::new();
    let mut occluded = 0;
    for (image, _) in default_world() {
        for o in &image.objects {
            shapes.insert(o.shape);
            colors.insert(o.color);
            sizes.insert(o.size);
            cells.insert(o.position);
            occluded += usize::from(o.area < o.full_area);
        }
    }
    assert_eq!(shapes.len(), ShapeKind::ALL.len());
    assert_eq!(colors.len(), ColorName::ALL.len());
    assert_eq!(sizes.len(), 3);
    assert_eq!(cells.len(), 9);
    assert!(occluded >= 10, "only {occluded} shapes are partly covered");
}

#[test]
fn shapes_stay_apart_when_overlap_is_off() {
    let world = world(SynthConfig {
        overlap: 0.0,
        ..SynthConfig::default()
    });
    for i in 0..40 {
        let image = world.generate_image(i);
        for object in &image.objects {
            assert_eq!(object.area, object.full_area, "image {i}");
            assert!(object.hidden_by.is_empty());
        }
    }
}

#[test]
fn backgrounds_are_textured_unless_turned_off() {
    let textured = world(SynthConfig::default()).generate_image(0);
    let plain = world(SynthConfig {
        texture: false,
        ..SynthConfig::default()
    })
    .generate_image(0);
    let background = |image: &SynthImage| -> HashSet<[u8; 3]> {
        let masks: Vec<Bitmap> = image.objects.iter().map(mask_bitmap).collect();
        image
            .rgb
            .enumerate_pixels()
            .filter(|(x, y, _)| masks.iter().all(|m| m.get(*x, *y) == Some(false)))
            .map(|(_, _, p)| p.0)
            .collect()
    };
    assert_eq!(background(&plain).len(), 1);
    assert!(background(&textured).len() > 1);
}

// ---- tasks ----------------------------------------------------------------

#[test]
fn every_sample_validates_and_its_regions_rasterise() {
    let (mut masks, mut boxes) = (0, 0);
    for (image, samples) in default_world() {
        for sample in samples.iter() {
            sample.validate().unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(
                sample.image.as_deref(),
                Some(format!("images/{:06}.png", image.index).as_str())
            );
            assert_eq!(
                (sample.width, sample.height),
                (Some(image.size()), Some(image.size()))
            );
            assert!(sample.conversations[0]
                .value
                .starts_with(&format!("{IMAGE_TOKEN}\n")));
            for region in &sample.regions {
                let spec = region.to_spec(Path::new(".")).expect("region reads");
                let rle = spec
                    .to_rle(image.size(), image.size())
                    .expect("region rasterises");
                assert!(rle.area() > 0);
                match region {
                    Region::Box(_) => boxes += 1,
                    _ => masks += 1,
                }
            }
        }
        assert_eq!(samples.captions.len(), image.objects.len());
    }
    // Default box_fraction 0.25: both kinds are exercised.
    assert!(
        boxes > 0 && masks > 2 * boxes,
        "{boxes} boxes, {masks} masks"
    );
}

#[test]
fn box_regions_cover_exactly_the_box_pixels() {
    let (image, _) = &default_world()[0];
    let object = &image.objects[0];
    let region = Region::Box(object.bbox.map(f64::from));
    let rle = region
        .to_spec(Path::new("."))
        .unwrap()
        .to_rle(image.size(), image.size())
        .unwrap();
    let [x1, y1, x2, y2] = object.bbox;
    assert_eq!(rle.area(), u64::from((x2 - x1) * (y2 - y1)));
}

#[test]
fn classification_answers_are_the_ground_truth() {
    let shapes_guide = prompts().guide("shapes").unwrap();
    let colors_guide = prompts().guide("colors").unwrap();
    for (image, samples) in default_world() {
        for (sample, guide, is_shape) in [
            (&samples.shape, shapes_guide, true),
            (&samples.color, colors_guide, false),
        ] {
            let order = meta_indices(sample, "objects");
            let mut sorted = order.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, (0..image.objects.len()).collect::<Vec<_>>());
            let questions = human_turns(sample);
            let answers = gpt_turns(sample);
            assert_eq!(questions.len(), order.len());
            for (turn, question) in questions.iter().enumerate() {
                assert_eq!(question.matches(REGION_TOKEN).count(), 1);
                assert_eq!(question.ends_with(guide), turn == 0, "{question}");
            }
            let meta = sample.meta.as_ref().unwrap();
            for (k, &i) in order.iter().enumerate() {
                let object = &image.objects[i];
                let truth = if is_shape {
                    object.shape.name()
                } else {
                    object.color.name()
                };
                assert_eq!(answers[k], truth);
                assert_eq!(meta["answers"][k], truth);
                assert_eq!(meta["sizes"][k], object.size.name());
                assert_region_is(&sample.regions[k], object);
            }
        }
    }
}

#[test]
fn region_captions_state_only_what_the_geometry_says() {
    let mut relations = HashSet::new();
    for (image, samples) in default_world() {
        let size = image.size();
        for sample in &samples.captions {
            let i = sample.meta.as_ref().unwrap()["object"].as_u64().unwrap() as usize;
            let object = &image.objects[i];
            assert_region_is(&sample.regions[0], object);
            let caption = gpt_turns(sample)[0];
            let body = caption.strip_suffix('.').expect("a sentence");
            let (subject, relation) = match body.split_once(", ") {
                Some((s, r)) => (s, Some(r)),
                None => (body, None),
            };
            // "A small red circle in the top left of the image"
            let subject = strip_article(subject)
                .strip_suffix(" of the image")
                .unwrap_or_else(|| panic!("{caption}"));
            let described = Described::parse(subject);
            assert!(described.describes_fully(object), "{caption} vs {object:?}");
            assert_eq!(
                described.cell,
                Some(grid_cell(object.center, size)),
                "{caption}"
            );

            // ", to the left of a large blue square"
            let other = nearest(&image.objects, i);
            assert_eq!(relation.is_some(), other.is_some(), "{caption}");
            let (Some(relation), Some(j)) = (relation, other) else {
                continue;
            };
            let (word, rest) = [
                "to the left of ",
                "to the right of ",
                "above ",
                "below ",
                "partly behind ",
                "in front of ",
            ]
            .iter()
            .find_map(|w| relation.strip_prefix(w).map(|rest| (w.trim(), rest)))
            .unwrap_or_else(|| panic!("no relation in {caption}"));
            let target = &image.objects[j];
            assert!(
                Described::parse(strip_article(rest)).describes_fully(target),
                "{caption}: the nearest shape is {target:?}"
            );
            let dx = object.center[0] - target.center[0];
            let dy = object.center[1] - target.center[1];
            let behind = hides(image, j, i);
            let in_front = hides(image, i, j);
            let holds = match word {
                "partly behind" => behind,
                "in front of" => in_front,
                _ if behind || in_front => false,
                "to the left of" => dx < 0.0 && dx.abs() >= dy.abs(),
                "to the right of" => dx > 0.0 && dx.abs() >= dy.abs(),
                "above" => dy < 0.0 && dy.abs() > dx.abs(),
                "below" => dy > 0.0 && dy.abs() > dx.abs(),
                _ => unreachable!(),
            };
            assert!(
                holds,
                "{caption}: centres {:?} vs {:?}",
                object.center, target.center
            );
            relations.insert(word);
        }
    }
    assert_eq!(relations.len(), 6, "every relation is used");
}

#[test]
fn rec_answers_point_at_the_only_matching_candidate() {
    let rec_guide = prompts().guide("rec").unwrap();
    let no_match = prompts().guide("rec_no_match").unwrap();
    let (mut positives, mut negatives, mut followups, mut first_negatives) = (0, 0, 0, 0);
    let mut with_position = 0;
    for (image, samples) in default_world() {
        let sample = &samples.rec;
        let size = image.size();
        let candidates = meta_indices(sample, "candidates");
        assert_eq!(candidates.len(), image.objects.len());
        assert_eq!(sample.regions.len(), candidates.len());
        for (k, &i) in candidates.iter().enumerate() {
            assert_region_is(&sample.regions[k], &image.objects[i]);
        }
        let meta = sample.meta.as_ref().unwrap();
        let questions = human_turns(sample);
        let answers = gpt_turns(sample);
        assert!(questions[0].ends_with(rec_guide), "{}", questions[0]);
        assert_eq!(questions[0].matches(REGION_TOKEN).count(), candidates.len());
        followups += questions.len() - 1;
        for (turn, (question, answer)) in questions.iter().zip(&answers).enumerate() {
            let expression = meta["expressions"][turn].as_str().unwrap();
            assert!(
                question.contains(expression),
                "{question} lacks {expression}"
            );
            let parsed = Described::parse(expression.strip_prefix("the ").unwrap());
            with_position += usize::from(parsed.cell.is_some());
            let matching: Vec<usize> = (0..image.objects.len())
                .filter(|&i| parsed.matches(&image.objects[i], size))
                .collect();
            match meta["targets"][turn].as_u64() {
                Some(k) => {
                    assert_eq!(matching, [candidates[k as usize - 1]], "{expression}");
                    assert_eq!(*answer, format!("Region [{k}]."));
                    positives += 1;
                }
                None => {
                    assert!(matching.is_empty(), "{expression} matches {matching:?}");
                    assert_eq!(*answer, no_match);
                    negatives += 1;
                    first_negatives += usize::from(turn == 0);
                }
            }
        }
    }
    assert!(
        positives > 100 && negatives > 20,
        "{positives} / {negatives}"
    );
    assert!(
        followups > 40 && first_negatives > 5,
        "{followups} / {first_negatives}"
    );
    assert!(with_position > 0);
}

/// Negative REC expressions over 150 images: how many name a size or a
/// position (near misses), and how many do not.
fn negatives_by_kind(rec_near_miss: f64) -> (usize, usize) {
    let world = world(SynthConfig {
        seed: 7,
        rec_near_miss,
        ..SynthConfig::default()
    });
    let (mut near, mut plain) = (0, 0);
    for i in 0..IMAGES {
        let image = world.generate_image(i);
        let rec = world.samples(&image, prompts()).unwrap().rec;
        let meta = rec.meta.as_ref().unwrap();
        for (turn, target) in meta["targets"].as_array().unwrap().iter().enumerate() {
            if target.is_null() {
                let expression = meta["expressions"][turn].as_str().unwrap();
                let parsed = Described::parse(expression.strip_prefix("the ").unwrap());
                assert!(parsed.color.is_some(), "{expression}");
                if parsed.size.is_some() || parsed.cell.is_some() {
                    near += 1;
                } else {
                    plain += 1;
                }
            }
        }
    }
    (near, plain)
}

#[test]
fn near_miss_negatives_come_at_their_rate() {
    let (near, plain) = negatives_by_kind(0.0);
    assert_eq!(near, 0, "no near misses at rate 0 ({plain} plain)");
    assert!(plain > 20, "{plain}");
    let (near, plain) = negatives_by_kind(0.5);
    assert!(
        near > 10 && plain > 10,
        "{near} near misses / {plain} plain"
    );
    let (near, plain) = negatives_by_kind(1.0);
    // Plain ones remain only where an image has no near miss to give.
    assert!(near > 5 * plain, "{near} near misses / {plain} plain");
}

#[test]
fn rec_phrasings_keeps_the_first_questions_to_the_first_phrasings() {
    let phrasings = prompts().variants("rec_question").unwrap();
    // The words of a phrasing before its first field.
    let opening = |k: usize| phrasings[k].split('{').next().unwrap().to_string();
    let openings_used = |rec_phrasings| {
        let world = world(SynthConfig {
            images: 60,
            rec_phrasings,
            ..SynthConfig::default()
        });
        let mut used = std::collections::BTreeSet::new();
        for index in 0..60 {
            let rec = world
                .samples(&world.generate_image(index), prompts())
                .unwrap()
                .rec;
            let question = human_turns(&rec)[0].trim_start_matches("<image>\n");
            let k = (0..phrasings.len())
                .find(|&k| question.starts_with(&opening(k)))
                .unwrap_or_else(|| panic!("no phrasing opens {question}"));
            used.insert(k);
        }
        used
    };
    let all = openings_used(None);
    assert!(all.len() > 5, "60 questions used only phrasings {all:?}");
    assert_eq!(openings_used(Some(1)), [0].into());
    let two = openings_used(Some(2));
    assert_eq!(two, [0, 1].into());
}

#[test]
fn labelled_candidates_carry_their_answers_in_order() {
    let plain = world(SynthConfig {
        images: 20,
        ..SynthConfig::default()
    });
    for (labels, item) in [
        (CandidateLabels::Before, "Region [{k}] <region>"),
        (CandidateLabels::After, "<region> as Region [{k}]"),
    ] {
        let labelled = world(SynthConfig {
            images: 20,
            candidate_labels: labels,
            ..SynthConfig::default()
        });
        for index in 0..20 {
            let image = labelled.generate_image(index);
            let with_labels = labelled.samples(&image, prompts()).unwrap().rec;
            let without = plain.samples(&image, prompts()).unwrap().rec;
            let question = human_turns(&with_labels)[0];
            let count = with_labels.regions.len();
            let listed: Vec<String> = (1..=count)
                .map(|k| item.replace("{k}", &k.to_string()))
                .collect();
            let expected = match count {
                1 => listed[0].clone(),
                n => format!("{} and {}", listed[..n - 1].join(", "), listed[n - 1]),
            };
            assert!(question.contains(&expected), "{labels:?}: {question}");
            // Only the candidate list changes: same regions, answers, meta.
            assert_eq!(with_labels.regions, without.regions);
            assert_eq!(gpt_turns(&with_labels), gpt_turns(&without));
            assert_eq!(with_labels.meta, without.meta);
            assert_eq!(
                question.replace(&expected, &rgpt_data::prompts::region_list(count)),
                human_turns(&without)[0]
            );
        }
    }
}

#[test]
fn candidates_without_commas_change_only_the_separators() {
    let plain = world(SynthConfig {
        images: 20,
        ..SynthConfig::default()
    });
    let side_by_side = world(SynthConfig {
        images: 20,
        rec_candidate_commas: false,
        ..SynthConfig::default()
    });
    let mut lists_of_three = 0;
    for index in 0..20 {
        let image = plain.generate_image(index);
        let with_commas = plain.samples(&image, prompts()).unwrap().rec;
        let without = side_by_side.samples(&image, prompts()).unwrap().rec;
        let question = human_turns(&without)[0];
        let count = without.regions.len();
        let listed = match count {
            1 => "<region>".to_string(),
            n => format!("{} and <region>", vec!["<region>"; n - 1].join(" ")),
        };
        assert!(question.contains(&listed), "{question}");
        lists_of_three += usize::from(count >= 3);
        assert_eq!(
            question.replace(&listed, &rgpt_data::prompts::region_list(count)),
            human_turns(&with_commas)[0]
        );
        assert_eq!(without.regions, with_commas.regions);
        assert_eq!(gpt_turns(&without), gpt_turns(&with_commas));
        assert_eq!(without.meta, with_commas.meta);
    }
    assert!(lists_of_three > 0, "no question listed three candidates");
}

#[test]
fn expression_first_questions_name_the_expression_before_any_candidate() {
    let first = world(SynthConfig {
        images: 30,
        rec_expression_first: true,
        ..SynthConfig::default()
    });
    let plain = world(SynthConfig {
        images: 30,
        ..SynthConfig::default()
    });
    let mut phrasings = std::collections::BTreeSet::new();
    for index in 0..30 {
        let image = first.generate_image(index);
        let reordered = first.samples(&image, prompts()).unwrap().rec;
        let usual = plain.samples(&image, prompts()).unwrap().rec;
        let question = human_turns(&reordered)[0];
        let expression = reordered.meta.as_ref().unwrap()["expressions"][0]
            .as_str()
            .unwrap();
        // Unquoted, so the words tokenize as the answers do.
        let named = question.find(&format!(" {expression}")).unwrap();
        let region = question.find(REGION_TOKEN).unwrap();
        assert!(named < region && !question.contains('"'), "{question}");
        assert_eq!(
            question.matches(REGION_TOKEN).count(),
            reordered.regions.len()
        );
        phrasings.insert(question.replace(expression, "").replace(REGION_TOKEN, ""));
        // Only the first question's wording changes.
        assert_eq!(reordered.regions, usual.regions);
        assert_eq!(gpt_turns(&reordered), gpt_turns(&usual));
        assert_eq!(reordered.meta, usual.meta);
        assert_eq!(human_turns(&reordered)[1..], human_turns(&usual)[1..]);
    }
    assert!(phrasings.len() > 3, "{phrasings:?}");
}

#[test]
fn image_captions_list_the_shapes_left_to_right() {
    const COUNTS: [&str; 5] = ["No", "One", "Two", "Three", "Four"];
    for (image, samples) in default_world() {
        let caption = gpt_turns(&samples.image_caption)[0];
        let mut order: Vec<usize> = (0..image.objects.len()).collect();
        // Left to right, top to bottom where two centres line up.
        order.sort_by(|&a, &b| {
            let (ca, cb) = (image.objects[a].center, image.objects[b].center);
            ca[0].total_cmp(&cb[0]).then(ca[1].total_cmp(&cb[1]))
        });
        let (count, list) = caption
            .strip_suffix('.')
            .and_then(|c| c.split_once(": "))
            .unwrap_or_else(|| panic!("{caption}"));
        let n = image.objects.len();
        let noun = if n == 1 { "shape" } else { "shapes" };
        assert_eq!(count, format!("{} {noun}", COUNTS[n]));
        let items: Vec<&str> = list
            .split(", ")
            .flat_map(|part| part.split(" and "))
            .collect();
        assert_eq!(items.len(), n, "{caption}");
        for (item, &i) in items.iter().zip(&order) {
            let d = Described::parse(strip_article(item));
            let o = &image.objects[i];
            assert_eq!(
                (d.color, d.shape),
                (Some(o.color), Some(o.shape)),
                "{caption}"
            );
        }
        assert_eq!(meta_indices(&samples.image_caption, "objects"), order);
    }
}

// ---- files ----------------------------------------------------------------

#[test]
fn write_world_writes_images_ground_truth_and_task_files() {
    let dir = temp_dir("write");
    let config = SynthConfig {
        images: 200,
        seed: 11,
        ..SynthConfig::default()
    };
    let summary = write_world(&config, prompts(), &dir).expect("world writes");
    assert_eq!(summary.images, 200);
    let objects: Vec<ImageObjects> = std::fs::read_to_string(dir.join("objects.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("objects line parses"))
        .collect();
    assert_eq!(objects.len(), 200);
    assert_eq!(
        summary.objects,
        objects.iter().map(|o| o.objects.len() as u64).sum::<u64>()
    );
    let world = world(config);
    for task in TASKS {
        let samples = read_all_samples(&dir.join(format!("{task}.jsonl"))).unwrap();
        assert_eq!(summary.samples[task], samples.len() as u64, "{task}");
        assert!(samples
            .iter()
            .all(|s| s.task == task && s.validate().is_ok()));
        assert!(samples
            .iter()
            .all(|s| dir.join(s.image.as_ref().unwrap()).is_file()));
    }
    for index in [0u64, 57, 199] {
        let image = world.generate_image(index);
        let path = dir.join(format!("images/{index:06}.png"));
        let read = image::open(&path).unwrap().into_rgb8();
        assert_eq!(read, image.rgb, "{}", path.display());
        assert_eq!(objects[index as usize].objects, image.objects);
        assert_eq!(
            objects[index as usize].image,
            format!("images/{index:06}.png")
        );
    }
    let leftovers: Vec<_> = walk(&dir)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The words a text-form sample uses for `object`.
fn phrase(object: &SynthObject) -> String {
    format!(
        "{} {} {} {}",
        object.size.name(),
        object.color.name(),
        object.shape.name(),
        object.position.phrase()
    )
}

/// Whether `name` says everything `expression` says: every word of the
/// expression but its article is in the name. Sound for the world's
/// phrases, where two positions never share all their words.
fn name_says(name: &str, expression: &str) -> bool {
    let words: HashSet<&str> = name.split(' ').collect();
    expression
        .split(' ')
        .filter(|&w| w != "the")
        .all(|w| words.contains(w))
}

#[test]
fn the_text_form_names_each_region_by_its_object_in_order() {
    let mut checked = [0usize; 4];
    let mut checked_no_match = 0;
    for (image, samples) in default_world() {
        let rec_candidates = meta_indices(&samples.rec, "candidates");
        let region_samples = [
            (0, &samples.shape, meta_indices(&samples.shape, "objects")),
            (1, &samples.color, meta_indices(&samples.color, "objects")),
            (2, &samples.rec, rec_candidates.clone()),
        ]
        .into_iter()
        .chain(samples.captions.iter().map(|c| {
            let object = c.meta.as_ref().unwrap()["object"].as_u64().unwrap() as usize;
            (3, c, vec![object])
        }));
        for (kind, sample, objects) in region_samples {
            let text =
                as_text(sample, image, TextRegions::Words).expect("a region task has a text form");
            assert_eq!(text.id, format!("text-{}", sample.id));
            assert_eq!(text.task, format!("text-{}", sample.task));
            assert!(text.image.is_none() && text.regions.is_empty());
            text.validate().expect("the text form validates");
            assert_eq!(text.conversations.len(), sample.conversations.len());
            // Rebuild the text from the original: the placeholders, in order,
            // become the phrases of the objects the meta names.
            let mut names = objects.iter().map(|&i| phrase(&image.objects[i]));
            for (original, written) in sample.conversations.iter().zip(&text.conversations) {
                assert_eq!(original.from, written.from);
                let mut expected = String::new();
                let stripped = original.value.replace(&format!("{IMAGE_TOKEN}\n"), "");
                for (k, piece) in stripped.split(REGION_TOKEN).enumerate() {
                    if k > 0 {
                        expected.push_str(&names.next().expect("a name per region"));
                    }
                    expected.push_str(piece);
                }
                assert_eq!(written.value, expected, "{}", sample.id);
                assert!(!written.value.contains(REGION_TOKEN));
                assert!(!written.value.contains(IMAGE_TOKEN));
            }
            assert!(
                names.next().is_none(),
                "{}: a region left unnamed",
                sample.id
            );
            // Named: the same turns with `<region>` kept, each region
            // given by the same name, in order.
            let named = as_text(sample, image, TextRegions::Named).unwrap();
            named.validate().expect("the named text form validates");
            assert_eq!((&named.id, &named.task), (&text.id, &text.task));
            assert!(named.image.is_none());
            let expected: Vec<Region> = objects
                .iter()
                .map(|&i| Region::Name(phrase(&image.objects[i])))
                .collect();
            assert_eq!(named.regions, expected, "{}", sample.id);
            for (original, written) in sample.conversations.iter().zip(&named.conversations) {
                let stripped = original.value.replace(&format!("{IMAGE_TOKEN}\n"), "");
                assert_eq!(written.value, stripped);
            }
            checked[kind] += 1;
        }
        // Shape answers are then in the question: the turn's region phrase
        // ends with the answer.
        let text = as_text(&samples.shape, image, TextRegions::Words).unwrap();
        for (question, answer) in human_turns(&text).into_iter().zip(gpt_turns(&text)) {
            let object = image
                .objects
                .iter()
                .find(|o| question.contains(&phrase(o)))
                .expect("the question names an object");
            assert_eq!(object.shape.name(), answer, "{question}");
        }
        // Every REC question in words has the image's answer: the target's
        // name says all the expression says, and no other candidate's does.
        let meta = samples.rec.meta.as_ref().unwrap();
        let names: Vec<String> = rec_candidates
            .iter()
            .map(|&i| phrase(&image.objects[i]))
            .collect();
        for (expression, target) in meta["expressions"]
            .as_array()
            .unwrap()
            .iter()
            .zip(meta["targets"].as_array().unwrap())
        {
            let expression = expression.as_str().unwrap();
            let said: Vec<usize> = (0..names.len())
                .filter(|&k| name_says(&names[k], expression))
                .map(|k| k + 1)
                .collect();
            let target = target.as_u64().map(|k| k as usize);
            assert_eq!(
                said,
                target.into_iter().collect::<Vec<_>>(),
                "{expression}: {names:?}"
            );
            if target.is_none() {
                checked_no_match += 1;
            }
        }
    }
    assert!(checked.iter().all(|&n| n >= IMAGES as usize), "{checked:?}");
    assert!(
        checked_no_match > 0,
        "no REC question without a match was checked"
    );
    let (image, samples) = &default_world()[0];
    let err = as_text(&samples.image_caption, image, TextRegions::Words)
        .unwrap_err()
        .to_string();
    assert!(err.contains("has no text form"), "{err}");
}

/// Checks that every region task's text form under `dir` is `as_text` of
/// its samples, one for one; returns how many regions it gives by name.
fn text_form_written(dir: &Path, world: &SynthWorld, regions: TextRegions) -> usize {
    let mut named = 0;
    for task in TEXT_TASKS {
        let samples = read_all_samples(&dir.join(format!("{task}.jsonl"))).unwrap();
        let text = read_all_samples(&text_task_file(dir, task)).unwrap();
        assert_eq!(samples.len(), text.len(), "{task}");
        for (sample, written) in samples.iter().zip(&text) {
            let index: u64 = sample.image.as_ref().unwrap()[7..13].parse().unwrap();
            let image = world.generate_image(index);
            assert_eq!(written, &as_text(sample, &image, regions).unwrap());
            named += written.regions.len();
        }
    }
    named
}

#[test]
fn a_text_world_writes_the_text_form_of_every_region_task() {
    let dir = temp_dir("text");
    let config = SynthConfig {
        images: 40,
        seed: 3,
        text: true,
        ..SynthConfig::default()
    };
    let summary = write_world(&config, prompts(), &dir).expect("world writes");
    let world = world(config);
    for task in TEXT_TASKS {
        let text = read_all_samples(&text_task_file(&dir, task)).unwrap();
        assert_eq!(summary.samples[&format!("text-{task}")], text.len() as u64);
    }
    assert_eq!(
        text_form_written(&dir, &world, TextRegions::Words),
        0,
        "regions written out in words have no named regions"
    );
    assert!(!text_task_file(&dir, "synth-image-caption").exists());
    std::fs::remove_dir_all(&dir).unwrap();
    // `text_regions: named` writes the named form.
    let named_dir = temp_dir("text-named");
    let config = SynthConfig {
        images: 6,
        seed: 3,
        text: true,
        text_regions: TextRegions::Named,
        ..SynthConfig::default()
    };
    write_world(&config, prompts(), &named_dir).expect("world writes");
    let named_world = SynthWorld::new(config).expect("valid config");
    let named_regions = text_form_written(&named_dir, &named_world, TextRegions::Named);
    assert!(named_regions > 0);
    std::fs::remove_dir_all(&named_dir).unwrap();
    // Off by default: no text directory.
    let plain = temp_dir("no-text");
    write_world(
        &SynthConfig {
            images: 4,
            ..SynthConfig::default()
        },
        prompts(),
        &plain,
    )
    .unwrap();
    assert!(!plain.join("text").exists());
    std::fs::remove_dir_all(&plain).unwrap();
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[test]
fn written_world_does_not_depend_on_the_thread_count() {
    let config = SynthConfig {
        images: 40,
        seed: 5,
        ..SynthConfig::default()
    };
    let run = |threads: usize, name: &str| {
        let dir = temp_dir(name);
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(|| write_world(&config, prompts(), &dir))
            .unwrap();
        dir
    };
    let (one, two) = (run(1, "threads1"), run(2, "threads2"));
    let files: Vec<String> = ["objects.jsonl".to_string(), "images/000039.png".to_string()]
        .into_iter()
        .chain(TASKS.iter().map(|t| format!("{t}.jsonl")))
        .collect();
    for file in files {
        assert_eq!(
            std::fs::read(one.join(&file)).unwrap(),
            std::fs::read(two.join(&file)).unwrap(),
            "{file}"
        );
    }
    std::fs::remove_dir_all(one).unwrap();
    std::fs::remove_dir_all(two).unwrap();
}

// ---- configuration --------------------------------------------------------

#[test]
fn bad_configs_are_refused_with_the_field_named() {
    let cases: [(&str, SynthConfig); 8] = [
        (
            "min_shapes",
            SynthConfig {
                min_shapes: 5,
                max_shapes: 2,
                ..SynthConfig::default()
            },
        ),
        (
            "min_size",
            SynthConfig {
                max_size: 100,
                ..SynthConfig::default()
            },
        ),
        (
            "image_size",
            SynthConfig {
                image_size: 8,
                ..SynthConfig::default()
            },
        ),
        (
            "shapes",
            SynthConfig {
                colors: Vec::new(),
                ..SynthConfig::default()
            },
        ),
        (
            "small_area",
            SynthConfig {
                small_area: 0.2,
                ..SynthConfig::default()
            },
        ),
        (
            "box_fraction",
            SynthConfig {
                box_fraction: 1.5,
                ..SynthConfig::default()
            },
        ),
        (
            "rec_near_miss",
            SynthConfig {
                rec_near_miss: -0.1,
                ..SynthConfig::default()
            },
        ),
        (
            "rec_phrasings",
            SynthConfig {
                rec_phrasings: Some(0),
                ..SynthConfig::default()
            },
        ),
    ];
    for (field, config) in cases {
        match SynthWorld::new(config) {
            Err(DataError::InvalidArgument(message)) => {
                assert!(message.contains(field), "{message} should name {field}")
            }
            other => panic!("{field}: {other:?}"),
        }
    }
    let err = write_world(
        &SynthConfig {
            max_shapes: 0,
            ..SynthConfig::default()
        },
        prompts(),
        &temp_dir("refused"),
    );
    assert!(matches!(err, Err(DataError::InvalidArgument(_))));
}

#[test]
fn config_reads_partial_yaml_and_refuses_unknown_fields() {
    let config: SynthConfig =
        serde_yaml::from_str("image_size: 32\nmax_size: 16\nshapes: [circle, star]\n").unwrap();
    assert_eq!(config.image_size, 32);
    assert_eq!(config.shapes, [ShapeKind::Circle, ShapeKind::Star]);
    assert_eq!(config.min_shapes, SynthConfig::default().min_shapes);
    let image = world(config).generate_image(0);
    assert_eq!(image.size(), 32);
    assert!(image
        .objects
        .iter()
        .all(|o| matches!(o.shape, ShapeKind::Circle | ShapeKind::Star)));
    assert!(serde_yaml::from_str::<SynthConfig>("image_sise: 32\n").is_err());
}

#[test]
fn missing_prompt_sets_are_reported_before_any_work() {
    let dir = temp_dir("no-prompts");
    let mut bank = PromptBank::default();
    bank.add_yaml("image_caption: [\"Caption this image.\"]\n")
        .unwrap();
    let err = write_world(
        &SynthConfig {
            images: 3,
            ..SynthConfig::default()
        },
        &bank,
        &dir,
    );
    assert!(matches!(err, Err(DataError::InvalidArgument(_))), "{err:?}");
    assert!(!dir.join("images").exists());
}

#[test]
fn pope_split_asks_about_shown_and_absent_objects() {
    let dir = std::env::temp_dir().join(format!("rgpt-synth-pope-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let prompts = PromptBank::from_dir(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/prompts"),
    )
    .unwrap();
    let config = rgpt_data::synth::SynthConfig {
        images: 12,
        seed: 3,
        ..Default::default()
    };
    let summary = rgpt_data::synth::write_world(&config, &prompts, &dir).unwrap();
    let questions = rgpt_data::synth::pope::pope_questions(&dir, 0).unwrap();
    assert_eq!(questions.len() as u64, summary.images * 2);
    let objects: Vec<rgpt_data::synth::ImageObjects> =
        std::fs::read_to_string(dir.join("objects.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
    for q in &questions {
        let image = objects.iter().find(|o| o.image == q.image).unwrap();
        let shown = image.objects.iter().any(|o| {
            q.text
                == format!(
                    "Is there a {} {} in the image?",
                    o.color.name(),
                    o.shape.name()
                )
        });
        assert_eq!(shown, q.label == "yes", "{q:?}");
    }
    let out = dir.join("pope.jsonl");
    rgpt_data::synth::pope::write_pope_questions(&questions, &out).unwrap();
    let read = rgpt_data::readers::pope::read_questions(&out).unwrap();
    assert_eq!(read.len(), questions.len());
}

#[test]
fn a_region_is_named_only_where_there_is_no_image() {
    let (image, samples) = &default_world()[0];
    let named = as_text(&samples.shape, image, TextRegions::Named).unwrap();
    let mut with_image = named.clone();
    with_image.image = Some("images/000000.png".into());
    for turn in with_image.conversations.iter_mut().take(1) {
        turn.value = format!("{IMAGE_TOKEN}\n{}", turn.value);
    }
    let err = with_image.validate().unwrap_err().to_string();
    assert!(err.contains("region by name beside an image"), "{err}");
    let mut geometry_without_image = samples.shape.clone();
    geometry_without_image.image = None;
    for turn in geometry_without_image.conversations.iter_mut() {
        turn.value = turn.value.replace(&format!("{IMAGE_TOKEN}\n"), "");
    }
    let err = geometry_without_image.validate().unwrap_err().to_string();
    assert!(err.contains("regions with geometry but no image"), "{err}");
    let err = Region::Name("red circle".into())
        .to_spec(Path::new("."))
        .unwrap_err()
        .to_string();
    assert!(err.contains("has no geometry"), "{err}");
}

#[test]
fn colour_shape_regions_are_named_by_colour_and_shape_alone() {
    let (image, samples) = &default_world()[0];
    let full = as_text(&samples.rec, image, TextRegions::Named).unwrap();
    let short = as_text(&samples.rec, image, TextRegions::ColourShape).unwrap();
    assert_eq!(full.conversations, short.conversations);
    assert_eq!(full.regions.len(), short.regions.len());
    let candidates = samples.rec.meta.as_ref().unwrap()["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| &image.objects[i.as_u64().unwrap() as usize])
        .collect::<Vec<_>>();
    for ((long, cut), object) in full.regions.iter().zip(&short.regions).zip(candidates) {
        let (Region::Name(long), Region::Name(cut)) = (long, cut) else {
            panic!("both forms give regions by name: {long:?} {cut:?}");
        };
        assert_eq!(
            cut,
            &format!("{} {}", object.color.name(), object.shape.name())
        );
        assert!(long.contains(cut.as_str()), "{long} / {cut}");
        assert!(long.starts_with(object.size.name()), "{long}");
    }
    let config: SynthConfig =
        serde_yaml::from_str("text: true\ntext_regions: colour_shape").unwrap();
    assert_eq!(config.text_regions, TextRegions::ColourShape);
}

#[test]
fn a_world_with_named_text_regions_names_its_image_regions_in_meta() {
    let names_in_meta = |sample: &Sample| -> Option<Vec<String>> {
        sample
            .meta
            .as_ref()?
            .get("region_names")
            .map(|names| serde_json::from_value(names.clone()).unwrap())
    };
    let dir = temp_dir("meta-names");
    let config = SynthConfig {
        images: 6,
        seed: 5,
        text: true,
        text_regions: TextRegions::ColourShape,
        ..SynthConfig::default()
    };
    write_world(&config, prompts(), &dir).expect("world writes");
    let mut checked = 0;
    for task in TEXT_TASKS {
        let samples = read_all_samples(&dir.join(format!("{task}.jsonl"))).unwrap();
        let text = read_all_samples(&text_task_file(&dir, task)).unwrap();
        for (sample, twin) in samples.iter().zip(&text) {
            let twin_names: Vec<String> = twin
                .regions
                .iter()
                .map(|r| match r {
                    Region::Name(name) => name.clone(),
                    other => panic!("a text region is named: {other:?}"),
                })
                .collect();
            assert_eq!(names_in_meta(sample), Some(twin_names), "{}", sample.id);
            assert_eq!(sample.regions.len(), twin.regions.len());
            checked += 1;
        }
    }
    assert!(checked >= 6 * TEXT_TASKS.len(), "{checked}");
    // Image captions have no regions, and no names.
    let captions = read_all_samples(&dir.join("synth-image-caption.jsonl")).unwrap();
    assert!(captions.iter().all(|s| names_in_meta(s).is_none()));
    std::fs::remove_dir_all(&dir).unwrap();

    // Regions written out in words leave the image samples as they were.
    let words = temp_dir("meta-words");
    write_world(
        &SynthConfig {
            text_regions: TextRegions::Words,
            ..config
        },
        prompts(),
        &words,
    )
    .unwrap();
    let shape = read_all_samples(&words.join("synth-shape.jsonl")).unwrap();
    assert!(shape.iter().all(|s| names_in_meta(s).is_none()));
    std::fs::remove_dir_all(&words).unwrap();
}
