//! Text set on an image, for the labels and dialogues of `samples.png`: the
//! DejaVu Sans embedded in the binary (the font `rgpt plot` draws its
//! curves with), rasterised by ab_glyph with its coverage blended onto the
//! pixels, and greedy word wrapping to a width.
use ab_glyph::{point, Font, FontRef, PxScale, ScaleFont};
use image::{Rgb, RgbImage};

/// A font at one size.
pub struct TextPainter {
    font: FontRef<'static>,
    scale: PxScale,
}

impl TextPainter {
    /// DejaVu Sans at `size` pixels.
    pub fn new(size: f32) -> Result<Self, String> {
        let font = FontRef::try_from_slice(dejavu::sans::regular())
            .map_err(|e| format!("the embedded font does not load: {e}"))?;
        Ok(TextPainter {
            font,
            scale: PxScale::from(size),
        })
    }

    /// Pixels from one baseline to the next.
    pub fn line_height(&self) -> u32 {
        let scaled = self.font.as_scaled(self.scale);
        (scaled.height() + scaled.line_gap()).ceil() as u32
    }

    /// The advance of `text` on one line, kerning included.
    pub fn width(&self, text: &str) -> f32 {
        let scaled = self.font.as_scaled(self.scale);
        let mut width = 0.0;
        let mut previous = None;
        for c in text.chars() {
            let id = scaled.glyph_id(c);
            if let Some(previous) = previous {
                width += scaled.kern(previous, id);
            }
            width += scaled.h_advance(id);
            previous = Some(id);
        }
        width
    }

    /// Draws `text` on one line with its top-left corner at `(x, y)`;
    /// pixels outside the image are left out.
    pub fn draw(&self, image: &mut RgbImage, x: i64, y: i64, text: &str, colour: Rgb<u8>) {
        let scaled = self.font.as_scaled(self.scale);
        let baseline = y as f32 + scaled.ascent();
        let mut caret = x as f32;
        let mut previous = None;
        for c in text.chars() {
            let id = scaled.glyph_id(c);
            if let Some(previous) = previous {
                caret += scaled.kern(previous, id);
            }
            let glyph = id.with_scale_and_position(self.scale, point(caret, baseline));
            caret += scaled.h_advance(id);
            previous = Some(id);
            let Some(outline) = self.font.outline_glyph(glyph) else {
                continue; // a space
            };
            let bounds = outline.px_bounds();
            outline.draw(|gx, gy, coverage| {
                let px = bounds.min.x as i64 + i64::from(gx);
                let py = bounds.min.y as i64 + i64::from(gy);
                if px < 0 || py < 0 || px >= i64::from(image.width()) {
                    return;
                }
                if py >= i64::from(image.height()) {
                    return;
                }
                let pixel = image.get_pixel_mut(px as u32, py as u32);
                let alpha = coverage.clamp(0.0, 1.0);
                for (channel, ink) in pixel.0.iter_mut().zip(colour.0) {
                    *channel = (f32::from(*channel) * (1.0 - alpha) + f32::from(ink) * alpha)
                        .round() as u8;
                }
            });
        }
    }

    /// `text` broken at spaces into lines no wider than `width` (a word
    /// wider than that gets a line of its own); newlines are kept.
    pub fn wrap(&self, text: &str, width: f32) -> Vec<String> {
        let mut lines = Vec::new();
        for paragraph in text.split('\n') {
            let mut line = String::new();
            for word in paragraph.split(' ').filter(|w| !w.is_empty()) {
                let candidate = if line.is_empty() {
                    word.to_string()
                } else {
                    format!("{line} {word}")
                };
                if line.is_empty() || self.width(&candidate) <= width {
                    line = candidate;
                } else {
                    lines.push(std::mem::replace(&mut line, word.to_string()));
                }
            }
            lines.push(line);
        }
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_wrap_at_spaces_within_the_width_and_keep_newlines() {
        let painter = TextPainter::new(13.0).unwrap();
        let text = "From the provided masks denoted by [1], [2] and [3], which one fits \
                    \"the small red circle\"?\nRegion [2].";
        let width = 200.0;
        let lines = painter.wrap(text, width);
        assert!(lines.len() >= 3, "{lines:?}");
        for line in &lines {
            assert!(painter.width(line) <= width, "{line:?} is too wide");
        }
        assert_eq!(lines.last().map(String::as_str), Some("Region [2]."));
        // Nothing is lost or reordered but the breaks.
        assert_eq!(lines.join(" "), text.replace('\n', " "));
    }

    #[test]
    fn text_is_inked_where_it_is_drawn_and_nowhere_else() {
        let painter = TextPainter::new(13.0).unwrap();
        let background = Rgb([40, 40, 40]);
        let mut image = RgbImage::from_pixel(120, 40, background);
        painter.draw(&mut image, 10, 10, "Region [2]", Rgb([255, 255, 255]));
        let inked: Vec<(u32, u32)> = image
            .enumerate_pixels()
            .filter(|(_, _, p)| **p != background)
            .map(|(x, y, _)| (x, y))
            .collect();
        assert!(inked.len() > 50, "only {} pixels inked", inked.len());
        let right = 10 + painter.width("Region [2]").ceil() as u32;
        let bottom = 10 + painter.line_height();
        assert!(
            inked
                .iter()
                .all(|&(x, y)| (10..=right).contains(&x) && (10..=bottom).contains(&y)),
            "ink outside the text's box"
        );
    }
}
