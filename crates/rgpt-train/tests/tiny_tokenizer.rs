//! The tokenizer a tiny model trains on its conversations: `words` gives one
//! id per word of them, with `<region>` swallowing the space before it, and
//! refuses `split_punctuation`, which only the BPE reads.
mod common;

use rgpt_train::scratch::{train_tokenizer, TinySpec, TokenizerKind};

const SAMPLE: &str = r#"{"id":"rec/0","image":"images/0.png","width":64,"height":64,"regions":[{"box":[1.0,1.0,9.0,9.0]},{"box":[20.0,20.0,30.0,30.0]}],"conversations":[{"from":"human","value":"<image>\nFrom the provided masks denoted by <region> and <region>, which one fits \"the red circle\"?"},{"from":"gpt","value":"Region [2]."}]}"#;

fn conversations() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("rgpt-tiny-tokenizer-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("rec.jsonl");
    std::fs::write(&path, format!("{SAMPLE}\n")).unwrap();
    path
}

#[test]
fn a_words_tokenizer_is_the_conversations_words() {
    let path = conversations();
    let spec = TinySpec {
        tokenizer: TokenizerKind::Words,
        ..common::small_tiny_spec()
    };
    let words = train_tokenizer(&spec, &[&path]).unwrap();
    let bpe = train_tokenizer(&common::small_tiny_spec(), &[&path]).unwrap();
    assert!(
        words.vocab_size() < bpe.vocab_size(),
        "{} words against {} BPE ids",
        words.vocab_size(),
        bpe.vocab_size()
    );
    let text = "USER: <image>\nFrom the provided masks denoted by <region> and <region>, which one fits \"the red circle\"? ASSISTANT:";
    let ids = words.encode(text, true).unwrap();
    let tokens: Vec<String> = ids
        .iter()
        .map(|&id| words.inner().id_to_token(id as u32).unwrap())
        .collect();
    assert!(
        !tokens.iter().any(|t| t == "\u{2581}" || t == "<unk>"),
        "{tokens:?}"
    );
    let region = words.token_to_id("<region>").unwrap();
    let by = tokens.iter().position(|t| t == "\u{2581}by").unwrap();
    assert_eq!(ids[by + 1], region, "{tokens:?}");
    // The BPE keeps the space before a placeholder as a token of its own.
    let bpe_tokens: Vec<String> = bpe
        .encode(text, true)
        .unwrap()
        .iter()
        .map(|&id| bpe.inner().id_to_token(id as u32).unwrap())
        .collect();
    assert!(bpe_tokens.iter().any(|t| t == "\u{2581}"), "{bpe_tokens:?}");

    let both = TinySpec {
        split_punctuation: true,
        ..spec
    };
    let err = train_tokenizer(&both, &[&path]).unwrap_err().to_string();
    assert!(err.contains("model.split_punctuation"), "{err}");
}
