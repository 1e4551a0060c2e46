//! The fast tokenizer of a SentencePiece `tokenizer.model`: turns the BPE
//! model that Vicuna, the original LLaVA and Llama-2 ship into a
//! [`tokenizers::Tokenizer`]. [`crate::Tokenizer`] decodes with it (and reads
//! its vocabulary and added tokens) but encodes with the slow tokenizer
//! ([`super::SlowLlamaTokenizer`]), which these checkpoints were trained with.
//!
//! It reproduces what transformers 5.23 builds for a checkpoint directory that
//! holds `tokenizer.model` and a `tokenizer_config.json` naming `LlamaTokenizer`
//! (no `tokenizer.json`): `TokenizersBackend._convert_from_sentencepiece`,
//! `SentencePieceExtractor.extract` and `generate_merges` for the BPE vocabulary
//! and merges, then `LlamaTokenizer.__init__` and `update_post_processor` for
//! the rest, with the config that LLaMA-family checkpoints carry (`legacy`
//! false or absent, `add_bos_token` true, `add_eos_token` false):
//!
//! - normalizer: none;
//! - pre-tokenizer: `Metaspace("▁", prepend_scheme = first, split = false)`;
//! - model: BPE over every piece in id order, merges derived from the
//!   vocabulary, `byte_fallback`, `fuse_unk`, no unknown token;
//! - added tokens: control pieces and the unk/bos/eos pieces as special
//!   tokens, user-defined pieces as ordinary added tokens, none normalized;
//! - post-processor: BOS before each sequence, no EOS;
//! - decoder: `Replace("▁", " ")`, `ByteFallback`, `Fuse`, `Strip(" ", 1, 0)`.
//!
//! Like transformers, it ignores the model's `normalizer_spec` (LLaMA's is the
//! identity with a dummy prefix, which the Metaspace pre-tokenizer stands in
//! for) and the piece scores (a piece's id is its merge priority).
//!
//! Deliberate differences from transformers:
//! - Unigram (and word/char) models are refused; transformers 5 would run
//!   their vocabulary through BPE merges and tokenise nonsense.
//! - The special tokens are the pieces at `trainer_spec`'s unk/bos/eos ids
//!   rather than the literal `<unk>`/`<s>`/`</s>` of `tokenizer_config.json`;
//!   they coincide for LLaMA-family models, and a model without a BOS piece
//!   gets no BOS instead of a new, untrained `<s>` id.
//! - `legacy: true` in `tokenizer_config.json` (prepend `▁` after every
//!   special token, not only at the start of the text) is not reproduced
//!   here; the slow tokenizer does reproduce it.

use std::path::Path;

use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::models::bpe::{Merges, Vocab, BPE};
use tokenizers::normalizers::replace::Replace;
use tokenizers::pre_tokenizers::metaspace::{Metaspace, PrependScheme};
use tokenizers::processors::template::{Template, TemplateProcessing};
use tokenizers::{AddedToken, DecoderWrapper, Tokenizer};

use super::{
    check_bpe, read_model, BuildError, ModelProto, SentencePieceError, METASPACE, PIECE_CONTROL,
    PIECE_NORMAL, PIECE_USER_DEFINED,
};

/// Reads a SentencePiece BPE `tokenizer.model` and builds the tokenizer that
/// transformers' `LlamaTokenizer` (`LlamaTokenizerFast`) builds from it: same
/// ids, tokens and decoding, BOS added by the post-processor, EOS not.
pub fn tokenizer_from_sentencepiece(path: &Path) -> Result<Tokenizer, SentencePieceError> {
    let (proto, _) = read_model(path)?;
    build(&proto).map_err(|e| e.at(path))
}

fn tk_err(e: impl std::fmt::Display) -> BuildError {
    BuildError::Tokenizers(e.to_string())
}

fn build(proto: &ModelProto) -> Result<Tokenizer, BuildError> {
    let spec = check_bpe(proto)?;

    let pieces: Vec<&str> = proto
        .pieces
        .iter()
        .map(|p| p.piece.as_deref().unwrap_or(""))
        .collect();
    let piece_at =
        |what: &str, id: Option<i32>, default: i32| -> Result<Option<&str>, BuildError> {
            let id = id.unwrap_or(default);
            if id < 0 {
                return Ok(None);
            }
            usize::try_from(id)
                .ok()
                .and_then(|i| pieces.get(i).copied())
                .map(Some)
                .ok_or_else(|| {
                    BuildError::Invalid(format!(
                        "{what} {id} is outside its {}-piece vocabulary",
                        pieces.len()
                    ))
                })
        };
    let unk = piece_at("unk_id", spec.unk_id, 0)?;
    let bos = piece_at("bos_id", spec.bos_id, 1)?;
    let eos = piece_at("eos_id", spec.eos_id, 2)?;

    // Every piece, control and byte pieces included, is in the BPE vocabulary
    // at its own id; a repeated piece keeps its last id, as a Python dict would.
    let mut vocab: Vocab = Vocab::default();
    for (id, piece) in pieces.iter().enumerate() {
        let id = u32::try_from(id)
            .map_err(|_| BuildError::Invalid("it has more than 2^32 pieces".into()))?;
        vocab.insert((*piece).to_owned(), id);
    }
    let merges = merges_from_vocab(&vocab);

    // transformers' LlamaTokenizer builds its BPE without an unknown token:
    // with byte fallback every byte has a piece, and a character without one
    // in a model lacking byte pieces is dropped rather than mapped to <unk>.
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .fuse_unk(true)
        .byte_fallback(true)
        .build()
        .map_err(tk_err)?;

    let mut tokenizer = Tokenizer::new(bpe);
    tokenizer.with_pre_tokenizer(Some(Metaspace::new(METASPACE, PrependScheme::First, false)));
    tokenizer.with_decoder(Some(DecoderSequence::new(vec![
        DecoderWrapper::from(Replace::new(METASPACE.to_string(), " ").map_err(tk_err)?),
        ByteFallback::new().into(),
        Fuse::new().into(),
        Strip::new(' ', 1, 0).into(),
    ])));

    // Control and user-defined pieces are matched in the raw text before the
    // model sees it; only control pieces and unk/bos/eos are special, i.e.
    // skipped by `decode(.., skip_special_tokens = true)`.
    let mut added: Vec<AddedToken> = proto
        .pieces
        .iter()
        .zip(&pieces)
        .filter_map(|(p, piece)| match p.r#type.unwrap_or(PIECE_NORMAL) {
            PIECE_CONTROL => Some(AddedToken::from(*piece, true).normalized(false)),
            PIECE_USER_DEFINED => Some(AddedToken::from(*piece, false).normalized(false)),
            _ => None,
        })
        .collect();
    for named in [unk, bos, eos].into_iter().flatten() {
        if !added.iter().any(|t| t.content == named) {
            added.push(AddedToken::from(named, true).normalized(false));
        }
    }
    tokenizer.add_tokens(added).map_err(tk_err)?;

    if let Some(bos) = bos {
        let template = bos_template(bos, &tokenizer)?;
        tokenizer.with_post_processor(Some(template));
    }
    Ok(tokenizer)
}

/// transformers 5 `generate_merges(vocab)`: every split of a piece into two
/// pieces is a merge, ranked by the merged piece's id, then by the length of
/// the left part (in characters, as Python counts), then of the right part.
fn merges_from_vocab(vocab: &Vocab) -> Merges {
    let mut ranked: Vec<(u32, usize, usize, &str, &str)> = Vec::new();
    for (piece, &id) in vocab {
        for (left_chars, (at, _)) in piece.char_indices().enumerate().skip(1) {
            let (left, right) = piece.split_at(at);
            if vocab.contains_key(left) && vocab.contains_key(right) {
                let right_chars = right.chars().count();
                ranked.push((id, left_chars, right_chars, left, right));
            }
        }
    }
    // (id, left length) is unique per merge, so the order is total.
    ranked.sort_unstable_by_key(|&(id, l, r, _, _)| (id, l, r));
    ranked
        .into_iter()
        .map(|(_, _, _, left, right)| (left.to_owned(), right.to_owned()))
        .collect()
}

/// transformers' `update_post_processor` with `add_bos_token` and without
/// `add_eos_token`: `<s>:0 $A:0` and `<s>:0 $A:0 <s>:1 $B:1`. Built from
/// pieces rather than that string so a BOS containing ':' or ' ' still works.
fn bos_template(bos: &str, tokenizer: &Tokenizer) -> Result<TemplateProcessing, BuildError> {
    let bos_id = tokenizer.token_to_id(bos).ok_or_else(|| {
        BuildError::Invalid(format!("BOS piece {bos:?} is not in the vocabulary"))
    })?;
    let special =
        |type_id: u32| serde_json::json!({"SpecialToken": {"id": bos, "type_id": type_id}});
    let sequence =
        |id: &str, type_id: u32| serde_json::json!({"Sequence": {"id": id, "type_id": type_id}});
    let single: Template =
        serde_json::from_value(serde_json::json!([special(0), sequence("A", 0)]))
            .map_err(tk_err)?;
    let pair: Template = serde_json::from_value(serde_json::json!([
        special(0),
        sequence("A", 0),
        special(1),
        sequence("B", 1)
    ]))
    .map_err(tk_err)?;
    TemplateProcessing::builder()
        .single(single)
        .pair(pair)
        .special_tokens(vec![(bos.to_owned(), bos_id)])
        .build()
        .map_err(tk_err)
}
