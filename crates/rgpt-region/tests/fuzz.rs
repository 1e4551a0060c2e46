//! Fuzz-style robustness of what users type and files hold: the region
//! SPEC grammar (`box:`, `poly:`, `point:`, `rle:`, `mask:`) and the RLE
//! parsers (COCO's compressed counts string, the uncompressed list and the
//! JSON forms) get every truncation of valid inputs and thousands of
//! seeded random edits and random strings. Nothing may panic; every
//! failure is an error with a message, and whatever parses rasterises or
//! decodes without a panic too.
use std::panic::{catch_unwind, AssertUnwindSafe};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rgpt_region::rle::Rle;
use rgpt_region::spec::RegionSpec;

const HEIGHT: u32 = 30;
const WIDTH: u32 = 40;

/// COCO's compressed counts string of runs 100, 50, 1050 on 30x40.
fn compressed() -> String {
    Rle::from_uncompressed(HEIGHT, WIDTH, vec![100, 50, 1050])
        .unwrap()
        .to_coco_string()
}

fn specs() -> Vec<String> {
    let mut specs: Vec<String> = [
        "box:2,3,20,25",
        "box:0.5,1.25,39.9,29.9",
        "poly:1,1,30,2,15,28",
        "poly:1,1,10,1,10,10;20,20,35,20,35,28",
        "point:10,12",
        "point:10,12,4",
        r#"rle:{"size":[30,40],"counts":[100,50,1050]}"#,
        "mask:no/such/mask.png",
    ]
    .map(String::from)
    .to_vec();
    specs.push(format!(
        r#"rle:{{"size":[30,40],"counts":"{}"}}"#,
        compressed()
    ));
    specs
}

fn rle_json() -> Vec<String> {
    vec![
        r#"{"size":[30,40],"counts":[100,50,1050]}"#.to_string(),
        format!(r#"{{"size": [30, 40], "counts": "{}"}}"#, compressed()),
        r#"{"size":[4,4],"counts":[0,16]}"#.to_string(),
    ]
}

/// Runs `f` on `input`, failing the test if it panics.
fn no_panic(what: &str, input: &str, f: impl FnOnce()) {
    if catch_unwind(AssertUnwindSafe(f)).is_err() {
        panic!("{what} panicked on {input:?}");
    }
}

/// Every prefix of `text`, cut at each character boundary.
fn truncations(text: &str) -> impl Iterator<Item = &str> {
    text.char_indices()
        .map(move |(i, _)| &text[..i])
        .chain(std::iter::once(text))
}

/// `text` with 1-4 random characters replaced, inserted or deleted, drawn
/// from the grammar's own alphabet and a few strangers.
fn mutate(text: &str, rng: &mut ChaCha8Rng) -> String {
    const ALPHABET: &[char] = &[
        '0', '1', '5', '9', '-', '.', ',', ';', ':', 'e', 'E', '[', ']', '{', '}', '"', ' ', 'x',
        'n', 'a', 'N', 'I', '\u{0}', 'é', '\u{FFFD}', '+', '/', '\\',
    ];
    let mut chars: Vec<char> = text.chars().collect();
    for _ in 0..rng.random_range(1..=4) {
        let at = rng.random_range(0..=chars.len());
        let c = ALPHABET[rng.random_range(0..ALPHABET.len())];
        match rng.random_range(0..3) {
            0 if at < chars.len() => chars[at] = c,
            1 if at < chars.len() => {
                chars.remove(at);
            }
            _ => chars.insert(at, c),
        }
    }
    chars.into_iter().collect()
}

fn check_spec(input: &str) {
    no_panic("RegionSpec", input, || match RegionSpec::parse(input) {
        Ok(spec) => {
            // Rasterising may refuse (outside the image, empty, wrong size)
            // but may not panic.
            if let Err(e) = spec.to_rle(HEIGHT, WIDTH) {
                assert!(!e.to_string().is_empty());
            }
            let _ = spec.area(HEIGHT, WIDTH);
            let _ = spec.bbox(HEIGHT, WIDTH);
        }
        Err(e) => assert!(!e.to_string().is_empty(), "empty error for {input:?}"),
    });
}

fn check_rle(rle: &Rle) {
    if let Ok(mask) = rle.decode_col_major() {
        assert_eq!(
            mask.len() as u64,
            u64::from(rle.height) * u64::from(rle.width)
        );
    }
    let text = rle.to_coco_string();
    let again = Rle::from_coco_string(&text, rle.height, rle.width)
        .expect("an RLE's own counts string reads back");
    assert_eq!(again.counts, rle.counts);
}

#[test]
fn region_specs_never_panic() {
    let specs = specs();
    let mut tried = 0;
    for spec in &specs {
        assert!(
            spec.starts_with("mask:") || RegionSpec::parse(spec).is_ok(),
            "{spec} is meant to be valid"
        );
        for cut in truncations(spec) {
            check_spec(cut);
            tried += 1;
        }
    }
    let mut rng = ChaCha8Rng::seed_from_u64(25);
    for _ in 0..4000 {
        let spec = &specs[rng.random_range(0..specs.len())];
        check_spec(&mutate(spec, &mut rng));
        tried += 1;
    }
    assert!(tried > 4000);
}

#[test]
fn rle_parsers_never_panic() {
    let mut rng = ChaCha8Rng::seed_from_u64(26);
    // The compressed counts string: truncations of real ones, and random
    // strings of COCO's alphabet (bytes 48-111) and beyond it.
    let valid = compressed();
    for cut in truncations(&valid) {
        no_panic("from_coco_string", cut, || {
            if let Ok(rle) = Rle::from_coco_string(cut, HEIGHT, WIDTH) {
                check_rle(&rle);
            }
        });
    }
    for _ in 0..4000 {
        let len = rng.random_range(0..24);
        let beyond = rng.random_bool(0.1);
        let text: String = (0..len)
            .map(|_| {
                if beyond {
                    char::from(rng.random_range(32u8..127))
                } else {
                    char::from(rng.random_range(48u8..112))
                }
            })
            .collect();
        let (h, w) = (rng.random_range(0..12), rng.random_range(0..12));
        no_panic("from_coco_string", &text, || {
            match Rle::from_coco_string(&text, h, w) {
                Ok(rle) => check_rle(&rle),
                Err(e) => assert!(!e.to_string().is_empty()),
            }
        });
    }
    // The uncompressed list, with runs that do and do not cover the image.
    for _ in 0..4000 {
        let counts: Vec<u32> = (0..rng.random_range(0..8))
            .map(|_| {
                if rng.random_bool(0.05) {
                    u32::MAX - rng.random_range(0..3)
                } else {
                    rng.random_range(0..20)
                }
            })
            .collect();
        let (h, w) = (rng.random_range(0..6), rng.random_range(0..6));
        let shown = format!("{h}x{w} {counts:?}");
        no_panic(
            "from_uncompressed",
            &shown,
            || match Rle::from_uncompressed(h, w, counts) {
                Ok(rle) => check_rle(&rle),
                Err(e) => assert!(!e.to_string().is_empty()),
            },
        );
    }
    // The JSON forms.
    let jsons = rle_json();
    for json in &jsons {
        assert!(
            Rle::from_json_str(json).is_ok(),
            "{json} is meant to be valid"
        );
        for cut in truncations(json) {
            no_panic("from_json_str", cut, || {
                if let Ok(rle) = Rle::from_json_str(cut) {
                    check_rle(&rle);
                }
            });
        }
    }
    for _ in 0..4000 {
        let json = mutate(&jsons[rng.random_range(0..jsons.len())], &mut rng);
        no_panic("from_json_str", &json, || match Rle::from_json_str(&json) {
            Ok(rle) => check_rle(&rle),
            Err(e) => assert!(!e.to_string().is_empty()),
        });
    }
}
