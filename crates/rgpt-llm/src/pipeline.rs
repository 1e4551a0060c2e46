//! Text in, text out: a loaded model directory (decoder + tokenizer) and one
//! call that templates, tokenizes, generates and streams decoded text. This is
//! what `rgpt generate` runs; other front ends (the server) use it too.
use std::path::Path;

use rgpt_weights::LoadProgress;
use tch::{nn, Device, Kind};

use crate::conversation::{Conversation, Template};
use crate::generation::{generate, GenerationConfig, GenerationOutput, SequenceOutput, Timing};
use crate::tokenizer::{StreamDecoder, Tokenizer};
use crate::{Llama, LlmError};

/// A model directory loaded for generation.
pub struct TextGenerator {
    pub model: Llama,
    pub tokenizer: Tokenizer,
    _vs: nn::VarStore,
}

/// The result of one prompt.
#[derive(Debug, Clone)]
pub struct Completion {
    pub prompt_ids: Vec<i64>,
    pub output: SequenceOutput,
    pub text: String,
    pub timing: Timing,
}

impl TextGenerator {
    pub fn load(
        dir: &Path,
        device: Device,
        kind: Kind,
        on_progress: &mut dyn FnMut(LoadProgress),
    ) -> Result<Self, LlmError> {
        if !dir.is_dir() {
            return Err(LlmError::MissingModelDir(dir.to_path_buf()));
        }
        let tokenizer = Tokenizer::from_dir(dir)?;
        let (model, vs) = Llama::from_pretrained_with_progress(dir, device, kind, on_progress)?;
        Ok(TextGenerator {
            model,
            tokenizer,
            _vs: vs,
        })
    }

    /// A generation config with this model's EOS and pad ids filled in.
    pub fn default_config(&self) -> GenerationConfig {
        GenerationConfig::for_model(self.model.config(), &self.tokenizer)
    }

    /// Renders `prompt` with `template`, generates, and calls `on_text` with
    /// each piece of decoded text as soon as it is complete.
    pub fn complete(
        &self,
        prompt: &str,
        template: Template,
        config: &GenerationConfig,
        on_text: &mut dyn FnMut(&str),
    ) -> Result<Completion, LlmError> {
        if prompt.trim().is_empty() {
            return Err(LlmError::InvalidRequest("the prompt is empty".into()));
        }
        let text = Conversation::single_turn(template, prompt).prompt();
        // Text only: with no `<image>` to cut at, both of rgpt-model's ways
        // (`prompt_ids`) give exactly these ids.
        let prompt_ids = self.tokenizer.encode(&text, true)?;
        let max_positions = self.model.config().max_position_embeddings;
        if prompt_ids.len() > max_positions {
            return Err(LlmError::PromptTooLong {
                prompt_tokens: prompt_ids.len(),
                max_positions,
            });
        }
        stream_completion(&self.tokenizer, &prompt_ids, on_text, &mut |on_token| {
            generate(
                &self.model,
                std::slice::from_ref(&prompt_ids),
                config,
                Some(&self.tokenizer),
                on_token,
            )
        })
    }
}

/// The per-token callback generation drives: (sequence, token id).
pub type OnToken<'a> = &'a mut dyn FnMut(usize, i64);

/// Runs `generate` for one sequence, streaming its decoded text to `on_text`
/// as tokens arrive, and collects the completion. Shared by every front end
/// that answers one prompt (text only, or with an image and regions).
pub fn stream_completion<E: From<LlmError>>(
    tokenizer: &Tokenizer,
    prompt_ids: &[i64],
    on_text: &mut dyn FnMut(&str),
    generate: &mut dyn FnMut(OnToken<'_>) -> Result<GenerationOutput, E>,
) -> Result<Completion, E> {
    let mut stream = StreamDecoder::new();
    let mut stream_error = None;
    let mut on_token = |_: usize, id: i64| match stream.push(tokenizer, id) {
        Ok(Some(delta)) => on_text(&delta),
        Ok(None) => {}
        Err(e) => stream_error = Some(e),
    };
    let result = generate(&mut on_token)?;
    if let Some(e) = stream_error {
        return Err(e.into());
    }
    if let Some(rest) = stream.finish(tokenizer)? {
        on_text(&rest);
    }
    let output = result
        .sequences
        .into_iter()
        .next()
        .ok_or_else(|| LlmError::InvalidRequest("generation returned no sequence".into()))?;
    let text = tokenizer.decode(&output.token_ids, true)?;
    Ok(Completion {
        prompt_ids: prompt_ids.to_vec(),
        output,
        text,
        timing: result.timing,
    })
}
