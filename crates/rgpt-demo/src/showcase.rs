//! A few held-out dialogues with the trained model, and a picture of them
//! (`samples.png`): each test image enlarged, every region outlined in its
//! own colour and labelled with its number, and under it each question,
//! the model's answer and the expected one, so a reader can check the
//! answers by eye.
use std::path::Path;

use image::{Rgb, RgbImage};
use rgpt_data::format::{read_samples, Sample, Speaker, REGION_TOKEN};
use rgpt_data::synth::write::task_file;
use rgpt_model::chat::{RegionChat, RegionGenerator};
use rgpt_region::rasterize;
use serde::{Deserialize, Serialize};

use crate::text::TextPainter;
use crate::DemoError;

/// Outline colours, by region number, with their names for the text;
/// none is a colour the world paints shapes in.
pub const OUTLINE_COLOURS: [(&str, [u8; 3]); 6] = [
    ("white", [255, 255, 255]),
    ("black", [0, 0, 0]),
    ("cyan", [0, 230, 255]),
    ("magenta", [255, 0, 200]),
    ("lime", [150, 255, 0]),
    ("pink", [255, 160, 200]),
];

/// How much the 64 px images are enlarged in the picture.
const ZOOM: u32 = 4;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Dialogue {
    pub image: String,
    pub task: String,
    /// Outline colour of each region, in region order.
    pub colours: Vec<String>,
    pub turns: Vec<DialogueTurn>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DialogueTurn {
    pub question: String,
    pub answer: String,
    pub expected: String,
}

/// Replays the first `count` samples of `tasks` from the test world as
/// chats with the model (its own answers kept in the history), and writes
/// the picture of their regions to `picture`.
pub fn showcase(
    generator: &RegionGenerator,
    test_world: &Path,
    tasks: &[&str],
    count: usize,
    picture: &Path,
) -> Result<Vec<Dialogue>, DemoError> {
    let painter = TextPainter::new(TEXT_SIZE).map_err(|message| DemoError::Picture {
        path: picture.to_path_buf(),
        message,
    })?;
    let mut dialogues = Vec::new();
    let mut panels = Vec::new();
    for task in tasks {
        for sample in read_samples(&task_file(test_world, task))?.take(count) {
            let sample = sample?;
            let (dialogue, outlined) = replay(generator, test_world, &sample, &painter)?;
            panels.push(panel(&outlined, &dialogue, dialogues.len() + 1, &painter));
            dialogues.push(dialogue);
        }
    }
    write_picture(&panels, picture)?;
    Ok(dialogues)
}

fn replay(
    generator: &RegionGenerator,
    test_world: &Path,
    sample: &Sample,
    painter: &TextPainter,
) -> Result<(Dialogue, RgbImage), DemoError> {
    let relative = sample.image.clone().unwrap_or_default();
    let path = test_world.join(&relative);
    let rgb = rgpt_vision::preprocess::load_image(&path).map_err(rgpt_model::ModelError::from)?;
    let mut chat = RegionChat::new(generator, &rgb, generator.model.template())?;
    let specs = sample
        .regions
        .iter()
        .map(|r| r.to_spec(test_world))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| DemoError::Invalid {
            field: "eval",
            message: format!("{}: {e}", sample.id),
        })?;
    let config = generator.default_config();
    let mut next_region = 0;
    let mut turns = Vec::new();
    for pair in sample.conversations.chunks(2) {
        let [question, expected] = pair else { break };
        if question.from != Speaker::Human || expected.from != Speaker::Gpt {
            break;
        }
        for _ in 0..question.value.matches(REGION_TOKEN).count() {
            chat.add_region(specs[next_region].clone())?;
            next_region += 1;
        }
        let answer = chat.ask(&question.value, &config, &mut |_| {})?;
        turns.push(DialogueTurn {
            question: question.value.replace("<image>\n", ""),
            answer: answer.text.trim().to_string(),
            expected: expected.value.clone(),
        });
    }
    let panel = outlined(&rgb, &specs, painter)?;
    let colours = (0..specs.len())
        .map(|k| OUTLINE_COLOURS[k % OUTLINE_COLOURS.len()].0.to_string())
        .collect();
    Ok((
        Dialogue {
            image: relative,
            task: sample.task.clone(),
            colours,
            turns,
        },
        panel,
    ))
}

/// Pixel size of the picture's text.
const TEXT_SIZE: f32 = 13.0;
/// Margin around a panel's text, in pixels.
const MARGIN: u32 = 6;
const BACKGROUND: Rgb<u8> = Rgb([40, 40, 40]);

/// The image enlarged `ZOOM` times with a band drawn just outside each
/// region's edge in its colour (outside, so a yellow outline still shows
/// around a yellow shape), and each region's number `[k]` on a tag of its
/// colour above its top-left corner (below it when there is no room).
fn outlined(
    rgb: &RgbImage,
    regions: &[rgpt_region::RegionSpec],
    painter: &TextPainter,
) -> Result<RgbImage, DemoError> {
    const BAND: i64 = 3;
    let (w, h) = rgb.dimensions();
    let mut out = image::imageops::resize(rgb, w * ZOOM, h * ZOOM, image::imageops::Nearest);
    let (zw, zh) = ((w * ZOOM) as i64, (h * ZOOM) as i64);
    let mut tags = Vec::with_capacity(regions.len());
    for (k, region) in regions.iter().enumerate() {
        let mask = rasterize(region, h, w).map_err(rgpt_model::ModelError::from)?;
        let inside = |x: i64, y: i64| {
            (0..zw).contains(&x)
                && (0..zh).contains(&y)
                && mask
                    .get((x / i64::from(ZOOM)) as u32, (y / i64::from(ZOOM)) as u32)
                    .unwrap_or(false)
        };
        let colour = Rgb(OUTLINE_COLOURS[k % OUTLINE_COLOURS.len()].1);
        let mut corner: Option<(i64, i64, i64)> = None; // left, top, bottom
        for y in 0..zh {
            for x in 0..zw {
                if inside(x, y) {
                    corner = Some(match corner {
                        None => (x, y, y),
                        Some((left, top, _)) => (left.min(x), top, y),
                    });
                }
                let near = !inside(x, y)
                    && (-BAND..=BAND)
                        .flat_map(|dy| (-BAND..=BAND).map(move |dx| (dx, dy)))
                        .any(|(dx, dy)| inside(x + dx, y + dy));
                if near {
                    out.put_pixel(x as u32, y as u32, colour);
                }
            }
        }
        if let Some(corner) = corner {
            tags.push((k + 1, colour, corner));
        }
    }
    // Tags after every outline, so no outline covers a number.
    for (number, colour, (left, top, bottom)) in tags {
        let text = format!("[{number}]");
        let (tw, th) = (
            painter.width(&text).ceil() as i64 + 4,
            i64::from(painter.line_height()),
        );
        let above = top - BAND - th;
        let y = if above >= 0 {
            above
        } else {
            (bottom + BAND + 1).min(zh - th)
        };
        let x = (left - BAND).clamp(0, (zw - tw).max(0));
        for ty in y.max(0)..(y + th).min(zh) {
            for tx in x..(x + tw).min(zw) {
                out.put_pixel(tx as u32, ty as u32, colour);
            }
        }
        painter.draw(&mut out, x + 2, y, &text, ink_on(colour));
    }
    Ok(out)
}

/// Black or white, whichever reads on `background`.
fn ink_on(background: Rgb<u8>) -> Rgb<u8> {
    let [r, g, b] = background.0.map(f64::from);
    if 0.299 * r + 0.587 * g + 0.114 * b > 128.0 {
        Rgb([0, 0, 0])
    } else {
        Rgb([255, 255, 255])
    }
}

/// `question` with each `<region>` written as its number on the picture,
/// `[k]`, counting on from the `regions` of earlier turns.
fn numbered(question: &str, regions: &mut usize) -> String {
    let mut out = String::new();
    for (k, piece) in question.split(REGION_TOKEN).enumerate() {
        if k > 0 {
            *regions += 1;
            out.push_str(&format!("[{regions}]"));
        }
        out.push_str(piece);
    }
    out
}

/// One dialogue's panel: a title line, the outlined image, then each turn's
/// question (its `<region>`s written as the numbers on the image), the
/// model's answer (green when it is the expected one, orange otherwise)
/// and the expected answer, wrapped to the image's width.
fn panel(
    outlined: &RgbImage,
    dialogue: &Dialogue,
    number: usize,
    painter: &TextPainter,
) -> RgbImage {
    const TITLE: Rgb<u8> = Rgb([255, 255, 255]);
    const QUESTION: Rgb<u8> = Rgb([220, 220, 220]);
    const RIGHT: Rgb<u8> = Rgb([120, 230, 120]);
    const WRONG: Rgb<u8> = Rgb([255, 170, 60]);
    const EXPECTED: Rgb<u8> = Rgb([160, 160, 160]);
    let width = outlined.width();
    let text_width = (width - 2 * MARGIN) as f32;
    let mut lines: Vec<(String, Rgb<u8>)> = Vec::new();
    let mut regions = 0;
    for turn in &dialogue.turns {
        let question = numbered(&turn.question, &mut regions);
        let answer_colour = if turn.answer == turn.expected {
            RIGHT
        } else {
            WRONG
        };
        for (label, text, colour) in [
            ("Q", question.as_str(), QUESTION),
            ("A", turn.answer.as_str(), answer_colour),
            ("expected", turn.expected.as_str(), EXPECTED),
        ] {
            for line in painter.wrap(&format!("{label}: {text}"), text_width) {
                lines.push((line, colour));
            }
        }
    }
    let line_height = painter.line_height();
    let title_height = line_height + 2 * MARGIN;
    let height =
        title_height + outlined.height() + MARGIN + line_height * lines.len() as u32 + MARGIN;
    let mut panel = RgbImage::from_pixel(width, height, BACKGROUND);
    let title = format!("{number}. {} ({})", dialogue.task, dialogue.image);
    painter.draw(
        &mut panel,
        i64::from(MARGIN),
        i64::from(MARGIN),
        &title,
        TITLE,
    );
    image::imageops::replace(&mut panel, outlined, 0, i64::from(title_height));
    let mut y = title_height + outlined.height() + MARGIN;
    for (line, colour) in &lines {
        painter.draw(&mut panel, i64::from(MARGIN), i64::from(y), line, *colour);
        y += line_height;
    }
    panel
}

/// Panels side by side with a gap, written atomically as PNG.
fn write_picture(panels: &[RgbImage], path: &Path) -> Result<(), DemoError> {
    const GAP: u32 = 8;
    let height = panels.iter().map(RgbImage::height).max().unwrap_or(1);
    let width = panels.iter().map(|p| p.width() + GAP).sum::<u32>().max(1);
    let mut sheet = RgbImage::from_pixel(width, height, BACKGROUND);
    let mut x = 0;
    for panel in panels {
        image::imageops::replace(&mut sheet, panel, i64::from(x), 0);
        x += panel.width() + GAP;
    }
    let mut png = Vec::new();
    sheet
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .map_err(|e| DemoError::Picture {
            path: path.to_path_buf(),
            message: format!("cannot encode: {e}"),
        })?;
    rgpt_weights::save::write_atomic(path, &png)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rgpt_region::RegionSpec;

    fn painter() -> TextPainter {
        TextPainter::new(TEXT_SIZE).unwrap()
    }

    #[test]
    fn each_region_is_outlined_and_tagged_with_its_number_in_its_colour() {
        let rgb = RgbImage::from_pixel(64, 64, Rgb([90, 90, 90]));
        // [1] well inside (its tag above it), [2] at the top edge (its tag
        // below it).
        let regions = [
            RegionSpec::Box {
                x1: 20.0,
                y1: 30.0,
                x2: 40.0,
                y2: 50.0,
            },
            RegionSpec::Box {
                x1: 44.0,
                y1: 0.0,
                x2: 60.0,
                y2: 10.0,
            },
        ];
        let out = outlined(&rgb, &regions, &painter()).unwrap();
        assert_eq!(out.dimensions(), (64 * ZOOM, 64 * ZOOM));
        let count = |colour: [u8; 3], xs: std::ops::Range<u32>, ys: std::ops::Range<u32>| {
            ys.flat_map(|y| xs.clone().map(move |x| (x, y)))
                .filter(|&(x, y)| out.get_pixel(x, y).0 == colour)
                .count()
        };
        let (white, black) = (OUTLINE_COLOURS[0].1, OUTLINE_COLOURS[1].1);
        let line = painter().line_height();
        // Region 1's tag: a white box above its top-left corner (y 120 at
        // zoom 4), holding black text.
        let tag_rows = 120 - 3 - line..120 - 3;
        assert!(count(white, 77..100, tag_rows.clone()) > 100);
        let ink = tag_rows
            .flat_map(|y| (80..96).map(move |x| (x, y)))
            .filter(|&(x, y)| out.get_pixel(x, y).0 != white)
            .count();
        assert!(ink > 10, "no number in the tag");
        // Region 2 touches the top: its black tag goes below it (y 40).
        assert!(count(black, 173..200, 44..44 + line) > 100);
        // The outline band sits outside the box, not inside it.
        assert_eq!(out.get_pixel(78, 160).0, white);
        assert_eq!(out.get_pixel(100, 160).0, [90, 90, 90]);
    }

    #[test]
    fn regions_in_questions_are_numbered_across_turns() {
        let mut regions = 0;
        assert_eq!(
            numbered("From <region>, <region> and <region>, which?", &mut regions),
            "From [1], [2] and [3], which?"
        );
        assert_eq!(numbered("And <region>?", &mut regions), "And [4]?");
        assert_eq!(numbered("No region here.", &mut regions), "No region here.");
        assert_eq!(regions, 4);
    }

    #[test]
    fn a_panel_shows_the_numbered_question_the_answer_and_the_expected_one() {
        let painter = painter();
        let outlined = RgbImage::from_pixel(256, 256, Rgb([90, 90, 90]));
        let dialogue = Dialogue {
            image: "images/000001.png".into(),
            task: "synth-rec".into(),
            colours: vec!["white".into(), "black".into()],
            turns: vec![DialogueTurn {
                question: "Which is <region>?".into(),
                answer: "Region [1].".into(),
                expected: "Region [2].".into(),
            }],
        };
        let panel = panel(&outlined, &dialogue, 3, &painter);
        let line = painter.line_height();
        // A title line above the image, three text lines (Q, A, expected)
        // below it.
        let title = line + 2 * MARGIN;
        assert_eq!(panel.height(), title + 256 + MARGIN + 3 * line + MARGIN);
        assert_eq!(panel.get_pixel(128, title + 128).0, [90, 90, 90]);
        // Text is anti-aliased: count inked pixels, or those of a hue.
        let orange = |[r, g, b]: [u8; 3]| r > g.saturating_add(30) && g > b.saturating_add(30);
        let inked = |rows: std::ops::Range<u32>, hue: Option<&dyn Fn([u8; 3]) -> bool>| {
            rows.flat_map(|y| (0..panel.width()).map(move |x| (x, y)))
                .filter(|&(x, y)| {
                    let p = panel.get_pixel(x, y).0;
                    p != BACKGROUND.0 && hue.is_none_or(|hue| hue(p))
                })
                .count()
        };
        let text_top = title + 256 + MARGIN;
        assert!(inked(0..title, None) > 50, "no title");
        assert!(inked(text_top..text_top + line, None) > 100, "no question");
        // A wrong answer is drawn in orange.
        let answer = text_top + line..text_top + 2 * line;
        assert!(
            inked(answer.clone(), Some(&orange)) > 20,
            "no answer in orange"
        );
        // The question and the expected answer are grey, not orange.
        assert_eq!(inked(text_top..text_top + line, Some(&orange)), 0);
        assert!(
            inked(text_top + 2 * line..panel.height(), None) > 50,
            "no expected answer"
        );
    }
}
