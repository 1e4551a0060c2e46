//! CLIP's text tower, both projections and `CLIPModel`'s scores against
//! transformers 5.23.0 on the tiny random `CLIPModel`
//! (tests/fixtures/clip-full-tiny; references from
//! scripts/fixtures/clip_text.py, recorded in text_expected.json): padded
//! texts of several lengths, pooled at the end-of-text token, and the
//! legacy pooling at the largest id that checkpoints with
//! `eos_token_id: 2` get. Tolerance 1e-4 absolute, f32.
use std::collections::HashMap;
use std::path::PathBuf;

use rgpt_vision::clip_text::ClipModel;
use tch::{Device, Kind, Tensor};

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/clip-full-tiny")
}

fn expected() -> HashMap<String, Tensor> {
    Tensor::read_safetensors(fixture().join("text_expected.safetensors"))
        .unwrap()
        .into_iter()
        .collect()
}

fn assert_close(got: &Tensor, want: &Tensor, what: &str) {
    assert_eq!(got.size(), want.size(), "{what}: shape");
    let diff = f64::try_from((got - want).abs().max()).unwrap();
    assert!(diff < 1e-4, "{what}: differs by {diff:e}");
}

#[test]
fn text_tower_projections_and_scores_match_transformers() {
    let _guard = tch::no_grad_guard();
    let expected = expected();
    let (model, _vs) = ClipModel::from_pretrained(&fixture(), Device::Cpu, Kind::Float).unwrap();
    let ids = &expected["input_ids"];
    let mask = &expected["attention_mask"];
    let text = model.text.forward(ids, Some(mask)).unwrap();
    // Padded positions are not compared: transformers' additive mask and
    // SDPA's boolean one give them different (unused) values.
    let real = mask.unsqueeze(-1).to_kind(Kind::Float);
    assert_close(
        &(&text.last_hidden_state * &real),
        &(&expected["last_hidden_state"] * &real),
        "last_hidden_state",
    );
    assert_close(
        &text.pooler_output,
        &expected["pooler_output"],
        "pooler_output",
    );
    let scores = model
        .scores(&expected["pixel_values"], ids, Some(mask))
        .unwrap();
    assert_close(
        &scores.image_embeds,
        &expected["image_embeds"],
        "image_embeds",
    );
    assert_close(&scores.text_embeds, &expected["text_embeds"], "text_embeds");
    assert_close(
        &scores.logits_per_image,
        &expected["logits_per_image"],
        "logits_per_image",
    );
}

/// `eos_token_id: 2` (OpenAI's checkpoints): pooled at each row's largest
/// id, as transformers does for that value.
#[test]
fn legacy_end_of_text_pooling_takes_the_largest_id() {
    let _guard = tch::no_grad_guard();
    let expected = expected();
    let dir = std::env::temp_dir().join(format!("rgpt-clip-legacy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture().join("config.json")).unwrap())
            .unwrap();
    config["text_config"]["eos_token_id"] = 2.into();
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    std::fs::copy(
        fixture().join("model.safetensors"),
        dir.join("model.safetensors"),
    )
    .unwrap();
    let (model, _vs) = ClipModel::from_pretrained(&dir, Device::Cpu, Kind::Float).unwrap();
    let text = model
        .text
        .forward(&expected["input_ids"], Some(&expected["attention_mask"]))
        .unwrap();
    assert_close(
        &text.pooler_output,
        &expected["legacy.pooler_output"],
        "legacy pooler_output",
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn texts_past_the_context_and_a_vision_only_checkpoint_are_refused() {
    let (model, _vs) = ClipModel::from_pretrained(&fixture(), Device::Cpu, Kind::Float).unwrap();
    let long = Tensor::zeros([1, 9], (Kind::Int64, Device::Cpu));
    let error = model.text.forward(&long, None).unwrap_err().to_string();
    assert!(
        error.contains("9 tokens") && error.contains("truncate"),
        "{error}"
    );
    let vision_only = fixture().join("../clip-vision-tiny");
    let error = ClipModel::from_pretrained(&vision_only, Device::Cpu, Kind::Float)
        .unwrap_err()
        .to_string();
    assert!(error.contains("whole CLIPModel"), "{error}");
}

/// CLIP's tokenizer from `tokenizer.json` gives transformers 5.23.0's ids
/// (`CLIPTokenizer`, `truncation=True, max_length=77`) on punctuation,
/// capitals, repeated spaces, tabs and newlines, non-ASCII, and a text
/// past 77 tokens (tests/fixtures/clip-score-tiny, made by
/// scripts/fixtures/clip_score.py).
#[test]
fn the_clip_tokenizer_gives_transformers_ids() {
    use rgpt_vision::clip_tokenizer::ClipTokenizer;
    let dir = fixture().join("../clip-score-tiny");
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let eos = 529; // <|endoftext|>: the fixture's last id
    let tokenizer = ClipTokenizer::from_dir(&dir, 77, eos).unwrap();
    let texts = expected["texts"].as_array().unwrap();
    let ids = expected["input_ids"].as_array().unwrap();
    assert_eq!(texts.len(), ids.len());
    for (text, want) in texts.iter().zip(ids) {
        let want: Vec<i64> = serde_json::from_value(want.clone()).unwrap();
        let got = tokenizer.encode(text.as_str().unwrap()).unwrap();
        assert_eq!(got, want, "{text}");
    }
    assert_eq!(
        tokenizer.encode(texts[4].as_str().unwrap()).unwrap().len(),
        77
    );
    // A batch is padded to its longest with the end-of-text id, masked.
    let batch: Vec<String> = texts[..2]
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect();
    let (ids, mask) = tokenizer.encode_batch(&batch, Device::Cpu).unwrap();
    assert_eq!(ids.size(), [2, 9]);
    let first: Vec<i64> = Vec::try_from(ids.get(0)).unwrap();
    let first_mask: Vec<i64> = Vec::try_from(mask.get(0)).unwrap();
    assert_eq!(&first[6..], &[eos, eos, eos]);
    assert_eq!(first_mask, vec![1, 1, 1, 1, 1, 1, 0, 0, 0]);
}
