//! The text side of the decoder: a `tokenizers` tokenizer loaded from
//! `tokenizer.json` (BOS/EOS as its post-processor says), or, when a
//! checkpoint ships only a SentencePiece `tokenizer.model` (Vicuna, the
//! original LLaVA), the slow `LlamaTokenizer` those checkpoints were trained
//! with: encoding as transformers 4.37.2's slow tokenizer and the
//! `sentencepiece` library do ([`crate::sentencepiece`]), decoding through
//! the converted fast pipeline.
use std::path::{Path, PathBuf};

use crate::sentencepiece::{
    tokenizer_from_sentencepiece, AddedToken, SlowLlamaTokenizer, SlowTokenizerConfig,
};
use crate::LlmError;

#[derive(Debug, Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    source: PathBuf,
    /// For a `tokenizer.model` checkpoint, what encodes; `inner` then
    /// decodes and holds the vocabulary and added tokens.
    slow: Option<SlowLlamaTokenizer>,
}

/// The special tokens every trained tokenizer starts with, in id order:
/// LLaMA's `<unk>` 0, `<s>` 1, `</s>` 2.
const TRAINED_SPECIALS: [&str; 3] = ["<unk>", "<s>", "</s>"];

/// [`TRAINED_SPECIALS`] as a trainer takes them.
fn trained_specials() -> Vec<tokenizers::AddedToken> {
    TRAINED_SPECIALS
        .map(|t| tokenizers::AddedToken::from(t, true))
        .to_vec()
}

/// An error met while training a tokenizer.
fn training_error(e: impl std::fmt::Display) -> LlmError {
    LlmError::Encode(format!("training a tokenizer: {e}"))
}

impl Tokenizer {
    /// Loads the tokenizer of a model directory, preferring `tokenizer.json`
    /// as transformers does. A directory with only `tokenizer.model` gets
    /// the slow tokenizer, configured by its `tokenizer_config.json`
    /// (`legacy`, `add_bos_token`, `add_eos_token`, added tokens) and
    /// `added_tokens.json`, as transformers 4.37.2 with `use_fast=False`
    /// loads it.
    pub fn from_dir(dir: &Path) -> Result<Self, LlmError> {
        let json = dir.join("tokenizer.json");
        if json.is_file() {
            let inner =
                tokenizers::Tokenizer::from_file(&json).map_err(|e| LlmError::Tokenizer {
                    path: json.clone(),
                    message: e.to_string(),
                })?;
            return Ok(Tokenizer {
                inner,
                source: json,
                slow: None,
            });
        }
        if dir.join("tokenizer.model").is_file() {
            return Self::from_sentencepiece_dir(dir);
        }
        Err(LlmError::MissingTokenizer(dir.to_path_buf()))
    }

    /// The slow tokenizer of `dir`'s `tokenizer.model` (with its
    /// `tokenizer_config.json` and `added_tokens.json`), even where a
    /// `tokenizer.json` is there too: what `AutoTokenizer.from_pretrained(dir,
    /// use_fast=False)` loads, as LLaVA's `builder.py` does for its own
    /// checkpoints.
    pub fn from_sentencepiece_dir(dir: &Path) -> Result<Self, LlmError> {
        let spm = dir.join("tokenizer.model");
        let config = SlowTokenizerConfig::from_dir(dir)?;
        let slow = SlowLlamaTokenizer::from_file(&spm, &config)?;
        let mut inner = tokenizer_from_sentencepiece(&spm)?;
        // The added tokens beyond the model's pieces, at their ids, so
        // that decoding and `token_to_id` know them.
        let mut beyond: Vec<&AddedToken> = slow
            .added_tokens()
            .iter()
            .filter(|t| inner.token_to_id(&t.content).is_none())
            .collect();
        beyond.sort_by_key(|t| t.id);
        for token in beyond {
            let added = tokenizers::AddedToken::from(token.content.as_str(), token.special)
                .normalized(false);
            let result = if token.special {
                inner.add_special_tokens(vec![added])
            } else {
                inner.add_tokens(vec![added])
            };
            result.map_err(|e| LlmError::Tokenizer {
                path: spm.clone(),
                message: e.to_string(),
            })?;
            if inner.token_to_id(&token.content) != Some(token.id) {
                return Err(LlmError::Tokenizer {
                    path: spm,
                    message: format!(
                        "added token {:?} has id {}, but the ids of added tokens must follow \
                         the model's {} pieces without gaps",
                        token.content,
                        token.id,
                        slow.model().len()
                    ),
                });
            }
        }
        Ok(Tokenizer {
            inner,
            source: spm,
            slow: Some(slow),
        })
    }

    pub fn from_tokenizers(inner: tokenizers::Tokenizer) -> Self {
        Tokenizer {
            inner,
            source: PathBuf::new(),
            slow: None,
        }
    }

    /// The slow tokenizer that encodes a `tokenizer.model` checkpoint.
    pub fn slow(&self) -> Option<&SlowLlamaTokenizer> {
        self.slow.as_ref()
    }

    /// A LLaMA-style BPE tokenizer (SentencePiece's `▁` word marks, `<unk>`
    /// id 0, `<s>` 1, `</s>` 2, BOS added to every encoding) trained on
    /// `texts` with a vocabulary of at most `vocab_size`: what a model
    /// trained from scratch on its own data reads (the demo's world).
    /// With `split_punctuation`, punctuation is never merged into a word,
    /// so the `circle` of `"the red circle"?` is the token of every other
    /// `circle`; otherwise a small vocabulary learns `▁circle"?` as a word
    /// of its own, one the model must learn apart.
    pub fn train_bpe<I, S>(
        texts: I,
        vocab_size: usize,
        split_punctuation: bool,
    ) -> Result<Self, LlmError>
    where
        I: Iterator<Item = S> + Send,
        S: AsRef<str> + Send,
    {
        use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
        use tokenizers::models::TrainerWrapper;
        use tokenizers::pre_tokenizers::metaspace::{Metaspace, PrependScheme};
        use tokenizers::pre_tokenizers::punctuation::Punctuation;
        use tokenizers::pre_tokenizers::sequence::Sequence;
        let model = BPE::builder()
            .unk_token("<unk>".into())
            .build()
            .map_err(training_error)?;
        let mut inner = tokenizers::Tokenizer::new(model);
        let metaspace = Metaspace::new('▁', PrependScheme::First, true);
        if split_punctuation {
            inner.with_pre_tokenizer(Some(Sequence::new(vec![
                metaspace.clone().into(),
                Punctuation::default().into(),
            ])));
        } else {
            inner.with_pre_tokenizer(Some(metaspace.clone()));
        }
        inner.with_decoder(Some(metaspace));
        let mut trainer: TrainerWrapper = BpeTrainerBuilder::new()
            .vocab_size(vocab_size)
            .special_tokens(trained_specials())
            .show_progress(false)
            .build()
            .into();
        inner.train(&mut trainer, texts).map_err(training_error)?;
        Self::with_bos(inner)
    }

    /// A word-level tokenizer: one id per word or punctuation mark of `texts`
    /// (`<unk>` id 0, `<s>` 1, `</s>` 2, BOS added to every encoding), with the
    /// `placeholders` (`<image>`, `<region>`) as special tokens, for a model
    /// trained from scratch on a closed world. Words carry SentencePiece's `▁`
    /// mark as the BPE's do, and so does a punctuation mark after a space
    /// (`▁"`), so no token is a lone `▁`. Every piece of text between special
    /// tokens starts with a marked word, and a placeholder swallows the
    /// whitespace around it: the question after `<image>\n` reads `▁From` as it
    /// does with no image, and `by <region>` is `▁by <region>`. Its vocabulary
    /// is the world's words and nothing else: in the demo's world 159 ids,
    /// where its BPE held 480, every merge on the way to a word included (the
    /// demo uses it; docs/experiments/demo-journal.md, fourteenth round). Text
    /// outside the training words encodes as `<unk>`.
    pub fn train_word_level<I, S>(texts: I, placeholders: &[&str]) -> Result<Self, LlmError>
    where
        I: Iterator<Item = S> + Send,
        S: AsRef<str> + Send,
    {
        use tokenizers::models::wordlevel::{WordLevel, WordLevelTrainer};
        use tokenizers::models::TrainerWrapper;
        use tokenizers::pre_tokenizers::metaspace::{Metaspace, PrependScheme};
        use tokenizers::pre_tokenizers::sequence::Sequence;
        use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
        use tokenizers::SplitDelimiterBehavior;
        let model = WordLevel::builder()
            .unk_token("<unk>".into())
            .build()
            .map_err(training_error)?;
        let mut inner = tokenizers::Tokenizer::new(model);
        let metaspace = Metaspace::new('▁', PrependScheme::Always, true);
        // After the metaspace split every piece is `▁word` or `word`; this
        // cuts punctuation off it, keeping a leading `▁` on the mark, and
        // keeps line breaks apart.
        let words = Split::new(
            SplitPattern::Regex(r"▁?[^▁\p{P}\s]+|▁?\p{P}|\s+".into()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .map_err(training_error)?;
        inner.with_pre_tokenizer(Some(Sequence::new(vec![
            metaspace.clone().into(),
            words.into(),
        ])));
        inner.with_decoder(Some(metaspace));
        // Training does not split at special tokens as encoding does, so
        // the texts are cut there first: the words counted are the words
        // encoded.
        let cuts: Vec<&str> = TRAINED_SPECIALS
            .iter()
            .chain(placeholders)
            .copied()
            .collect();
        let pieces: Vec<String> = texts
            .flat_map(|text| {
                let mut pieces = vec![text.as_ref().to_string()];
                for cut in &cuts {
                    pieces = pieces
                        .iter()
                        .flat_map(|piece| piece.split(cut))
                        .map(|piece| piece.trim().to_string())
                        .collect();
                }
                pieces
            })
            .filter(|piece| !piece.is_empty())
            .collect();
        let mut trainer: TrainerWrapper = WordLevelTrainer::builder()
            .special_tokens(trained_specials())
            .show_progress(false)
            .build()
            .map_err(training_error)?
            .into();
        inner
            .train(&mut trainer, pieces.iter())
            .map_err(training_error)?;
        let placeholders: Vec<tokenizers::AddedToken> = placeholders
            .iter()
            .map(|t| {
                tokenizers::AddedToken::from(*t, true)
                    .lstrip(true)
                    .rstrip(true)
            })
            .collect();
        inner
            .add_special_tokens(placeholders)
            .map_err(training_error)?;
        Self::with_bos(inner)
    }

    /// `inner` with `<s>` added before every encoding, as LLaMA's is.
    fn with_bos(mut inner: tokenizers::Tokenizer) -> Result<Self, LlmError> {
        use tokenizers::processors::template::TemplateProcessing;
        let bos = inner
            .token_to_id("<s>")
            .ok_or_else(|| training_error("no <s> token"))?;
        let template = TemplateProcessing::builder()
            .try_single("<s> $A")
            .map_err(training_error)?
            .special_tokens(vec![("<s>", bos)])
            .build()
            .map_err(training_error)?;
        inner.with_post_processor(Some(template));
        Ok(Tokenizer {
            inner,
            source: PathBuf::new(),
            slow: None,
        })
    }

    /// The file the tokenizer was read from.
    pub fn source(&self) -> &Path {
        &self.source
    }

    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Token ids of `text`; with `add_special_tokens` BOS (for LLaMA) is
    /// added exactly as transformers' `tokenizer(text)` does: the fast
    /// tokenizer's for `tokenizer.json`, the slow one's for
    /// `tokenizer.model`.
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<i64>, LlmError> {
        if let Some(slow) = &self.slow {
            let pieces = slow.encode(text, add_special_tokens);
            return Ok(pieces.iter().map(|p| i64::from(p.id)).collect());
        }
        let encoding = self
            .inner
            .encode(text, add_special_tokens)
            .map_err(|e| LlmError::Encode(e.to_string()))?;
        Ok(encoding.get_ids().iter().map(|&id| id as i64).collect())
    }

    /// Token ids of `text` with the byte range of `text` each token came
    /// from (`0..0` for added BOS/EOS).
    pub fn encode_with_offsets(
        &self,
        text: &str,
        add_special_tokens: bool,
    ) -> Result<(Vec<i64>, Vec<std::ops::Range<usize>>), LlmError> {
        if let Some(slow) = &self.slow {
            let pieces = slow.encode(text, add_special_tokens);
            let ids = pieces.iter().map(|p| i64::from(p.id)).collect();
            let offsets = pieces.into_iter().map(|p| p.range).collect();
            return Ok((ids, offsets));
        }
        let encoding = self
            .inner
            .encode(text, add_special_tokens)
            .map_err(|e| LlmError::Encode(e.to_string()))?;
        let ids = encoding.get_ids().iter().map(|&id| id as i64).collect();
        let offsets = encoding
            .get_offsets()
            .iter()
            .map(|&(start, end)| start..end)
            .collect();
        Ok((ids, offsets))
    }

    /// Text of `ids`. A `tokenizer.model` checkpoint decodes through the
    /// fast pipeline, which agrees with the slow tokenizer's `decode` except
    /// that the slow one strips up to two leading spaces, this one one
    /// (tests/sentencepiece_slow_parity.rs).
    pub fn decode(&self, ids: &[i64], skip_special_tokens: bool) -> Result<String, LlmError> {
        let ids: Vec<u32> = ids.iter().map(|&id| id as u32).collect();
        self.inner
            .decode(&ids, skip_special_tokens)
            .map_err(|e| LlmError::Encode(e.to_string()))
    }

    /// Adds special tokens (e.g. RGPT's `<image>` and `<region>`
    /// placeholders) if missing; returns their ids. New ids come after the
    /// vocabulary, which is fine for placeholders: they are replaced before
    /// the embedding lookup. The slow tokenizer gets them as
    /// `add_tokens(tokens, special_tokens=True)` gives them (how SpatialRGPT
    /// adds its region placeholder, `llava/model/builder.py`): the text is
    /// split at them, and with `legacy` false the text right after one
    /// starts without `▁`.
    pub fn add_special_tokens(&mut self, tokens: &[&str]) -> Result<Vec<i64>, LlmError> {
        let added: Vec<tokenizers::AddedToken> = tokens
            .iter()
            .map(|t| tokenizers::AddedToken::from(*t, true))
            .collect();
        self.inner
            .add_special_tokens(added)
            .map_err(|e| LlmError::Encode(e.to_string()))?;
        if let Some(slow) = &mut self.slow {
            for token in tokens {
                let id = self.inner.token_to_id(token).ok_or_else(|| {
                    LlmError::Encode(format!("could not add the token {token:?}"))
                })?;
                slow.add_token(AddedToken {
                    content: (*token).to_string(),
                    id,
                    special: true,
                    lstrip: false,
                    rstrip: false,
                });
            }
        }
        Ok(tokens.iter().filter_map(|t| self.token_to_id(t)).collect())
    }

    /// Writes the tokenizer into a checkpoint directory so that
    /// [`Tokenizer::from_dir`] reads back the same tokenizer:
    /// `tokenizer.json` for a `tokenizers` one; for a slow one,
    /// `tokenizer.model` and the tokens added beyond its pieces in
    /// `added_tokens.json` (as transformers' slow tokenizer saves them),
    /// removing a `tokenizer.json` there, which would take precedence. Each
    /// file lands atomically (written beside, then renamed).
    pub fn save_pretrained(&self, dir: &Path) -> Result<(), LlmError> {
        let write = |name: &str, bytes: &[u8]| -> Result<(), LlmError> {
            Ok(rgpt_weights::save::write_atomic(&dir.join(name), bytes)?)
        };
        let Some(slow) = &self.slow else {
            let json = self
                .inner
                .to_string(true)
                .map_err(|e| LlmError::Tokenizer {
                    path: dir.join("tokenizer.json"),
                    message: e.to_string(),
                })?;
            return write("tokenizer.json", json.as_bytes());
        };
        write("tokenizer.model", slow.source().1)?;
        let pieces = slow.model().len();
        let added: serde_json::Map<String, serde_json::Value> = slow
            .added_tokens()
            .iter()
            .filter(|t| t.id as usize >= pieces)
            .map(|t| (t.content.clone(), serde_json::Value::from(t.id)))
            .collect();
        if !added.is_empty() {
            let json = serde_json::to_string_pretty(&added).unwrap_or_default() + "\n";
            write("added_tokens.json", json.as_bytes())?;
        }
        let stale = dir.join("tokenizer.json");
        if stale.is_file() {
            std::fs::remove_file(&stale).map_err(|source| LlmError::Io {
                path: stale,
                source,
            })?;
        }
        Ok(())
    }

    /// Writes `tokenizer.json` (for a `tokenizer.model` checkpoint, the
    /// fast pipeline, which encodes differently: checkpoints are saved with
    /// [`Tokenizer::save_pretrained`]).
    pub fn save(&self, path: &Path) -> Result<(), LlmError> {
        self.inner
            .save(path, true)
            .map_err(|e| LlmError::Tokenizer {
                path: path.to_path_buf(),
                message: e.to_string(),
            })
    }

    pub fn token_to_id(&self, token: &str) -> Option<i64> {
        self.inner.token_to_id(token).map(i64::from)
    }
}

/// Turns a stream of generated ids into text deltas. Each new token is
/// decoded together with the one before it and the text they add is the
/// delta (the prefix/read offsets of text-generation-inference): merges,
/// SentencePiece's leading-space stripping and byte-fallback sequences come
/// out right at a constant cost per token. A delta is held back while it
/// ends in an incomplete UTF-8 sequence.
#[derive(Debug, Default)]
pub struct StreamDecoder {
    ids: Vec<i64>,
    prefix_offset: usize,
    read_offset: usize,
}

impl StreamDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one id; returns the new text, if any is complete.
    pub fn push(&mut self, tokenizer: &Tokenizer, id: i64) -> Result<Option<String>, LlmError> {
        self.ids.push(id);
        self.flush(tokenizer, false)
    }

    /// Whatever is left once generation ends.
    pub fn finish(&mut self, tokenizer: &Tokenizer) -> Result<Option<String>, LlmError> {
        self.flush(tokenizer, true)
    }

    fn flush(&mut self, tokenizer: &Tokenizer, last: bool) -> Result<Option<String>, LlmError> {
        let before = tokenizer.decode(&self.ids[self.prefix_offset..self.read_offset], true)?;
        let after = tokenizer.decode(&self.ids[self.prefix_offset..], true)?;
        let incomplete = after.ends_with('\u{FFFD}') && !last;
        match after.get(before.len()..) {
            Some(delta) if !incomplete && after.starts_with(&before) && !delta.is_empty() => {
                let delta = delta.to_string();
                self.prefix_offset = self.read_offset;
                self.read_offset = self.ids.len();
                Ok(Some(delta))
            }
            _ => Ok(None),
        }
    }
}
