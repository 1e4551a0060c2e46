//! CLIP's tokenizer as CLIP users run it: the checkpoint's `tokenizer.json`
//! (byte-level BPE with `</w>` word ends, NFC, whitespace runs to one
//! space, lowercase, start and end of text added), each text truncated to
//! the text tower's context (77 for OpenAI's CLIP: the start token, the
//! first 75 tokens and the end token, as transformers' `truncation=True`),
//! and a batch padded to its longest text with the padding id and an
//! attention mask. A caption longer than the context is scored on its
//! beginning, as CLIP itself does (and CLIP-based filters such as
//! RecapD's use it).
use std::path::Path;

use tch::{Device, Kind, Tensor};
use tokenizers::{PaddingParams, PaddingStrategy, TruncationParams};

use crate::error::VisionError;

type Result<T> = std::result::Result<T, VisionError>;

pub struct ClipTokenizer {
    inner: tokenizers::Tokenizer,
}

impl ClipTokenizer {
    /// `dir/tokenizer.json`, truncating to `context` tokens and padding
    /// with `pad_token_id` (CLIP's end of text).
    pub fn from_dir(dir: &Path, context: usize, pad_token_id: i64) -> Result<Self> {
        let path = dir.join("tokenizer.json");
        let mut inner =
            tokenizers::Tokenizer::from_file(&path).map_err(|e| VisionError::Config {
                path: path.clone(),
                message: format!("not a tokenizer.json this reads: {e}"),
            })?;
        let pad_token =
            inner
                .id_to_token(pad_token_id as u32)
                .ok_or_else(|| VisionError::Config {
                    path: path.clone(),
                    message: format!("the pad id {pad_token_id} is not in the vocabulary"),
                })?;
        inner
            .with_truncation(Some(TruncationParams {
                max_length: context,
                ..Default::default()
            }))
            .map_err(|e| VisionError::InvalidInput(e.to_string()))?;
        inner.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            pad_id: pad_token_id as u32,
            pad_token,
            ..Default::default()
        }));
        Ok(ClipTokenizer { inner })
    }

    /// The ids of `text` (start and end of text included, truncated).
    pub fn encode(&self, text: &str) -> Result<Vec<i64>> {
        let encoding = self
            .inner
            .encode(text, true)
            .map_err(|e| VisionError::InvalidInput(format!("cannot tokenize {text:?}: {e}")))?;
        Ok(encoding.get_ids().iter().map(|&id| i64::from(id)).collect())
    }

    /// `texts` as `input_ids` and `attention_mask` [texts, longest].
    pub fn encode_batch(&self, texts: &[String], device: Device) -> Result<(Tensor, Tensor)> {
        if texts.is_empty() {
            return Err(VisionError::InvalidInput("no text to score".into()));
        }
        let encodings = self
            .inner
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| VisionError::InvalidInput(format!("cannot tokenize: {e}")))?;
        let longest = encodings.first().map_or(0, |e| e.get_ids().len()) as i64;
        let flat = |f: &dyn Fn(&tokenizers::Encoding) -> Vec<i64>| {
            let values: Vec<i64> = encodings.iter().flat_map(f).collect();
            Tensor::from_slice(&values)
                .view([texts.len() as i64, longest])
                .to_device(device)
        };
        let ids = flat(&|e| e.get_ids().iter().map(|&i| i64::from(i)).collect());
        let mask = flat(&|e| {
            e.get_attention_mask()
                .iter()
                .map(|&m| i64::from(m))
                .collect()
        });
        Ok((ids, mask.to_kind(Kind::Int64)))
    }
}
