//! transformers 4.37.2's slow `LlamaTokenizer` (the version LLaVA pins; its
//! `builder.py` loads Vicuna's and LLaVA's tokenizers with `use_fast=False`),
//! restated from `models/llama/tokenization_llama.py` and
//! `tokenization_utils.py` (`PreTrainedTokenizer.tokenize`), over the
//! `sentencepiece` library's encoding ([`SentencePieceBpe`]):
//!
//! 1. the text is split at added tokens (leftmost, then longest match):
//!    `<unk>`, `<s>`, `</s>` and whatever was added later (RGPT's `<image>`
//!    and `<region>`); the spaces around them stay with the text unless the
//!    token says `lstrip` / `rstrip`;
//! 2. `legacy` true: each piece of text between added tokens is encoded
//!    with the model as it is, so each gets SentencePiece's dummy `▁`;
//! 3. `legacy` false (Vicuna v1.5, LLaVA-1.5): `▁` characters in the text
//!    become spaces and one `▁` goes in front of the whole text; the model
//!    runs without its dummy prefix, a piece that starts with a space or
//!    `▁` is encoded behind `<unk>` whose pieces are then dropped, and a
//!    piece right after an added token gets no `▁` at all; a lone leading
//!    `▁` before a special token is dropped;
//! 4. BOS in front (`add_bos_token`), EOS behind only with `add_eos_token`.
//!
//! `legacy` comes from `tokenizer_config.json`; where it says nothing,
//! transformers 4.37.2 uses `true` (with a warning), and so does this.
//! Tokens' `single_word` and `normalized` flags are not reproduced (LLaMA's
//! added tokens set neither).
//! The test `tests/sentencepiece_slow_parity.rs` checks all of this against
//! the library and the slow tokenizer themselves.
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;

use super::{read_model, Piece, SentencePieceBpe, SentencePieceError, METASPACE};

/// A token the slow tokenizer splits the text at before SentencePiece sees
/// it (transformers' `AddedToken`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddedToken {
    pub content: String,
    pub id: u32,
    /// In `all_special_tokens` (what `special_tokens=True` gives).
    pub special: bool,
    /// Swallows the whitespace on its left / right.
    pub lstrip: bool,
    pub rstrip: bool,
}

/// What `tokenizer_config.json` (and `added_tokens.json`) say about
/// tokenisation, with transformers 4.37.2's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlowTokenizerConfig {
    pub legacy: bool,
    pub add_bos_token: bool,
    pub add_eos_token: bool,
    pub bos_token: Option<String>,
    pub eos_token: Option<String>,
    pub unk_token: String,
    /// Added tokens besides BOS/EOS/UNK, from the config's
    /// `added_tokens_decoder` and `added_tokens.json`.
    pub added_tokens: Vec<AddedToken>,
}

impl Default for SlowTokenizerConfig {
    fn default() -> Self {
        SlowTokenizerConfig {
            legacy: true,
            add_bos_token: true,
            add_eos_token: false,
            bos_token: Some("<s>".into()),
            eos_token: Some("</s>".into()),
            unk_token: "<unk>".into(),
            added_tokens: Vec::new(),
        }
    }
}

impl SlowTokenizerConfig {
    /// Reads `tokenizer_config.json` and `added_tokens.json` from `dir`;
    /// either may be missing.
    pub fn from_dir(dir: &Path) -> Result<Self, SentencePieceError> {
        let mut config = SlowTokenizerConfig::default();
        let path = dir.join("tokenizer_config.json");
        if let Some(json) = read_json(&path)? {
            config
                .apply(&json)
                .map_err(|message| SentencePieceError::Config {
                    path: path.clone(),
                    message,
                })?;
        }
        let path = dir.join("added_tokens.json");
        if let Some(json) = read_json(&path)? {
            let bad = |message: String| SentencePieceError::Config {
                path: path.clone(),
                message,
            };
            let map = json
                .as_object()
                .ok_or_else(|| bad("expected an object of token: id".into()))?;
            for (content, id) in map {
                let id = id
                    .as_u64()
                    .and_then(|id| u32::try_from(id).ok())
                    .ok_or_else(|| bad(format!("the id of {content:?} is not a token id")))?;
                config.add(AddedToken {
                    content: content.clone(),
                    id,
                    special: true,
                    lstrip: false,
                    rstrip: false,
                });
            }
        }
        Ok(config)
    }

    fn apply(&mut self, json: &Value) -> Result<(), String> {
        let flag = |key: &str, default: bool| -> Result<bool, String> {
            match json.get(key) {
                None | Some(Value::Null) => Ok(default),
                Some(Value::Bool(b)) => Ok(*b),
                Some(other) => Err(format!("`{key}` is {other}, not true or false")),
            }
        };
        self.legacy = flag("legacy", true)?;
        self.add_bos_token = flag("add_bos_token", true)?;
        self.add_eos_token = flag("add_eos_token", false)?;
        let token = |key: &str, default: Option<&str>| -> Result<Option<String>, String> {
            match json.get(key) {
                None => Ok(default.map(str::to_string)),
                Some(Value::Null) => Ok(None),
                Some(value) => token_content(value)
                    .map(Some)
                    .ok_or_else(|| format!("`{key}` is neither a string nor an AddedToken")),
            }
        };
        self.bos_token = token("bos_token", Some("<s>"))?;
        self.eos_token = token("eos_token", Some("</s>"))?;
        self.unk_token = token("unk_token", Some("<unk>"))?.unwrap_or_else(|| "<unk>".into());
        if let Some(decoder) = json.get("added_tokens_decoder").and_then(Value::as_object) {
            for (id, token) in decoder {
                let id: u32 = id
                    .parse()
                    .map_err(|_| format!("`added_tokens_decoder` key {id:?} is not a token id"))?;
                let content = token_content(token)
                    .ok_or_else(|| format!("`added_tokens_decoder` entry {id} has no content"))?;
                let flag = |key: &str| token.get(key).and_then(Value::as_bool).unwrap_or(false);
                self.add(AddedToken {
                    content,
                    id,
                    special: flag("special"),
                    lstrip: flag("lstrip"),
                    rstrip: flag("rstrip"),
                });
            }
        }
        Ok(())
    }

    fn add(&mut self, token: AddedToken) {
        if !self.added_tokens.iter().any(|t| t.content == token.content) {
            self.added_tokens.push(token);
        }
    }
}

fn read_json(path: &Path) -> Result<Option<Value>, SentencePieceError> {
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).map_err(|source| SentencePieceError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| SentencePieceError::Config {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
}

/// A token written as `"<s>"` or as `{"content": "<s>", ...}`.
fn token_content(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Object(map) => map.get("content")?.as_str().map(str::to_string),
        _ => None,
    }
}

/// transformers 4.37.2's slow `LlamaTokenizer` over a SentencePiece model.
#[derive(Debug, Clone)]
pub struct SlowLlamaTokenizer {
    model: SentencePieceBpe,
    /// The `add_dummy_prefix` the tokenizer's `sp_model` runs with: the
    /// model's own when legacy, false otherwise.
    dummy_prefix: bool,
    legacy: bool,
    bos_id: Option<u32>,
    eos_id: Option<u32>,
    add_bos: bool,
    add_eos: bool,
    unk_token: String,
    /// How many pieces `unk_token` encodes to (`unk_token_length`).
    unk_token_length: usize,
    /// BOS/EOS/UNK first, then the config's and those added since.
    added: Vec<AddedToken>,
    /// The `tokenizer.model` file, for saving.
    model_bytes: Arc<[u8]>,
    source: PathBuf,
}

impl SlowLlamaTokenizer {
    /// Loads `tokenizer.model` with `config` (see
    /// [`SlowTokenizerConfig::from_dir`]).
    pub fn from_file(
        path: &Path,
        config: &SlowTokenizerConfig,
    ) -> Result<Self, SentencePieceError> {
        let (proto, bytes) = read_model(path)?;
        let model = SentencePieceBpe::from_proto(&proto).map_err(|e| e.at(path))?;
        let dummy_prefix = config.legacy && model.adds_dummy_prefix();
        // `PreTrainedTokenizer.__init__` makes the special tokens added
        // tokens; a piece of the model keeps its id.
        let special = |content: &Option<String>| -> Option<AddedToken> {
            let content = content.as_ref()?;
            let id = model.piece_to_id(content)?;
            Some(AddedToken {
                content: content.clone(),
                id,
                special: true,
                lstrip: false,
                rstrip: false,
            })
        };
        let bos = special(&config.bos_token);
        let eos = special(&config.eos_token);
        let unk = special(&Some(config.unk_token.clone()));
        let mut tokenizer = SlowLlamaTokenizer {
            unk_token_length: model
                .encode_with_prefix(&config.unk_token, dummy_prefix)
                .len(),
            model,
            dummy_prefix,
            legacy: config.legacy,
            bos_id: bos.as_ref().map(|t| t.id),
            eos_id: eos.as_ref().map(|t| t.id),
            add_bos: config.add_bos_token,
            add_eos: config.add_eos_token,
            unk_token: config.unk_token.clone(),
            added: Vec::new(),
            model_bytes: bytes.into(),
            source: path.to_path_buf(),
        };
        for token in [bos, eos, unk].into_iter().flatten() {
            tokenizer.add_token(token);
        }
        for token in &config.added_tokens {
            tokenizer.add_token(token.clone());
        }
        Ok(tokenizer)
    }

    /// The SentencePiece model underneath.
    pub fn model(&self) -> &SentencePieceBpe {
        &self.model
    }

    /// The `tokenizer.model` file it was read from, and its bytes.
    pub fn source(&self) -> (&Path, &[u8]) {
        (&self.source, &self.model_bytes)
    }

    pub fn legacy(&self) -> bool {
        self.legacy
    }

    pub fn bos_id(&self) -> Option<u32> {
        self.bos_id
    }

    /// Every added token, in the order added.
    pub fn added_tokens(&self) -> &[AddedToken] {
        &self.added
    }

    /// Adds a token the text is split at (a second one with the same
    /// content is ignored, as transformers does).
    pub fn add_token(&mut self, token: AddedToken) {
        if !self.added.iter().any(|t| t.content == token.content) {
            self.added.push(token);
        }
    }

    /// `tokenizer(text).input_ids` (`add_special_tokens` true) or
    /// `tokenizer(text, add_special_tokens=False).input_ids`, with the byte
    /// range of `text` each id came from (`0..0` for BOS and EOS).
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Vec<Piece> {
        let mut out = Vec::new();
        if add_special_tokens && self.add_bos {
            if let Some(id) = self.bos_id {
                out.push(Piece { id, range: 0..0 });
            }
        }
        out.extend(self.tokenize(text));
        if add_special_tokens && self.add_eos {
            if let Some(id) = self.eos_id {
                out.push(Piece { id, range: 0..0 });
            }
        }
        out
    }

    /// `LlamaTokenizer.tokenize`.
    fn tokenize(&self, text: &str) -> Vec<Piece> {
        if self.legacy || text.is_empty() {
            let identity: Vec<usize> = (0..=text.len()).collect();
            return self.split_and_encode(text, &identity);
        }
        // "▁" + text.replace("▁", " "), with each byte's place in `text`.
        let mut prefixed = String::with_capacity(text.len() + METASPACE.len_utf8());
        let mut to_text = Vec::with_capacity(text.len() + 4);
        prefixed.push(METASPACE);
        to_text.extend([0; 3]);
        for (at, ch) in text.char_indices() {
            let ch = if ch == METASPACE { ' ' } else { ch };
            prefixed.push(ch);
            to_text.extend(std::iter::repeat_n(at, ch.len_utf8()));
        }
        to_text.push(text.len());
        let mut tokens = self.split_and_encode(&prefixed, &to_text);
        let lone_metaspace = self.model.piece_to_id(&METASPACE.to_string());
        if tokens.len() > 1
            && Some(tokens[0].id) == lone_metaspace
            && self.is_special_added(&tokens[1])
        {
            tokens.remove(0);
        }
        tokens
    }

    /// Whether `piece` is an added token of `all_special_tokens`.
    fn is_special_added(&self, piece: &Piece) -> bool {
        self.added.iter().any(|t| t.special && t.id == piece.id)
    }

    /// `PreTrainedTokenizer.tokenize` after `prepare_for_tokenization`:
    /// split at added tokens, encode the rest. `to_text` maps each byte of
    /// `text` (and its end) to the caller's text.
    fn split_and_encode(&self, text: &str, to_text: &[usize]) -> Vec<Piece> {
        let mut segments: Vec<(Range<usize>, Option<&AddedToken>)> = Vec::new();
        let mut start = 0;
        let mut at = 0;
        while at < text.len() {
            let found = self
                .added
                .iter()
                .filter(|t| !t.content.is_empty() && text[at..].starts_with(t.content.as_str()))
                .max_by_key(|t| t.content.len());
            match found {
                Some(token) => {
                    segments.push((start..at, None));
                    let end = at + token.content.len();
                    segments.push((at..end, Some(token)));
                    at = end;
                    start = end;
                }
                None => at += text[at..].chars().next().map_or(1, char::len_utf8),
            }
        }
        segments.push((start..text.len(), None));
        // An `rstrip` token swallows the whitespace after it, `lstrip` the
        // whitespace before it.
        for i in 0..segments.len() {
            let Some(token) = segments[i].1 else { continue };
            if token.rstrip && i + 1 < segments.len() {
                let range = segments[i + 1].0.clone();
                let kept = text[range.clone()].trim_start_matches(is_python_space);
                segments[i + 1].0 = range.end - kept.len()..range.end;
            }
            if token.lstrip && i > 0 {
                let range = segments[i - 1].0.clone();
                let kept = text[range.clone()].trim_end_matches(is_python_space);
                segments[i - 1].0 = range.start..range.start + kept.len();
            }
        }
        let mut out = Vec::new();
        for (range, token) in segments {
            if range.is_empty() {
                continue;
            }
            match token {
                Some(token) => out.push(Piece {
                    id: token.id,
                    range: to_text[range.start]..to_text[range.end],
                }),
                None => out.extend(
                    self.encode_piece(&text[range.clone()])
                        .into_iter()
                        .map(|p| Piece {
                            id: p.id,
                            range: to_text[range.start + p.range.start]
                                ..to_text[range.start + p.range.end],
                        }),
                ),
            }
        }
        out
    }

    /// `LlamaTokenizer._tokenize`: ranges relative to `text`.
    fn encode_piece(&self, text: &str) -> Vec<Piece> {
        if self.legacy || !(text.starts_with(METASPACE) || text.starts_with(' ')) {
            return self.model.encode_with_prefix(text, self.dummy_prefix);
        }
        let behind_unk = format!("{}{text}", self.unk_token);
        let pieces = self
            .model
            .encode_with_prefix(&behind_unk, self.dummy_prefix);
        let shift = self.unk_token.len();
        let unk_pieces = if pieces.len() >= self.unk_token_length {
            self.unk_token_length
        } else {
            0
        };
        pieces
            .into_iter()
            .skip(unk_pieces)
            .map(|p| Piece {
                id: p.id,
                range: p.range.start.saturating_sub(shift)..p.range.end.saturating_sub(shift),
            })
            .collect()
    }
}

/// Python's `str.isspace` (what `str.strip` removes): Unicode White_Space
/// plus the four ASCII information separators.
fn is_python_space(ch: char) -> bool {
    ch.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&ch)
}
