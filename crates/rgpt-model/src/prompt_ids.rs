//! From a rendered prompt to the token ids a checkpoint reads, the one
//! path every caller takes (chat, `generate`, evaluation and, through
//! [`crate::prompt::conversation_segments`], training). Two ways exist,
//! and which one a checkpoint was trained with decides:
//!
//! - [`PromptTokenization::Processor`]: the whole prompt through the
//!   tokenizer at once, `<image>` being a token of it, as transformers'
//!   `LlavaProcessor` does for llava-hf checkpoints
//!   (`LlavaForConditionalGeneration`). RGPT's own checkpoints, whose
//!   tokenizer holds `<image>` and `<region>`, are prompted this way too.
//! - [`PromptTokenization::TokenizerImageToken`]: LLaVA's own
//!   `tokenizer_image_token` (GitHub `haotian-liu/LLaVA` at c121f04,
//!   `llava/mm_utils.py`), for checkpoints in the original repository's
//!   layout (`LlavaLlamaForCausalLM`, `model.mm_projector.*`): the prompt is
//!   cut at each `<image>`, each chunk is tokenized on its own (BOS
//!   included), only the first chunk's BOS is kept, and the image id goes
//!   between the chunks. Each chunk after an image so starts with its own
//!   `▁` (id 29871 in Vicuna's vocabulary) where the processor's way gives
//!   none.
//!
//! [`PromptTokenization::for_checkpoint`] decides from `config.json`
//! (`architectures`, `model_type`) or, failing that, from the weights'
//! layout; a `"prompt_tokenization"` field in `config.json`
//! (`"processor"` or `"tokenizer_image_token"`) overrides it, and
//! [`crate::chat::RegionGenerator::prompt_tokenization`] may be set by
//! a caller.
use std::ops::Range;
use std::path::Path;

use rgpt_llm::Tokenizer;
use serde::{Deserialize, Serialize};

use crate::ModelError;

/// The placeholder LLaVA cuts prompts at (`DEFAULT_IMAGE_TOKEN`).
pub const IMAGE_PLACEHOLDER: &str = "<image>";

/// The `config.json` field that overrides the detected way.
pub const CONFIG_FIELD: &str = "prompt_tokenization";

/// A tensor only the original LLaVA repository's checkpoints have.
const ORIGINAL_LAYOUT_MARKER: &str = "model.mm_projector.0.weight";

/// The original repository's model classes (`llava/model/language_model/`).
const ORIGINAL_ARCHITECTURES: [&str; 3] = [
    "LlavaLlamaForCausalLM",
    "LlavaMistralForCausalLM",
    "LlavaMptForCausalLM",
];

/// How a prompt holding `<image>` becomes token ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PromptTokenization {
    /// The whole prompt at once (llava-hf's processor; RGPT's checkpoints).
    #[default]
    Processor,
    /// LLaVA's `tokenizer_image_token`: chunks between images, each
    /// tokenized alone (original-layout LLaVA checkpoints).
    TokenizerImageToken,
}

impl PromptTokenization {
    /// The way `dir`'s checkpoint was trained with: `config.json`'s
    /// `prompt_tokenization` if present; otherwise
    /// [`PromptTokenization::TokenizerImageToken`] when `architectures`
    /// names one of the original LLaVA classes, `model_type` is
    /// `llava_llama`, or (with neither) the weights are in the original
    /// layout; [`PromptTokenization::Processor`] else.
    pub fn for_checkpoint(dir: &Path) -> Result<Self, ModelError> {
        let path = dir.join("config.json");
        let config: serde_json::Value = rgpt_weights::read_json(&path)?;
        if let Some(way) = Self::from_config(&config).map_err(|message| ModelError::Config {
            path: path.clone(),
            message,
        })? {
            return Ok(way);
        }
        let layout_says = config.get("architectures").is_none()
            && rgpt_weights::Checkpoint::open(dir)
                .map(|c| c.contains(ORIGINAL_LAYOUT_MARKER))
                .unwrap_or(false);
        Ok(if layout_says {
            PromptTokenization::TokenizerImageToken
        } else {
            PromptTokenization::Processor
        })
    }

    /// The tokenizer `dir`'s checkpoint was prompted with. LLaVA's
    /// `builder.py` (c121f04) loads its own checkpoints' tokenizer with
    /// `use_fast=False`, so for [`PromptTokenization::TokenizerImageToken`]
    /// a `tokenizer.model` is read as the slow tokenizer even beside a
    /// `tokenizer.json`; otherwise as `AutoTokenizer` picks
    /// ([`Tokenizer::from_dir`]: `tokenizer.json` first).
    pub fn tokenizer(self, dir: &Path) -> Result<Tokenizer, ModelError> {
        let slow = self == PromptTokenization::TokenizerImageToken
            && dir.join("tokenizer.model").is_file();
        Ok(if slow {
            Tokenizer::from_sentencepiece_dir(dir)?
        } else {
            Tokenizer::from_dir(dir)?
        })
    }

    /// What `config.json` alone says: the override, or the original
    /// repository's class or model type; `None` when it does not tell.
    pub fn from_config(config: &serde_json::Value) -> Result<Option<Self>, String> {
        if let Some(value) = config.get(CONFIG_FIELD) {
            return serde_json::from_value(value.clone())
                .map(Some)
                .map_err(|_| {
                    format!(
                        "`{CONFIG_FIELD}` is {value}; use \"processor\" or \"tokenizer_image_token\""
                    )
                });
        }
        let original_class = config
            .get("architectures")
            .and_then(|a| a.as_array())
            .is_some_and(|a| {
                a.iter()
                    .filter_map(|v| v.as_str())
                    .any(|name| ORIGINAL_ARCHITECTURES.contains(&name))
            });
        let original_type =
            config.get("model_type").and_then(|t| t.as_str()) == Some("llava_llama");
        if original_class || original_type {
            return Ok(Some(PromptTokenization::TokenizerImageToken));
        }
        if config.get("architectures").is_some() || config.get("model_type").is_some() {
            return Ok(Some(PromptTokenization::Processor));
        }
        Ok(None)
    }
}

/// The token ids of `prompt` (BOS included) the way `how` says, with
/// `image_token_id` standing for each `<image>`.
pub fn prompt_ids(
    tokenizer: &Tokenizer,
    prompt: &str,
    how: PromptTokenization,
    image_token_id: i64,
) -> Result<Vec<i64>, ModelError> {
    Ok(prompt_ids_with_offsets(tokenizer, prompt, how, image_token_id)?.0)
}

/// [`prompt_ids`] with the byte range of `prompt` each id came from (`0..0`
/// for BOS; an image's id covers its `<image>`).
pub fn prompt_ids_with_offsets(
    tokenizer: &Tokenizer,
    prompt: &str,
    how: PromptTokenization,
    image_token_id: i64,
) -> Result<(Vec<i64>, Vec<Range<usize>>), ModelError> {
    match how {
        PromptTokenization::Processor => Ok(tokenizer.encode_with_offsets(prompt, true)?),
        PromptTokenization::TokenizerImageToken => {
            tokenizer_image_token(tokenizer, prompt, image_token_id)
        }
    }
}

/// LLaVA's `tokenizer_image_token` (llava/mm_utils.py, c121f04), restated:
/// `tokenizer(chunk).input_ids` for each chunk of `prompt.split("<image>")`;
/// if the first chunk starts with BOS, that BOS is kept once and the first
/// id of every chunk dropped; one image id between consecutive chunks.
///
/// `<region>`, RGPT's other placeholder, is not a cut: it is an added
/// special token of the tokenizer (as SpatialRGPT adds its `<mask>`,
/// `llava/model/builder.py` at 16715d4), so the tokenizer splits each chunk
/// at it and the text after it starts without `▁`, as LLaVA-style training
/// with such a token sees it. Cutting there too would put a `▁` after every
/// region that no RGPT-style model was trained with, while the image, a
/// block of hundreds of embeddings, is where LLaVA cuts.
fn tokenizer_image_token(
    tokenizer: &Tokenizer,
    prompt: &str,
    image_token_id: i64,
) -> Result<(Vec<i64>, Vec<Range<usize>>), ModelError> {
    let mut chunks = Vec::new();
    let mut start = 0;
    for chunk in prompt.split(IMAGE_PLACEHOLDER) {
        let (ids, offsets) = tokenizer.encode_with_offsets(chunk, true)?;
        let shifted: Vec<Range<usize>> = offsets
            .into_iter()
            .map(|r| r.start + start..r.end + start)
            .collect();
        chunks.push((start, ids, shifted));
        start += chunk.len() + IMAGE_PLACEHOLDER.len();
    }
    let bos = tokenizer.encode("", true)?.first().copied();
    let mut ids = Vec::new();
    let mut offsets = Vec::new();
    let first = chunks.first().and_then(|(_, ids, _)| ids.first().copied());
    let skip = match (first, bos) {
        (Some(first), Some(bos)) if first == bos => {
            ids.push(bos);
            offsets.push(0..0);
            1
        }
        _ => 0,
    };
    for (i, (chunk_start, chunk_ids, chunk_offsets)) in chunks.into_iter().enumerate() {
        if i > 0 {
            let at = chunk_start - IMAGE_PLACEHOLDER.len();
            ids.push(image_token_id);
            offsets.push(at..chunk_start);
        }
        ids.extend(chunk_ids.into_iter().skip(skip));
        offsets.extend(chunk_offsets.into_iter().skip(skip));
    }
    Ok((ids, offsets))
}
