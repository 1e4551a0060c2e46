//! Laying out and rendering one image: shapes are placed one by one, later
//! ones on top, and a placement is kept only if it stays clear of the
//! shapes before it (unless allowed to overlap them, with chance
//! `overlap`), every shape still shows enough of itself, and no two shapes
//! share shape, colour and size class.
//! Masks are the pixels each shape shows in the final picture.
use image::{Rgb, RgbImage};
use rand::seq::IndexedRandom;
use rand::Rng;
use rgpt_region::Rle;
use serde::{Deserialize, Serialize};

use super::background::Background;
use super::config::SynthConfig;
use super::describe::Position;
use super::outline::{quantise, Outline};
use super::rng::{stream_rng, Stream};
use super::vocab::{ColorName, ShapeKind, SizeClass};

/// Placements tried per wanted shape before the layout settles for fewer.
const ATTEMPTS_PER_SHAPE: usize = 30;
/// Centroids are rounded to multiples of this (in pixels) so that they
/// survive a trip through JSON exactly.
const CENTER_STEP: f64 = 1.0 / 1024.0;
/// Fewest visible pixels a shape may keep.
const MIN_VISIBLE_PIXELS: u64 = 6;

/// One shape as it appears in the final image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SynthObject {
    pub shape: ShapeKind,
    pub color: ColorName,
    /// Class of the visible area.
    pub size: SizeClass,
    /// Tight box of the visible pixels, `[x1, y1, x2, y2]` with `x2`, `y2`
    /// one past the last pixel, so `Region::Box` of it covers them exactly.
    pub bbox: [u32; 4],
    /// Centroid of the visible pixels (pixel centres at +0.5), to 1/1024 px.
    pub center: [f64; 2],
    /// Where the centroid lies in the image's 3×3 grid.
    pub position: Position,
    /// Visible pixels.
    pub area: u64,
    /// Pixels the shape would cover with nothing on top of it.
    pub full_area: u64,
    /// The objects drawn later that hide part of this one.
    pub hidden_by: Vec<usize>,
    /// The visible pixels.
    pub mask: Rle,
    /// The drawn outline.
    pub outline: Outline,
}

/// One rendered image of the world with its ground truth. Objects are in
/// drawing order, back to front.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthImage {
    pub index: u64,
    pub rgb: RgbImage,
    pub objects: Vec<SynthObject>,
}

impl SynthImage {
    pub fn size(&self) -> u32 {
        self.rgb.width()
    }
}

/// Image `index` of the world `config` describes; it depends on nothing
/// else. `config` must have passed [`SynthConfig::validate`] (which
/// [`super::SynthWorld`] guarantees).
pub(crate) fn generate(config: &SynthConfig, index: u64) -> SynthImage {
    let mut rng = stream_rng(config.seed, index, Stream::Scene);
    let size = config.image_size;
    let wanted = rng.random_range(config.min_shapes..=config.max_shapes);
    let mut outlines: Vec<Outline> = Vec::with_capacity(wanted);
    let mut layout = Layout::paint(&outlines, size);
    for _ in 0..wanted * ATTEMPTS_PER_SHAPE {
        if outlines.len() == wanted {
            break;
        }
        let may_overlap = rng.random::<f64>() < config.overlap;
        outlines.push(random_outline(config, &mut rng));
        let trial = Layout::paint(&outlines, size);
        // Shapes placed before show as much as before exactly when the new
        // one covers none of them.
        let clear = trial.visible[..layout.visible.len()] == layout.visible[..];
        if (may_overlap || clear) && trial.acceptable(config, &outlines) {
            layout = trial;
        } else {
            outlines.pop();
        }
    }
    if outlines.len() < wanted {
        tracing::debug!(
            index,
            wanted,
            placed = outlines.len(),
            "synthetic layout settled for fewer shapes"
        );
    }
    let background = Background::random(config.texture, config.texture_contrast, &mut rng);
    let mut rgb = background.render(size, &mut rng);
    for (pixel, &label) in rgb.pixels_mut().zip(&layout.labels) {
        if let Some(outline) = label.checked_sub(1).map(|i| &outlines[usize::from(i)]) {
            *pixel = Rgb(outline.color.rgb());
        }
    }
    let objects = (0..outlines.len())
        .map(|i| layout.object(config, &outlines, i))
        .collect();
    SynthImage {
        index,
        rgb,
        objects,
    }
}

fn random_outline<R: Rng>(config: &SynthConfig, rng: &mut R) -> Outline {
    // Validation guarantees both lists are non-empty.
    let shape = *config.shapes.choose(rng).unwrap_or(&ShapeKind::Circle);
    let color = *config.colors.choose(rng).unwrap_or(&ColorName::Red);
    let extent = rng.random_range(f64::from(config.min_size)..=f64::from(config.max_size));
    Outline::random(shape, color, extent, config.image_size, rng)
}

/// Which outline shows at each pixel.
struct Layout {
    size: u32,
    /// Row-major; 0 is background, `i + 1` is outline `i`.
    labels: Vec<u8>,
    visible: Vec<u64>,
    full: Vec<u64>,
}

impl Layout {
    fn paint(outlines: &[Outline], size: u32) -> Layout {
        let mut labels = vec![0u8; size as usize * size as usize];
        let mut full = vec![0u64; outlines.len()];
        for (i, outline) in outlines.iter().enumerate() {
            // Validation caps shapes at 64, so labels fit in a u8.
            let label = (i + 1) as u8;
            outline.cover(size, |p| {
                labels[p] = label;
                full[i] += 1;
            });
        }
        let mut visible = vec![0u64; outlines.len()];
        for &label in labels.iter().filter(|&&l| l > 0) {
            visible[usize::from(label - 1)] += 1;
        }
        Layout {
            size,
            labels,
            visible,
            full,
        }
    }

    fn size_class(&self, config: &SynthConfig, i: usize) -> SizeClass {
        let image_area = u64::from(self.size) * u64::from(self.size);
        SizeClass::of_area(
            self.visible[i],
            image_area,
            config.small_area,
            config.large_area,
        )
    }

    /// Every shape keeps enough of itself, and shape, colour and size class
    /// together tell any two apart (so a referring expression can always
    /// single one out).
    fn acceptable(&self, config: &SynthConfig, outlines: &[Outline]) -> bool {
        let shows_enough =
            self.visible.iter().zip(&self.full).all(|(&v, &f)| {
                v >= MIN_VISIBLE_PIXELS && v as f64 >= config.min_visible * f as f64
            });
        let keys: Vec<_> = outlines
            .iter()
            .enumerate()
            .map(|(i, o)| (o.shape, o.color, self.size_class(config, i)))
            .collect();
        let distinct = keys
            .iter()
            .enumerate()
            .all(|(i, key)| !keys[..i].contains(key));
        shows_enough && distinct
    }

    /// The outlines showing where outline `i` would, in index order.
    fn hiding(&self, outlines: &[Outline], i: usize) -> Vec<usize> {
        let mut hiding = Vec::new();
        outlines[i].cover(self.size, |p| {
            if let Some(j) = self.labels[p].checked_sub(1).map(usize::from) {
                if j != i && !hiding.contains(&j) {
                    hiding.push(j);
                }
            }
        });
        hiding.sort_unstable();
        hiding
    }

    fn object(&self, config: &SynthConfig, outlines: &[Outline], i: usize) -> SynthObject {
        let size = self.size as usize;
        let label = (i + 1) as u8;
        // COCO RLE runs down columns, so the mask is gathered column-major.
        let mut column_major = vec![0u8; size * size];
        let (mut x1, mut y1, mut x2, mut y2) = (size, size, 0, 0);
        let (mut sum_x, mut sum_y) = (0.0, 0.0);
        for y in 0..size {
            for x in 0..size {
                if self.labels[y * size + x] == label {
                    column_major[x * size + y] = 1;
                    (x1, y1, x2, y2) = (x1.min(x), y1.min(y), x2.max(x + 1), y2.max(y + 1));
                    sum_x += x as f64 + 0.5;
                    sum_y += y as f64 + 0.5;
                }
            }
        }
        let area = self.visible[i];
        let center = [sum_x, sum_y].map(|sum| quantise(sum / area as f64, CENTER_STEP));
        let mask = Rle::encode_col_major(self.size, self.size, &column_major)
            .expect("the column-major buffer holds exactly size*size pixels");
        SynthObject {
            shape: outlines[i].shape,
            color: outlines[i].color,
            size: self.size_class(config, i),
            bbox: [x1, y1, x2, y2].map(|v| v as u32),
            center,
            position: Position::of(center, self.size, self.size),
            area,
            full_area: self.full[i],
            hidden_by: self.hiding(outlines, i),
            mask,
            outline: outlines[i],
        }
    }
}
