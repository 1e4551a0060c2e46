//! Backgrounds: a grey of random level and tint, optionally textured with
//! low-contrast noise or stripes so that a model cannot find shapes by
//! looking for any non-flat pixel. Every channel stays within
//! [`BACKGROUND_LEVELS`], out of reach of the palette.
use std::f64::consts::PI;

use image::{Rgb, RgbImage};
use rand::Rng;

use super::vocab::BACKGROUND_LEVELS;

/// The pattern over the base colour.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Texture {
    Plain,
    /// Independent grey offsets per pixel.
    Noise,
    /// A sinusoid across the image along `angle`.
    Stripes {
        angle: f64,
        period: f64,
        phase: f64,
    },
}

/// A background: base colour, texture and contrast.
#[derive(Debug, Clone, PartialEq)]
pub struct Background {
    base: [f64; 3],
    texture: Texture,
    contrast: f64,
}

impl Background {
    /// A random background; `textured` false gives a plain one.
    pub fn random<R: Rng>(textured: bool, contrast: u8, rng: &mut R) -> Background {
        let level = rng.random_range(104.0..=152.0);
        let base = std::array::from_fn(|_| level + rng.random_range(-8.0..=8.0));
        let texture = if !textured {
            Texture::Plain
        } else if rng.random_bool(0.5) {
            Texture::Noise
        } else {
            Texture::Stripes {
                angle: f64::from(rng.random_range(0..4u8)) * PI / 4.0,
                period: rng.random_range(4.0..=10.0),
                phase: rng.random_range(0.0..2.0 * PI),
            }
        };
        Background {
            base,
            texture,
            contrast: f64::from(contrast),
        }
    }

    /// A `size`×`size` image of this background. Noise draws from `rng`.
    pub fn render<R: Rng>(&self, size: u32, rng: &mut R) -> RgbImage {
        let (lo, hi) = (
            f64::from(*BACKGROUND_LEVELS.start()),
            f64::from(*BACKGROUND_LEVELS.end()),
        );
        RgbImage::from_fn(size, size, |x, y| {
            let offset = match self.texture {
                Texture::Plain => 0.0,
                Texture::Noise => rng.random_range(-1.0..=1.0) * self.contrast,
                Texture::Stripes {
                    angle,
                    period,
                    phase,
                } => {
                    let along = f64::from(x) * angle.cos() + f64::from(y) * angle.sin();
                    (2.0 * PI * along / period + phase).sin() * self.contrast
                }
            };
            Rgb(self.base.map(|c| (c + offset).round().clamp(lo, hi) as u8))
        })
    }
}
