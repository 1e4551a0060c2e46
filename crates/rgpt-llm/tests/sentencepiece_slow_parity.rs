//! A `tokenizer.model` checkpoint tokenizes as the `sentencepiece` library
//! and transformers 4.37.2's slow `LlamaTokenizer` do.
//!
//! tests/fixtures/sentencepiece/expected_slow*.json come from
//! scripts/fixtures/sentencepiece_slow.py (transformers 4.37.2, tokenizers
//! 0.15.2, sentencepiece 0.2.3; `produced_by` in each file): for every text,
//! `SentencePieceProcessor.encode` on the model as it is, and the slow
//! tokenizer's ids with `legacy` false and true, each plain and after
//! `add_tokens(["<image>", "<region>"], special_tokens=True)`. The models
//! are those scripts/fixtures/sentencepiece_tokenizer.py trained, and
//! `nfkc.model` (expected_nfkc.json, the library alone), which
//! sentencepiece_slow.py trains with the library's default normaliser.

use std::path::{Path, PathBuf};

use rgpt_llm::sentencepiece::SentencePieceBpe;
use rgpt_llm::Tokenizer;
use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/sentencepiece")
}

fn expected(name: &str) -> Value {
    let text = std::fs::read_to_string(fixtures().join(name)).expect("read expected json");
    serde_json::from_str(&text).expect("parse expected json")
}

fn ids(v: &Value) -> Vec<i64> {
    v.as_array()
        .expect("ids")
        .iter()
        .map(|i| i.as_i64().expect("id"))
        .collect()
}

/// A checkpoint directory holding `model` as `tokenizer.model` and the
/// fixture's Vicuna-style `tokenizer_config.json` with `legacy` set.
fn checkpoint(model: &str, legacy: Option<bool>, name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rgpt-spm-slow-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(fixtures().join(model), dir.join("tokenizer.model")).unwrap();
    let mut config: Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("tokenizer_config.json")).unwrap(),
    )
    .unwrap();
    match legacy {
        Some(legacy) => config["legacy"] = Value::Bool(legacy),
        None => {
            config.as_object_mut().unwrap().remove("legacy");
        }
    }
    std::fs::write(dir.join("tokenizer_config.json"), config.to_string()).unwrap();
    dir
}

fn tokenizer(model: &str, legacy: bool, placeholders: bool) -> Tokenizer {
    let name = format!("{model}-{legacy}-{placeholders}");
    let dir = checkpoint(model, Some(legacy), &name);
    let mut tokenizer = Tokenizer::from_dir(&dir).expect("load tokenizer.model");
    if placeholders {
        tokenizer
            .add_special_tokens(&["<image>", "<region>"])
            .unwrap();
    }
    let _ = std::fs::remove_dir_all(&dir);
    tokenizer
}

/// Every case of `expected` under `key` (e.g. `slow_legacy_false`) against
/// `tokenizer`: ids with and without BOS, offsets that cover each byte
/// of the text once; the decoding of the ids up to leading spaces.
fn check_slow(tokenizer: &Tokenizer, expected: &Value, key: &str) -> usize {
    let cases = expected["cases"].as_array().expect("cases");
    let mut failures = Vec::new();
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let want = &case[key];
        let ours = tokenizer.encode(text, true).unwrap();
        let ours_plain = tokenizer.encode(text, false).unwrap();
        if ours != ids(&want["ids"]) {
            failures.push(format!(
                "{text:?}: ids {ours:?} != {:?} ({})",
                ids(&want["ids"]),
                want["tokens"]
            ));
        }
        if ours_plain != ids(&want["ids_no_special"]) {
            failures.push(format!(
                "{text:?}: ids without BOS {ours_plain:?} != {:?}",
                ids(&want["ids_no_special"])
            ));
        }
        // Decoding goes through the fast pipeline, which strips one leading
        // space where the slow tokenizer strips up to two; LLaVA strips its
        // outputs anyway (`batch_decode(..)[0].strip()`, llava/eval/
        // model_vqa.py at c121f04), so the rest must agree.
        let decoded = tokenizer.decode(&ids(&want["ids"]), true).unwrap();
        let want_decoded = want["decoded"].as_str().unwrap();
        if decoded.trim_start_matches(' ') != want_decoded.trim_start_matches(' ') {
            failures.push(format!(
                "{text:?}: decoded {decoded:?} != {:?}",
                want["decoded"]
            ));
        }
        let (with_offsets, offsets) = tokenizer.encode_with_offsets(text, true).unwrap();
        assert_eq!(with_offsets, ours, "{text:?}");
        let mut covered = vec![0; text.len()];
        for range in &offsets {
            assert!(
                range.start <= range.end && range.end <= text.len(),
                "{text:?}: {range:?}"
            );
            for byte in range.clone() {
                covered[byte] += 1;
            }
        }
        assert!(
            covered.iter().all(|&n| n == 1),
            "{text:?}: offsets {offsets:?} do not cover each byte once"
        );
    }
    assert!(
        failures.is_empty(),
        "{key}: {} of {} cases differ from transformers 4.37.2's slow LlamaTokenizer:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    cases.len()
}

#[test]
fn bpe_matches_the_sentencepiece_library() {
    for (model, expected_file) in [
        ("tokenizer.model", "expected_slow.json"),
        ("user_symbols.model", "expected_slow_user_symbols.json"),
        // `nmt_nfkc`: a precompiled character map and
        // `remove_extra_whitespaces`, which LLaMA's models do not use.
        ("nfkc.model", "expected_nfkc.json"),
    ] {
        let bpe = SentencePieceBpe::from_file(&fixtures().join(model)).unwrap();
        let expected = expected(expected_file);
        for case in expected["cases"].as_array().unwrap() {
            let text = case["text"].as_str().unwrap();
            let ours: Vec<i64> = bpe.encode(text).iter().map(|p| i64::from(p.id)).collect();
            assert_eq!(
                ours,
                ids(&case["sentencepiece"]["ids"]),
                "{model}: {text:?} ({})",
                case["sentencepiece"]["pieces"]
            );
        }
    }
}

/// Vicuna's and LLaVA-1.5's configuration (`legacy` false): where the text
/// holds no special token, the ids are BOS and the library's own ids, e.g.
/// a `▁` for each leading space plus the dummy prefix.
#[test]
fn vicuna_config_is_the_library_plus_bos() {
    let tokenizer = tokenizer("tokenizer.model", false, false);
    let expected = expected("expected_slow.json");
    let mut compared = 0;
    for case in expected["cases"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        if ["<s>", "</s>", "<unk>"].iter().any(|t| text.contains(t)) {
            continue;
        }
        let mut want = vec![1];
        want.extend(ids(&case["sentencepiece"]["ids"]));
        assert_eq!(tokenizer.encode(text, true).unwrap(), want, "{text:?}");
        compared += 1;
    }
    assert!(compared >= 60, "only {compared} cases");
    // The example: three `▁` (the dummy prefix and two spaces)
    // before the word, where the fast tokenizer puts two.
    let text = "  leading spaces and\ttab";
    let pieces = |ids: &[u32]| -> String {
        ids.iter()
            .map(|&id| tokenizer.inner().id_to_token(id).unwrap())
            .collect()
    };
    let ids: Vec<u32> = tokenizer
        .encode(text, false)
        .unwrap()
        .iter()
        .map(|&id| id as u32)
        .collect();
    assert!(pieces(&ids).starts_with("▁▁▁l"), "{}", pieces(&ids));
    let fast =
        rgpt_llm::sentencepiece::tokenizer_from_sentencepiece(&fixtures().join("tokenizer.model"))
            .unwrap();
    let fast_ids = fast.encode(text, false).unwrap().get_ids().to_vec();
    assert!(
        pieces(&fast_ids).starts_with("▁▁l"),
        "{}",
        pieces(&fast_ids)
    );
}

#[test]
fn slow_tokenizer_matches_transformers_4_37_2() {
    let expected = expected("expected_slow.json");
    for legacy in [false, true] {
        for placeholders in [false, true] {
            let key = format!(
                "slow_legacy_{legacy}{}",
                if placeholders { "_placeholders" } else { "" }
            );
            let tokenizer = tokenizer("tokenizer.model", legacy, placeholders);
            let n = check_slow(&tokenizer, &expected, &key);
            assert!(n >= 80, "only {n} cases");
            let added = &expected["tokenizers"][&key]["added_tokens"];
            for (content, id) in added.as_object().unwrap() {
                assert_eq!(
                    tokenizer.token_to_id(content),
                    id.as_i64(),
                    "{key}: {content}"
                );
            }
        }
    }
}

#[test]
fn slow_tokenizer_with_user_defined_symbols_matches_transformers_4_37_2() {
    let expected = expected("expected_slow_user_symbols.json");
    for legacy in [false, true] {
        for placeholders in [false, true] {
            let key = format!(
                "slow_legacy_{legacy}{}",
                if placeholders { "_placeholders" } else { "" }
            );
            let tokenizer = tokenizer("user_symbols.model", legacy, placeholders);
            check_slow(&tokenizer, &expected, &key);
        }
    }
}

/// transformers 4.37.2 reads a config without `legacy` as legacy.
#[test]
fn a_config_without_legacy_is_legacy() {
    let dir = checkpoint("tokenizer.model", None, "no-legacy");
    let tokenizer = Tokenizer::from_dir(&dir).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(tokenizer.slow().map(|s| s.legacy()), Some(true));
    let expected = expected("expected_slow.json");
    check_slow(&tokenizer, &expected, "slow_legacy_true");
}

/// A checkpoint saved from a slow tokenizer with placeholders added reads
/// back as the same tokenizer (not as a fast `tokenizer.json`).
#[test]
fn save_pretrained_round_trips_the_slow_tokenizer() {
    let original = tokenizer("tokenizer.model", false, true);
    let dir = std::env::temp_dir().join(format!("rgpt-spm-slow-saved-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("tokenizer.json"), "{}").unwrap();
    std::fs::copy(
        fixtures().join("tokenizer_config.json"),
        dir.join("tokenizer_config.json"),
    )
    .unwrap();
    original.save_pretrained(&dir).unwrap();
    assert!(
        !dir.join("tokenizer.json").exists(),
        "a stale tokenizer.json would win"
    );
    let reloaded = Tokenizer::from_dir(&dir).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(reloaded.slow().is_some());
    let expected = expected("expected_slow.json");
    check_slow(&reloaded, &expected, "slow_legacy_false_placeholders");
    assert_eq!(reloaded.token_to_id("<region>"), Some(801));
    assert_eq!(
        reloaded.decode(&[1, 801, 274, 428], false).unwrap(),
        original.decode(&[1, 801, 274, 428], false).unwrap()
    );
}
