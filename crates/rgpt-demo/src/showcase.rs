//! A few held-out dialogues with the trained model, and a picture of their
//! regions: each test image enlarged, every region outlined in its own
//! colour, so a reader can check the answers by eye.
use std::path::Path;

use image::{Rgb, RgbImage};
use rgpt_data::format::{read_samples, Sample, Speaker, REGION_TOKEN};
use rgpt_data::synth::write::task_file;
use rgpt_model::pipeline::{RegionChat, RegionGenerator};
use rgpt_region::rasterize;
use serde::{Deserialize, Serialize};

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
    let mut dialogues = Vec::new();
    let mut panels = Vec::new();
    for task in tasks {
        for sample in read_samples(&task_file(test_world, task))?.take(count) {
            let sample = sample?;
            let (dialogue, panel) = replay(generator, test_world, &sample)?;
            dialogues.push(dialogue);
            panels.push(panel);
        }
    }
    write_picture(&panels, picture)?;
    Ok(dialogues)
}

fn replay(
    generator: &RegionGenerator,
    test_world: &Path,
    sample: &Sample,
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
    let panel = outlined(&rgb, &specs)?;
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

/// The image enlarged `ZOOM` times with a band drawn just outside each
/// region's edge in its colour (outside, so a yellow outline still shows
/// around a yellow shape).
fn outlined(rgb: &RgbImage, regions: &[rgpt_region::RegionSpec]) -> Result<RgbImage, DemoError> {
    const BAND: i64 = 3;
    let (w, h) = rgb.dimensions();
    let mut out = image::imageops::resize(rgb, w * ZOOM, h * ZOOM, image::imageops::Nearest);
    let (zw, zh) = ((w * ZOOM) as i64, (h * ZOOM) as i64);
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
        for y in 0..zh {
            for x in 0..zw {
                let near = !inside(x, y)
                    && (-BAND..=BAND)
                        .flat_map(|dy| (-BAND..=BAND).map(move |dx| (dx, dy)))
                        .any(|(dx, dy)| inside(x + dx, y + dy));
                if near {
                    out.put_pixel(x as u32, y as u32, colour);
                }
            }
        }
    }
    Ok(out)
}

/// Panels side by side with a gap, written atomically as PNG.
fn write_picture(panels: &[RgbImage], path: &Path) -> Result<(), DemoError> {
    const GAP: u32 = 8;
    let height = panels.iter().map(RgbImage::height).max().unwrap_or(1);
    let width = panels.iter().map(|p| p.width() + GAP).sum::<u32>().max(1);
    let mut sheet = RgbImage::from_pixel(width, height, Rgb([40, 40, 40]));
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
