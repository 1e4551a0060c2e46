//! From a conversation to the segments the splice takes, with the paper's
//! training targets (Sec. 4: loss on the assistant's answers only). Answer
//! tokens are found from the tokenizer's offsets into the rendered prompt,
//! not by re-tokenising prefixes and counting as LLaVA's `preprocess_v1`
//! does, so the split is exact for any tokenizer: a token is a target when
//! its text overlaps an answer (the answer's leading-space token included).
use rgpt_llm::{Conversation, Tokenizer};

use crate::prompt_ids::{prompt_ids_with_offsets, PromptTokenization};
use crate::splice::{segments_from_labelled_ids, Segment};
use crate::ModelError;

/// Placeholder token ids of a model's prompts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placeholders {
    pub image: i64,
    pub region: i64,
}

/// Tokenises `conversation` (BOS added) and splits it into segments whose
/// text is marked as target where it belongs to an assistant answer.
/// The prompt is tokenized the processor's way (RGPT's checkpoints); see
/// [`conversation_segments_with`] for the other.
pub fn conversation_segments(
    tokenizer: &Tokenizer,
    conversation: &Conversation,
    placeholders: Placeholders,
) -> Result<Vec<Segment>, ModelError> {
    conversation_segments_with(
        tokenizer,
        conversation,
        placeholders,
        PromptTokenization::Processor,
    )
}

/// [`conversation_segments`] with the prompt tokenized as `how` says
/// ([`crate::prompt_ids`]), as a checkpoint trained the original LLaVA way
/// reads its prompts.
pub fn conversation_segments_with(
    tokenizer: &Tokenizer,
    conversation: &Conversation,
    placeholders: Placeholders,
    how: PromptTokenization,
) -> Result<Vec<Segment>, ModelError> {
    let rendered = conversation.render();
    let (ids, offsets) =
        prompt_ids_with_offsets(tokenizer, &rendered.text, how, placeholders.image)?;
    let targets: Vec<bool> = offsets
        .iter()
        .map(|token| {
            token.start < token.end
                && rendered
                    .answer_spans
                    .iter()
                    .any(|answer| token.start < answer.end && token.end > answer.start)
        })
        .collect();
    Ok(segments_from_labelled_ids(
        &ids,
        &targets,
        placeholders.image,
        placeholders.region,
    ))
}
