//! `rgpt clip-score` against transformers' `CLIPModel` on the tiny CLIP
//! with a real CLIP tokenizer (tests/fixtures/clip-score-tiny, made by
//! scripts/fixtures/clip_score.py with transformers 5.23.0): the image's
//! and the texts' normalised embeddings and `logits_per_image` within 1e-4,
//! for texts with punctuation, capitals, repeated spaces, non-ASCII and one
//! past the 77-token context. `--region` scores a crop: the whole image's
//! box is the whole image.
mod common;

use common::{fails, ok, rgpt};
use serde_json::Value;

const DIR: &str = "tests/fixtures/clip-score-tiny";

fn clip_score(extra: &[&str], texts: &[&str]) -> Value {
    let image = format!("{DIR}/image.png");
    let mut args = vec![
        "clip-score",
        "--model",
        DIR,
        "--image",
        image.as_str(),
        "--device",
        "cpu",
        "--json",
    ];
    args.extend(extra);
    for text in texts {
        args.extend(["--text", text]);
    }
    serde_json::from_str(ok(&rgpt(&args)).trim()).unwrap()
}

fn close(got: &Value, want: &Value, what: &str) {
    let (got, want) = (got.as_array().unwrap(), want.as_array().unwrap());
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (g, w) in got.iter().zip(want) {
        if g.is_array() {
            close(g, w, what);
        } else {
            let (g, w) = (g.as_f64().unwrap(), w.as_f64().unwrap());
            assert!((g - w).abs() < 1e-4, "{what}: {g} against {w}");
        }
    }
}

#[test]
fn clip_score_matches_transformers() {
    let expected: Value = serde_json::from_str(
        &std::fs::read_to_string(common::root().join(DIR).join("expected.json")).unwrap(),
    )
    .unwrap();
    let texts: Vec<&str> = expected["texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    let report = clip_score(&[], &texts);
    close(
        &report["image_embeds"],
        &expected["image_embeds"],
        "image_embeds",
    );
    close(
        &report["text_embeds"],
        &expected["text_embeds"],
        "text_embeds",
    );
    close(
        &report["logits_per_image"],
        &expected["logits_per_image"],
        "logits_per_image",
    );

    // The whole image's box, without margin, is the whole image; a smaller
    // box is another image.
    let whole = clip_score(&["--region", "box:0,0,40,30"], &texts[..1]);
    close(
        &whole["image_embeds"],
        &expected["image_embeds"],
        "whole-image region",
    );
    let part = clip_score(
        &["--region", "box:5,5,25,20", "--margin", "0.2"],
        &texts[..1],
    );
    let same = part["image_embeds"]
        .as_array()
        .unwrap()
        .iter()
        .zip(expected["image_embeds"].as_array().unwrap())
        .all(|(a, b)| (a.as_f64().unwrap() - b.as_f64().unwrap()).abs() < 1e-4);
    assert!(!same, "a crop scored as the whole image");
}

#[test]
fn bad_clip_score_requests_say_what_to_fix() {
    let image = format!("{DIR}/image.png");
    fails(
        &[
            "clip-score",
            "--model",
            "tests/fixtures/clip-vision-tiny",
            "--image",
            &image,
            "--text",
            "a",
            "--device",
            "cpu",
        ],
        "whole CLIPModel",
    );
    fails(
        &[
            "clip-score",
            "--model",
            DIR,
            "--image",
            &image,
            "--region",
            "box:5,5,25,20",
            "--margin=-1",
            "--text",
            "a",
            "--device",
            "cpu",
        ],
        "margin",
    );
    fails(
        &[
            "clip-score",
            "--model",
            DIR,
            "--image",
            &image,
            "--device",
            "cpu",
        ],
        "--text",
    );
}
