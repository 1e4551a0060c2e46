//! The world's language, computed from its geometry: where a shape is in
//! the image, where it is relative to its nearest neighbour, referring
//! expressions that pick out exactly one shape (or none), and captions.
//! Every statement here is a function of the objects' centroids and
//! attributes, so tests can check it against the pixels.
use rand::seq::IndexedRandom;
use rand::Rng;
use serde::{Deserialize, Serialize};

use super::scene::{SynthImage, SynthObject};
use super::vocab::{ColorName, ShapeKind, SizeClass};

/// A cell of the image's 3×3 grid (thirds of width and height).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Position {
    #[serde(rename = "top left")]
    TopLeft,
    #[serde(rename = "top")]
    Top,
    #[serde(rename = "top right")]
    TopRight,
    #[serde(rename = "left")]
    Left,
    #[serde(rename = "centre")]
    Centre,
    #[serde(rename = "right")]
    Right,
    #[serde(rename = "bottom left")]
    BottomLeft,
    #[serde(rename = "bottom")]
    Bottom,
    #[serde(rename = "bottom right")]
    BottomRight,
}

impl Position {
    pub const ALL: [Position; 9] = [
        Position::TopLeft,
        Position::Top,
        Position::TopRight,
        Position::Left,
        Position::Centre,
        Position::Right,
        Position::BottomLeft,
        Position::Bottom,
        Position::BottomRight,
    ];

    /// The cell holding `center` in a `width`×`height` image; a point on a
    /// third line belongs to the cell after it.
    pub fn of(center: [f64; 2], width: u32, height: u32) -> Position {
        let third = |v: f64, side: u32| ((3.0 * v / f64::from(side)).floor() as i64).clamp(0, 2);
        let column = third(center[0], width);
        let row = third(center[1], height);
        Position::ALL[(row * 3 + column) as usize]
    }

    /// `(row, column)` of the cell, each 0..3 from the top left.
    pub fn cell(self) -> (usize, usize) {
        let i = Position::ALL.iter().position(|&p| p == self).unwrap_or(4);
        (i / 3, i % 3)
    }

    pub fn name(self) -> &'static str {
        match self {
            Position::TopLeft => "top left",
            Position::Top => "top",
            Position::TopRight => "top right",
            Position::Left => "left",
            Position::Centre => "centre",
            Position::Right => "right",
            Position::BottomLeft => "bottom left",
            Position::Bottom => "bottom",
            Position::BottomRight => "bottom right",
        }
    }

    /// The adverbial phrase: "in the top left", "at the top", "on the left".
    pub fn phrase(self) -> &'static str {
        match self {
            Position::TopLeft => "in the top left",
            Position::Top => "at the top",
            Position::TopRight => "in the top right",
            Position::Left => "on the left",
            Position::Centre => "in the centre",
            Position::Right => "on the right",
            Position::BottomLeft => "in the bottom left",
            Position::Bottom => "at the bottom",
            Position::BottomRight => "in the bottom right",
        }
    }
}

/// Where one shape lies relative to another: behind or in front of it
/// when one hides part of the other, otherwise along the axis on which
/// their centroids differ most (horizontal on a tie).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Relation {
    #[serde(rename = "left of")]
    LeftOf,
    #[serde(rename = "right of")]
    RightOf,
    #[serde(rename = "above")]
    Above,
    #[serde(rename = "below")]
    Below,
    #[serde(rename = "behind")]
    Behind,
    #[serde(rename = "in front of")]
    InFrontOf,
}

impl Relation {
    /// Where object `i` lies relative to object `j`.
    pub fn of(objects: &[SynthObject], i: usize, j: usize) -> Relation {
        if objects[i].hidden_by.contains(&j) {
            Relation::Behind
        } else if objects[j].hidden_by.contains(&i) {
            Relation::InFrontOf
        } else {
            Relation::between(objects[i].center, objects[j].center)
        }
    }

    /// Where a point `a` lies relative to a point `b`, by the axis along
    /// which they differ most.
    pub fn between(a: [f64; 2], b: [f64; 2]) -> Relation {
        let dx = a[0] - b[0];
        let dy = a[1] - b[1];
        match (dx.abs() >= dy.abs(), dx < 0.0, dy < 0.0) {
            (true, true, _) => Relation::LeftOf,
            (true, false, _) => Relation::RightOf,
            (false, _, true) => Relation::Above,
            (false, _, false) => Relation::Below,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Relation::LeftOf => "left of",
            Relation::RightOf => "right of",
            Relation::Above => "above",
            Relation::Below => "below",
            Relation::Behind => "behind",
            Relation::InFrontOf => "in front of",
        }
    }

    /// The phrase before the other shape: "to the left of", "partly behind".
    pub fn phrase(self) -> &'static str {
        match self {
            Relation::LeftOf => "to the left of",
            Relation::RightOf => "to the right of",
            Relation::Above => "above",
            Relation::Below => "below",
            // Layouts keep most of every shape visible.
            Relation::Behind => "partly behind",
            Relation::InFrontOf => "in front of",
        }
    }
}

/// The other object whose centroid is nearest object `i`'s (the first on
/// a tie), if there is another.
pub fn nearest_other(objects: &[SynthObject], i: usize) -> Option<usize> {
    let distance = |j: usize| {
        let [x, y] = objects[j].center;
        (x - objects[i].center[0]).hypot(y - objects[i].center[1])
    };
    (0..objects.len())
        .filter(|&j| j != i)
        .fold(None, |best: Option<usize>, j| match best {
            Some(b) if distance(b) <= distance(j) => Some(b),
            _ => Some(j),
        })
}

/// A description that picks out objects: the shape and any of size,
/// colour and position. An object matches when it has every attribute
/// named.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Expression {
    pub size: Option<SizeClass>,
    pub color: Option<ColorName>,
    pub shape: ShapeKind,
    pub position: Option<Position>,
}

impl Expression {
    /// "the small red circle in the top left".
    pub fn text(&self) -> String {
        let mut words = vec!["the"];
        words.extend(self.size.map(SizeClass::name));
        words.extend(self.color.map(ColorName::name));
        words.push(self.shape.name());
        words.extend(self.position.map(Position::phrase));
        words.join(" ")
    }

    pub fn matches(&self, object: &SynthObject) -> bool {
        object.shape == self.shape
            && self.size.is_none_or(|s| s == object.size)
            && self.color.is_none_or(|c| c == object.color)
            && self.position.is_none_or(|p| p == object.position)
    }

    /// Indices of the objects it matches.
    pub fn matching(&self, objects: &[SynthObject]) -> Vec<usize> {
        (0..objects.len())
            .filter(|&i| self.matches(&objects[i]))
            .collect()
    }
}

/// An expression that matches object `target` and nothing else: the
/// fewest attributes that do (shape; colour and shape; size, colour and
/// shape; then with the position), or with chance `overspecify` another
/// unique one that names more. None when no expression is unique.
pub fn referring_expression<R: Rng>(
    objects: &[SynthObject],
    target: usize,
    overspecify: f64,
    rng: &mut R,
) -> Option<Expression> {
    let o = &objects[target];
    let levels = [
        (None, None, None),
        (None, Some(o.color), None),
        (Some(o.size), Some(o.color), None),
        (None, Some(o.color), Some(o.position)),
        (Some(o.size), Some(o.color), Some(o.position)),
    ];
    let unique: Vec<Expression> = levels
        .into_iter()
        .map(|(size, color, position)| Expression {
            size,
            color,
            shape: o.shape,
            position,
        })
        .filter(|e| e.matching(objects) == [target])
        .collect();
    let (&fewest, more) = unique.split_first()?;
    if rng.random::<f64>() < overspecify {
        if let Some(&more) = more.choose(rng) {
            return Some(more);
        }
    }
    Some(fewest)
}

/// An expression that matches none of `objects`, built from the given
/// palette. With chance `near_miss` (when there is one) it is a near miss:
/// a colour and shape that are present with another size or position.
pub fn absent_expression<R: Rng>(
    objects: &[SynthObject],
    shapes: &[ShapeKind],
    colors: &[ColorName],
    near_miss: f64,
    rng: &mut R,
) -> Option<Expression> {
    let plain = |color, shape| Expression {
        size: None,
        color: Some(color),
        shape,
        position: None,
    };
    let mut absent = Vec::new();
    for &shape in shapes {
        for &color in colors {
            let e = plain(color, shape);
            if e.matching(objects).is_empty() {
                absent.push(e);
            }
        }
    }
    let mut near_misses = Vec::new();
    for o in objects {
        for size in SizeClass::ALL {
            near_misses.push(Expression {
                size: Some(size),
                ..plain(o.color, o.shape)
            });
        }
        for position in Position::ALL {
            near_misses.push(Expression {
                position: Some(position),
                ..plain(o.color, o.shape)
            });
        }
    }
    near_misses.retain(|e| e.matching(objects).is_empty());
    let pool = if !near_misses.is_empty() && (absent.is_empty() || rng.random_bool(near_miss)) {
        &near_misses
    } else {
        &absent
    };
    pool.choose(rng).copied()
}

/// "small red circle".
pub fn object_phrase(object: &SynthObject) -> String {
    format!("{} {} {}", object.size, object.color, object.shape)
}

/// "a" or "an", by the first letter of `word`.
pub fn indefinite_article(word: &str) -> &'static str {
    match word.chars().next() {
        Some('a' | 'e' | 'i' | 'o' | 'u') => "an",
        _ => "a",
    }
}

fn with_article(phrase: &str) -> String {
    format!("{} {phrase}", indefinite_article(phrase))
}

fn capitalise(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// What a detailed caption of one object states.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaptionFacts {
    pub object: usize,
    pub shape: ShapeKind,
    pub color: ColorName,
    pub size: SizeClass,
    pub position: Position,
    /// The nearest other object and where this one lies relative to it.
    pub nearest: Option<usize>,
    pub relation: Option<Relation>,
}

impl CaptionFacts {
    pub fn of(image: &SynthImage, object: usize) -> CaptionFacts {
        let o = &image.objects[object];
        let nearest = nearest_other(&image.objects, object);
        CaptionFacts {
            object,
            shape: o.shape,
            color: o.color,
            size: o.size,
            position: o.position,
            nearest,
            relation: nearest.map(|j| Relation::of(&image.objects, object, j)),
        }
    }
}

/// "A small red circle in the top left of the image, to the left of a
/// large blue square."
pub fn region_caption(image: &SynthImage, object: usize) -> String {
    let facts = CaptionFacts::of(image, object);
    let o = &image.objects[object];
    let mut caption = format!(
        "{} {} of the image",
        capitalise(&with_article(&object_phrase(o))),
        facts.position.phrase()
    );
    if let (Some(j), Some(relation)) = (facts.nearest, facts.relation) {
        caption.push_str(&format!(
            ", {} {}",
            relation.phrase(),
            with_article(&object_phrase(&image.objects[j]))
        ));
    }
    caption.push('.');
    caption
}

/// The objects from left to right (by centroid; top to bottom on a tie).
pub fn left_to_right(objects: &[SynthObject]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..objects.len()).collect();
    order.sort_by(|&a, &b| {
        let (ca, cb) = (objects[a].center, objects[b].center);
        ca[0].total_cmp(&cb[0]).then(ca[1].total_cmp(&cb[1]))
    });
    order
}

fn count_word(n: usize) -> String {
    const WORDS: [&str; 13] = [
        "No", "One", "Two", "Three", "Four", "Five", "Six", "Seven", "Eight", "Nine", "Ten",
        "Eleven", "Twelve",
    ];
    WORDS
        .get(n)
        .map_or_else(|| n.to_string(), |w| w.to_string())
}

/// "Three shapes: a red circle, a blue square and a green triangle.",
/// naming the shapes from left to right.
pub fn image_caption(image: &SynthImage) -> String {
    let names: Vec<String> = left_to_right(&image.objects)
        .into_iter()
        .map(|i| {
            let o = &image.objects[i];
            with_article(&format!("{} {}", o.color, o.shape))
        })
        .collect();
    let n = names.len();
    let noun = if n == 1 { "shape" } else { "shapes" };
    let list = match names.split_last() {
        None => return "No shapes.".to_string(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
    };
    format!("{} {noun}: {list}.", count_word(n))
}
