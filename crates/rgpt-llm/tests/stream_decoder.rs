//! Streaming decode: the deltas of `StreamDecoder`, concatenated, are exactly
//! the full decode, on texts that exercise SentencePiece's leading-space
//! stripping and multi-token byte-fallback characters (CJK, emoji).
mod common;

use rgpt_llm::{StreamDecoder, Tokenizer};

#[test]
fn deltas_concatenate_to_the_full_decode() {
    let tokenizer = Tokenizer::from_dir(&common::fixture("llama-sharded-bin")).unwrap();
    let texts = [
        "The quick brown fox jumps over the lazy dog.",
        "  leading spaces and  double  spaces ",
        "emoji 🙂 and a family 👨‍👩‍👧 in text",
        "中文字符 and Кириллица mixed in",
        "numbers 12345 and tabs\tand\nnewlines",
    ];
    for text in texts {
        let ids = tokenizer.encode(text, false).unwrap();
        let mut stream = StreamDecoder::new();
        let mut streamed = String::new();
        let mut pieces = 0;
        for &id in &ids {
            if let Some(delta) = stream.push(&tokenizer, id).unwrap() {
                assert!(
                    !delta.contains('\u{FFFD}'),
                    "incomplete character leaked in {text:?}"
                );
                streamed.push_str(&delta);
                pieces += 1;
            }
        }
        if let Some(rest) = stream.finish(&tokenizer).unwrap() {
            streamed.push_str(&rest);
        }
        assert_eq!(streamed, tokenizer.decode(&ids, true).unwrap(), "{text:?}");
        assert!(pieces > 1, "{text:?} should stream in several pieces");
    }
}
