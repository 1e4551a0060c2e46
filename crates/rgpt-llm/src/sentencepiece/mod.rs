//! SentencePiece `tokenizer.model` support, for the checkpoints (Vicuna, the
//! original LLaVA, Llama-2) that ship no `tokenizer.json`. Two things are
//! built from one model file:
//!
//! - [`SlowLlamaTokenizer`] ([`slow`], over [`bpe`]): how those checkpoints
//!   were trained and are prompted. [`bpe`] is the `sentencepiece` library's
//!   own normaliser and BPE (`normalizer.cc`, `bpe_model.cc`); [`slow`] is
//!   transformers 4.37.2's slow `LlamaTokenizer` around it (LLaVA pins that
//!   version and loads it with `use_fast=False`). [`crate::Tokenizer`]
//!   encodes a `tokenizer.model` checkpoint with it.
//! - [`tokenizer_from_sentencepiece`] ([`convert`]): the `tokenizers`
//!   pipeline transformers' fast `LlamaTokenizer` builds from the file. It
//!   encodes differently from the slow one (e.g. `"  a"`: the fast one adds
//!   no `▁` before leading spaces, the slow one always does), so
//!   [`crate::Tokenizer`] only decodes with it, and it stays available by
//!   name for parity with the fast tokenizer.

mod bpe;
mod convert;
mod slow;

use std::path::{Path, PathBuf};

use prost::Message;

pub use bpe::{Piece, SentencePieceBpe};
pub use convert::tokenizer_from_sentencepiece;
pub use slow::{AddedToken, SlowLlamaTokenizer, SlowTokenizerConfig};

/// Errors from reading a SentencePiece model.
#[derive(Debug, thiserror::Error)]
pub enum SentencePieceError {
    #[error("cannot read SentencePiece model {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "invalid SentencePiece model {path}: {source} \
         (the file may be truncated or not a tokenizer.model; download it again)"
    )]
    Decode {
        path: PathBuf,
        #[source]
        source: prost::DecodeError,
    },
    #[error("invalid SentencePiece model {path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error(
        "unsupported SentencePiece model {path}: it is a {model_type} model, but only BPE \
         models like LLaMA's tokenizer.model are supported (use the checkpoint's tokenizer.json instead)"
    )]
    UnsupportedModelType { path: PathBuf, model_type: String },
    #[error(
        "invalid SentencePiece model {path}: the character map of its normalizer `{name}` \
         cannot be read (the file may be damaged; download it again)"
    )]
    BadNormalizer { path: PathBuf, name: String },
    #[error("cannot build a tokenizer from SentencePiece model {path}: {message}")]
    Build { path: PathBuf, message: String },
    #[error("invalid tokenizer settings in {path}: {message}")]
    Config { path: PathBuf, message: String },
}

/// The subset of sentencepiece_model.proto (proto2) this crate reads; prost
/// skips the other fields. Field numbers are the proto's.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct ModelProto {
    #[prost(message, repeated, tag = "1")]
    pub pieces: Vec<SentencePiece>,
    #[prost(message, optional, tag = "2")]
    pub trainer_spec: Option<TrainerSpec>,
    #[prost(message, optional, tag = "3")]
    pub normalizer_spec: Option<NormalizerSpec>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct SentencePiece {
    #[prost(string, optional, tag = "1")]
    pub piece: Option<String>,
    #[prost(float, optional, tag = "2")]
    pub score: Option<f32>,
    // An enum on the wire; kept as its number so unknown kinds still decode.
    #[prost(int32, optional, tag = "3")]
    pub r#type: Option<i32>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct TrainerSpec {
    #[prost(int32, optional, tag = "3")]
    pub model_type: Option<i32>,
    #[prost(bool, optional, tag = "24")]
    pub treat_whitespace_as_suffix: Option<bool>,
    #[prost(bool, optional, tag = "35")]
    pub byte_fallback: Option<bool>,
    #[prost(int32, optional, tag = "40")]
    pub unk_id: Option<i32>,
    #[prost(int32, optional, tag = "41")]
    pub bos_id: Option<i32>,
    #[prost(int32, optional, tag = "42")]
    pub eos_id: Option<i32>,
}

/// proto2 defaults: an absent `add_dummy_prefix`, `remove_extra_whitespaces`
/// or `escape_whitespaces` is true.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct NormalizerSpec {
    #[prost(string, optional, tag = "1")]
    pub name: Option<String>,
    #[prost(bytes = "vec", optional, tag = "2")]
    pub precompiled_charsmap: Option<Vec<u8>>,
    #[prost(bool, optional, tag = "3")]
    pub add_dummy_prefix: Option<bool>,
    #[prost(bool, optional, tag = "4")]
    pub remove_extra_whitespaces: Option<bool>,
    #[prost(bool, optional, tag = "5")]
    pub escape_whitespaces: Option<bool>,
}

// SentencePiece.Type values.
pub(crate) const PIECE_NORMAL: i32 = 1;
pub(crate) const PIECE_UNKNOWN: i32 = 2;
pub(crate) const PIECE_CONTROL: i32 = 3;
pub(crate) const PIECE_USER_DEFINED: i32 = 4;
pub(crate) const PIECE_UNUSED: i32 = 5;
pub(crate) const PIECE_BYTE: i32 = 6;

// TrainerSpec.ModelType values; proto2 defaults an absent model_type to UNIGRAM.
pub(crate) const MODEL_UNIGRAM: i32 = 1;
pub(crate) const MODEL_BPE: i32 = 2;
pub(crate) const MODEL_WORD: i32 = 3;
pub(crate) const MODEL_CHAR: i32 = 4;

/// SentencePiece's whitespace mark, U+2581.
pub(crate) const METASPACE: char = '▁';

/// Reads and decodes a `tokenizer.model`; returns its bytes too.
pub(crate) fn read_model(path: &Path) -> Result<(ModelProto, Vec<u8>), SentencePieceError> {
    let bytes = std::fs::read(path).map_err(|source| SentencePieceError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let proto =
        ModelProto::decode(bytes.as_slice()).map_err(|source| SentencePieceError::Decode {
            path: path.to_path_buf(),
            source,
        })?;
    Ok((proto, bytes))
}

/// An error before the path is attached.
pub(crate) enum BuildError {
    Invalid(String),
    Unsupported(String),
    Normalizer(String),
    Tokenizers(String),
}

impl BuildError {
    pub(crate) fn at(self, path: &Path) -> SentencePieceError {
        let path = path.to_path_buf();
        match self {
            BuildError::Invalid(message) => SentencePieceError::Invalid { path, message },
            BuildError::Unsupported(model_type) => {
                SentencePieceError::UnsupportedModelType { path, model_type }
            }
            BuildError::Normalizer(name) => SentencePieceError::BadNormalizer { path, name },
            BuildError::Tokenizers(message) => SentencePieceError::Build { path, message },
        }
    }
}

/// Checks what every supported model must be: a trainer spec, pieces, BPE.
pub(crate) fn check_bpe(proto: &ModelProto) -> Result<&TrainerSpec, BuildError> {
    // Protobuf decodes almost any short byte string into an empty message, so
    // emptiness is what tells a stray file from a model.
    let Some(spec) = proto.trainer_spec.as_ref() else {
        return Err(BuildError::Invalid(
            "it has no trainer_spec (is it a SentencePiece tokenizer.model?)".into(),
        ));
    };
    if proto.pieces.is_empty() {
        return Err(BuildError::Invalid("it has no pieces".into()));
    }
    match spec.model_type.unwrap_or(MODEL_UNIGRAM) {
        MODEL_BPE => Ok(spec),
        MODEL_UNIGRAM => Err(BuildError::Unsupported("Unigram".into())),
        MODEL_WORD => Err(BuildError::Unsupported("word".into())),
        MODEL_CHAR => Err(BuildError::Unsupported("char".into())),
        other => Err(BuildError::Unsupported(format!("unknown (type {other})"))),
    }
}
