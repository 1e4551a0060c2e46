//! The `<image>` / `<region>` splice (paper Sec. 3.1, Fig. 2): a prompt is
//! text with placeholders; `<image>` becomes the image tokens and each
//! `<region>` the embedding of the next region, in order, at any position.
//! Labels follow the paper's training: loss on the assistant's answers only,
//! so instruction text, image and region positions get [`IGNORE_INDEX`].
use std::ops::Range;

use tch::Tensor;

/// The label transformers and LLaVA use for positions without loss.
pub const IGNORE_INDEX: i64 = -100;

/// One piece of a multimodal prompt, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// Token ids; `target` marks an assistant answer the loss is taken on.
    Text {
        ids: Vec<i64>,
        target: bool,
    },
    Image,
    Region,
}

/// The splice's mistakes in a prompt, each saying how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum SpliceError {
    #[error(
        "the prompt has {placeholders} <region> placeholder(s) but {regions} region(s) were \
         given: use one <region> per region"
    )]
    RegionCount { placeholders: usize, regions: usize },
    #[error(
        "the prompt has {placeholders} <image> placeholder(s) but {images} image(s) were given"
    )]
    ImageCount { placeholders: usize, images: usize },
    #[error("{what} has width {found}, but the decoder's embeddings have width {expected}")]
    Width {
        what: &'static str,
        expected: i64,
        found: i64,
    },
    #[error("the prompt is empty")]
    Empty,
    #[error("torch error while splicing: {0}")]
    Torch(#[from] tch::TchError),
}

/// Splits token ids at the placeholder ids (every text segment non-target).
pub fn segments_from_ids(ids: &[i64], image_token_id: i64, region_token_id: i64) -> Vec<Segment> {
    let targets = vec![false; ids.len()];
    segments_from_labelled_ids(ids, &targets, image_token_id, region_token_id)
}

/// Splits token ids at the placeholder ids, and text wherever `targets`
/// (one flag per id: is it part of an answer?) changes.
pub fn segments_from_labelled_ids(
    ids: &[i64],
    targets: &[bool],
    image_token_id: i64,
    region_token_id: i64,
) -> Vec<Segment> {
    let mut segments = Vec::new();
    let mut text: Vec<i64> = Vec::new();
    let mut text_target = false;
    let flush = |segments: &mut Vec<Segment>, text: &mut Vec<i64>, target: bool| {
        if !text.is_empty() {
            segments.push(Segment::Text {
                ids: std::mem::take(text),
                target,
            });
        }
    };
    for (&id, &target) in ids.iter().zip(targets) {
        let placeholder = if id == image_token_id {
            Some(Segment::Image)
        } else if id == region_token_id {
            Some(Segment::Region)
        } else {
            None
        };
        match placeholder {
            Some(segment) => {
                flush(&mut segments, &mut text, text_target);
                segments.push(segment);
            }
            None => {
                if target != text_target {
                    flush(&mut segments, &mut text, text_target);
                    text_target = target;
                }
                text.push(id);
            }
        }
    }
    flush(&mut segments, &mut text, text_target);
    segments
}

/// One prompt after the splice.
#[derive(Debug)]
pub struct SplicedPrompt {
    /// [seq, hidden] decoder input embeddings.
    pub embeds: Tensor,
    /// Per position, as HF stores labels: the token itself where the loss
    /// is taken (the shift by one happens in the loss), else IGNORE_INDEX.
    pub labels: Vec<i64>,
    /// Where each image's tokens sit.
    pub image_spans: Vec<Range<usize>>,
    /// Where each region's embedding sits, in region order.
    pub region_positions: Vec<usize>,
}

/// Builds the input embeddings of one prompt. `embed_tokens` maps ids
/// [n] to [n, hidden]; `images` holds each image's tokens [tokens, hidden]
/// and `regions` the region embeddings [regions, hidden], both already
/// through the connector.
pub fn splice(
    segments: &[Segment],
    embed_tokens: &dyn Fn(&Tensor) -> Tensor,
    images: &[Tensor],
    regions: &Tensor,
) -> Result<SplicedPrompt, SpliceError> {
    let count = |wanted: &Segment| segments.iter().filter(|s| *s == wanted).count();
    let (image_placeholders, region_placeholders) =
        (count(&Segment::Image), count(&Segment::Region));
    let region_count = regions.size().first().copied().unwrap_or(0) as usize;
    if region_placeholders != region_count {
        return Err(SpliceError::RegionCount {
            placeholders: region_placeholders,
            regions: region_count,
        });
    }
    if image_placeholders != images.len() {
        return Err(SpliceError::ImageCount {
            placeholders: image_placeholders,
            images: images.len(),
        });
    }
    let mut pieces: Vec<Tensor> = Vec::with_capacity(segments.len());
    let mut labels = Vec::new();
    let mut image_spans = Vec::new();
    let mut region_positions = Vec::new();
    let (mut next_image, mut next_region) = (0usize, 0i64);
    for segment in segments {
        let start = labels.len();
        match segment {
            Segment::Text { ids, target } => {
                pieces.push(embed_tokens(
                    &Tensor::from_slice(ids).to_device(regions.device()),
                ));
                labels.extend(
                    ids.iter()
                        .map(|&id| if *target { id } else { IGNORE_INDEX }),
                );
            }
            Segment::Image => {
                let tokens = &images[next_image];
                next_image += 1;
                let n = tokens.size().first().copied().unwrap_or(0) as usize;
                pieces.push(tokens.shallow_clone());
                labels.extend(std::iter::repeat_n(IGNORE_INDEX, n));
                image_spans.push(start..start + n);
            }
            Segment::Region => {
                pieces.push(regions.f_narrow(0, next_region, 1)?);
                next_region += 1;
                labels.push(IGNORE_INDEX);
                region_positions.push(start);
            }
        }
    }
    let Some(first) = pieces.first() else {
        return Err(SpliceError::Empty);
    };
    let hidden = first.size()[1];
    let widths = images
        .iter()
        .map(|tokens| ("an image's tokens", tokens))
        .chain((region_count > 0).then_some(("the region embeddings", regions)));
    for (what, piece) in widths {
        let found = piece.size().get(1).copied().unwrap_or(0);
        if found != hidden {
            return Err(SpliceError::Width {
                what,
                expected: hidden,
                found,
            });
        }
    }
    let kind = first.kind();
    let pieces: Vec<Tensor> = pieces.iter().map(|p| p.to_kind(kind)).collect();
    Ok(SplicedPrompt {
        embeds: Tensor::f_cat(&pieces, 0)?,
        labels,
        image_spans,
        region_positions,
    })
}

/// [batch, longest] i64: each prompt's labels, right-padded with
/// IGNORE_INDEX (what [`pad_batch`] gives, without the embeddings).
pub fn pad_labels(prompts: &[SplicedPrompt], device: tch::Device) -> Tensor {
    let longest = prompts.iter().map(|p| p.labels.len()).max().unwrap_or(0);
    let mut labels = vec![IGNORE_INDEX; prompts.len() * longest];
    for (row, prompt) in labels.chunks_mut(longest.max(1)).zip(prompts) {
        row[..prompt.labels.len()].copy_from_slice(&prompt.labels);
    }
    Tensor::from_slice(&labels)
        .view([prompts.len() as i64, longest as i64])
        .to_device(device)
}

/// A batch of spliced prompts, padded to one length.
#[derive(Debug)]
pub struct PaddedBatch {
    pub embeds: Tensor,      // [batch, seq, hidden]
    pub mask: Tensor,        // [batch, seq] bool, true on real positions
    pub labels: Tensor,      // [batch, seq] i64, IGNORE_INDEX on padding
    pub offsets: Vec<usize>, // where each prompt starts (its left padding)
}

/// Pads prompts with zero embeddings: on the left for generation (so every
/// sequence ends at the last position), on the right for training.
pub fn pad_batch(prompts: &[SplicedPrompt], left: bool) -> Result<PaddedBatch, SpliceError> {
    let longest = prompts.iter().map(|p| p.labels.len()).max().unwrap_or(0) as i64;
    let (mut embeds, mut masks, mut labels, mut offsets) = (vec![], vec![], vec![], vec![]);
    for prompt in prompts {
        let len = prompt.labels.len() as i64;
        let pad = longest - len;
        let (hidden, kind, device) = (
            prompt.embeds.size()[1],
            prompt.embeds.kind(),
            prompt.embeds.device(),
        );
        let zeros = Tensor::f_zeros([pad, hidden], (kind, device))?;
        let mut row_labels = vec![IGNORE_INDEX; pad as usize];
        let mut row_mask = vec![false; pad as usize];
        let (e, offset) = if left {
            row_labels.extend(&prompt.labels);
            row_mask.extend(std::iter::repeat_n(true, len as usize));
            (Tensor::f_cat(&[&zeros, &prompt.embeds], 0)?, pad as usize)
        } else {
            row_labels.splice(0..0, prompt.labels.iter().copied());
            row_mask.splice(0..0, std::iter::repeat_n(true, len as usize));
            (Tensor::f_cat(&[&prompt.embeds, &zeros], 0)?, 0)
        };
        embeds.push(e);
        masks.push(Tensor::from_slice(&row_mask));
        labels.push(Tensor::from_slice(&row_labels));
        offsets.push(offset);
    }
    let device = prompts
        .first()
        .map(|p| p.embeds.device())
        .unwrap_or(tch::Device::Cpu);
    Ok(PaddedBatch {
        embeds: Tensor::f_stack(&embeds, 0)?,
        mask: Tensor::f_stack(&masks, 0)?.f_to_device(device)?,
        labels: Tensor::f_stack(&labels, 0)?.f_to_device(device)?,
        offsets,
    })
}
