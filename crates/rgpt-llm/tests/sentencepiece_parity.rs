//! Parity of `tokenizer_from_sentencepiece` with transformers' fast
//! tokenizer. (`Tokenizer` decodes `tokenizer.model` checkpoints with it but
//! encodes them with the slow one: sentencepiece_slow_parity.rs.)
//!
//! The expected values in tests/fixtures/sentencepiece/ come from
//! scripts/fixtures/sentencepiece_tokenizer.py: it trains small SentencePiece
//! BPE models with LLaMA's trainer settings and records what transformers'
//! `LlamaTokenizer` (transformers 5.23.0, tokenizers 0.23.3, sentencepiece
//! 0.2.3; see `produced_by` in each expected*.json) does when
//! `AutoTokenizer.from_pretrained` loads a directory holding only that
//! `tokenizer.model` and a Vicuna-style `tokenizer_config.json`; the
//! reference_*tokenizer.json files are that tokenizer's backend, serialised.

use std::path::{Path, PathBuf};

use rgpt_llm::sentencepiece::{tokenizer_from_sentencepiece, SentencePieceError};
use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/sentencepiece")
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|s| s.as_str().expect("string").to_owned())
        .collect()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|i| u32::try_from(i.as_u64().expect("id")).expect("u32 id"))
        .collect()
}

/// Checks every case of `expected` against the tokenizer built from `model`;
/// returns how many cases there were.
fn check_parity(model: &str, expected: &str) -> usize {
    let dir = fixtures();
    let tokenizer = tokenizer_from_sentencepiece(&dir.join(model)).expect("load tokenizer.model");
    let expected: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join(expected)).expect("read expected json"),
    )
    .expect("parse expected json");
    let cases = expected["cases"].as_array().expect("cases");
    assert!(!cases.is_empty());

    let mut failures = Vec::new();
    for case in cases {
        let text = case["text"].as_str().expect("text");
        let with = tokenizer.encode(text, true).expect("encode");
        let without = tokenizer.encode(text, false).expect("encode");
        let want_ids = ids(&case["ids"]);
        let decoded = tokenizer.decode(&want_ids, true).expect("decode");
        let decoded_special = tokenizer.decode(&want_ids, false).expect("decode");

        let mut diffs = Vec::new();
        if with.get_ids() != want_ids.as_slice() {
            diffs.push(format!("ids {:?} != {:?}", with.get_ids(), want_ids));
        }
        let want_no_special = ids(&case["ids_no_special"]);
        if without.get_ids() != want_no_special.as_slice() {
            diffs.push(format!(
                "ids_no_special {:?} != {:?}",
                without.get_ids(),
                want_no_special
            ));
        }
        let want_tokens = strings(&case["tokens"]);
        if with.get_tokens() != want_tokens.as_slice() {
            diffs.push(format!(
                "tokens {:?} != {:?}",
                with.get_tokens(),
                want_tokens
            ));
        }
        if decoded != case["decoded"].as_str().expect("decoded") {
            diffs.push(format!("decoded {decoded:?} != {:?}", case["decoded"]));
        }
        if decoded_special
            != case["decoded_with_special"]
                .as_str()
                .expect("decoded_with_special")
        {
            diffs.push(format!(
                "decoded_with_special {decoded_special:?} != {:?}",
                case["decoded_with_special"]
            ));
        }
        if !diffs.is_empty() {
            failures.push(format!("{text:?}:\n    {}", diffs.join("\n    ")));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ from transformers:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    cases.len()
}

#[test]
fn llama_like_bpe_matches_transformers() {
    let n = check_parity("tokenizer.model", "expected.json");
    assert!(n >= 50, "only {n} cases");
}

#[test]
fn user_defined_and_control_symbols_match_transformers() {
    check_parity("user_symbols.model", "expected_user_symbols.json");
}

/// Compares the whole pipeline with transformers' serialised backend
/// tokenizer, which pins down what the cases may not reach, such as the order
/// of merges that produce the same piece.
fn check_pipeline(model: &str, reference: &str) {
    let dir = fixtures();
    let tokenizer = tokenizer_from_sentencepiece(&dir.join(model)).expect("load tokenizer.model");
    let ours: Value =
        serde_json::from_str(&tokenizer.to_string(false).expect("serialise")).unwrap();
    let theirs: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join(reference)).expect("read reference"),
    )
    .expect("parse reference");
    for key in [
        "normalizer",
        "pre_tokenizer",
        "post_processor",
        "decoder",
        "model",
    ] {
        assert_eq!(ours[key], theirs[key], "{key} differs from transformers");
    }
    let sorted = |v: &Value| {
        let mut tokens: Vec<String> = v.as_array().unwrap().iter().map(Value::to_string).collect();
        tokens.sort();
        tokens
    };
    assert_eq!(
        sorted(&ours["added_tokens"]),
        sorted(&theirs["added_tokens"])
    );
}

#[test]
fn llama_like_pipeline_matches_transformers() {
    check_pipeline("tokenizer.model", "reference_tokenizer.json");
}

#[test]
fn user_symbols_pipeline_matches_transformers() {
    check_pipeline(
        "user_symbols.model",
        "reference_user_symbols_tokenizer.json",
    );
}

#[test]
fn bos_is_added_and_eos_is_not() {
    let tokenizer = tokenizer_from_sentencepiece(&fixtures().join("tokenizer.model")).unwrap();
    let bos = tokenizer.token_to_id("<s>").unwrap();
    let eos = tokenizer.token_to_id("</s>").unwrap();
    assert_eq!((tokenizer.token_to_id("<unk>"), bos, eos), (Some(0), 1, 2));
    let ids = tokenizer
        .encode("Hello world", true)
        .unwrap()
        .get_ids()
        .to_vec();
    assert_eq!(ids.first(), Some(&bos));
    assert_ne!(ids.last(), Some(&eos));
}

#[test]
fn corrupt_models_are_errors_not_panics() {
    let model = std::fs::read(fixtures().join("tokenizer.model")).unwrap();
    let json = std::fs::read(fixtures().join("expected.json")).unwrap();
    let mut cut_inside_a_piece = model.clone();
    cut_inside_a_piece.truncate(model.len() / 2);
    let mut bad_tail = model.clone();
    bad_tail.extend_from_slice(&[0xff; 7]);
    let inputs: Vec<(&str, Vec<u8>)> = vec![
        ("truncated.model", cut_inside_a_piece),
        ("truncated_3.model", model[..3].to_vec()),
        ("bad_tail.model", bad_tail),
        ("empty.model", Vec::new()),
        ("json.model", json),
        ("zeros.model", vec![0; 64]),
    ];
    let scratch =
        std::env::temp_dir().join(format!("rgpt-sentencepiece-test-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).unwrap();
    for (name, bytes) in inputs {
        let path = scratch.join(name);
        std::fs::write(&path, bytes).unwrap();
        let err = tokenizer_from_sentencepiece(&path).expect_err(name);
        let message = err.to_string();
        assert!(
            matches!(
                err,
                SentencePieceError::Decode { .. } | SentencePieceError::Invalid { .. }
            ),
            "{name}: {message}"
        );
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert!(!message.contains('\n'), "{message}");
    }

    let _ = std::fs::remove_dir_all(&scratch);

    let missing = fixtures().join("no-such-tokenizer.model");
    let err = tokenizer_from_sentencepiece(&missing).unwrap_err();
    assert!(matches!(err, SentencePieceError::Io { .. }), "{err}");
}

#[test]
fn unigram_models_are_refused() {
    let err = tokenizer_from_sentencepiece(&fixtures().join("unigram.model")).unwrap_err();
    let message = err.to_string();
    assert!(
        matches!(err, SentencePieceError::UnsupportedModelType { ref model_type, .. } if model_type == "Unigram"),
        "{message}"
    );
    assert!(
        message.contains("Unigram") && message.contains("BPE"),
        "{message}"
    );
}
