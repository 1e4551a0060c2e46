//! The closed vocabulary of the synthetic world: the shapes it draws, the
//! colours it paints them with, and the size classes it sorts them into.
//! Every answer the world's tasks expect is one of these names.
use std::fmt;

use serde::{Deserialize, Serialize};

/// A shape the world can draw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ShapeKind {
    Circle,
    Square,
    Triangle,
    Star,
    Cross,
    Diamond,
}

impl ShapeKind {
    pub const ALL: [ShapeKind; 6] = [
        ShapeKind::Circle,
        ShapeKind::Square,
        ShapeKind::Triangle,
        ShapeKind::Star,
        ShapeKind::Cross,
        ShapeKind::Diamond,
    ];

    /// The answer word for this shape.
    pub fn name(self) -> &'static str {
        match self {
            ShapeKind::Circle => "circle",
            ShapeKind::Square => "square",
            ShapeKind::Triangle => "triangle",
            ShapeKind::Star => "star",
            ShapeKind::Cross => "cross",
            ShapeKind::Diamond => "diamond",
        }
    }
}

impl fmt::Display for ShapeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A fill colour. The palette is far apart in RGB and every colour has a
/// channel outside the background's range ([`BACKGROUND_LEVELS`]), so a
/// pixel of exactly a palette colour is always a shape's pixel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ColorName {
    Red,
    Green,
    Blue,
    Yellow,
    Purple,
    Orange,
}

impl ColorName {
    pub const ALL: [ColorName; 6] = [
        ColorName::Red,
        ColorName::Green,
        ColorName::Blue,
        ColorName::Yellow,
        ColorName::Purple,
        ColorName::Orange,
    ];

    /// The answer word for this colour.
    pub fn name(self) -> &'static str {
        match self {
            ColorName::Red => "red",
            ColorName::Green => "green",
            ColorName::Blue => "blue",
            ColorName::Yellow => "yellow",
            ColorName::Purple => "purple",
            ColorName::Orange => "orange",
        }
    }

    /// The exact fill of this colour; shapes are drawn flat, without
    /// anti-aliasing, so their masks are exact.
    pub fn rgb(self) -> [u8; 3] {
        match self {
            ColorName::Red => [220, 40, 40],
            ColorName::Green => [40, 180, 60],
            ColorName::Blue => [40, 80, 220],
            ColorName::Yellow => [235, 210, 40],
            ColorName::Purple => [150, 60, 190],
            ColorName::Orange => [245, 140, 30],
        }
    }
}

impl fmt::Display for ColorName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The range every background channel stays in, textures included.
pub const BACKGROUND_LEVELS: std::ops::RangeInclusive<u8> = 80..=176;

/// How big a shape looks, by its visible area as a fraction of the image
/// (thresholds in [`crate::synth::SynthConfig`]), as COCO sorts objects
/// into small, medium and large by area.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SizeClass {
    Small,
    Medium,
    Large,
}

impl SizeClass {
    pub const ALL: [SizeClass; 3] = [SizeClass::Small, SizeClass::Medium, SizeClass::Large];

    /// The class of a visible `area` in an image of `image_area` pixels.
    pub fn of_area(area: u64, image_area: u64, small_below: f64, large_from: f64) -> SizeClass {
        let fraction = area as f64 / image_area.max(1) as f64;
        if fraction < small_below {
            SizeClass::Small
        } else if fraction >= large_from {
            SizeClass::Large
        } else {
            SizeClass::Medium
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            SizeClass::Small => "small",
            SizeClass::Medium => "medium",
            SizeClass::Large => "large",
        }
    }
}

impl fmt::Display for SizeClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_colour_leaves_the_background_range() {
        for color in ColorName::ALL {
            assert!(
                color.rgb().iter().any(|c| !BACKGROUND_LEVELS.contains(c)),
                "{color} could be mistaken for background"
            );
        }
    }

    #[test]
    fn colours_are_far_apart() {
        for (i, a) in ColorName::ALL.iter().enumerate() {
            for b in &ColorName::ALL[i + 1..] {
                let d2: i32 = a
                    .rgb()
                    .iter()
                    .zip(b.rgb())
                    .map(|(&x, y)| (i32::from(x) - i32::from(y)).pow(2))
                    .sum();
                assert!(d2 >= 70 * 70, "{a} and {b} are too close");
            }
        }
    }
}
