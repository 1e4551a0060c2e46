//! The training forward (paper Sec. 4): a batch of examples through tower,
//! refiner, pooling and connector at once, spliced, packed into rows, and
//! next-token cross-entropy on the answer tokens only.
use rgpt_llm::Packing;
use rgpt_region::RegionSpec;
use rgpt_vision::preprocess::ImageTransform;
use tch::Tensor;

use super::RegionGpt;
use crate::loss::causal_lm_loss_from_hidden;
use crate::splice::{pad_labels, splice, Segment};
use crate::ModelError;

/// One training example: a conversation split into labelled segments
/// (see [`crate::prompt::conversation_segments`]), its image if it has one,
/// and its regions in `<region>` order.
#[derive(Clone, Copy)]
pub struct TrainingExample<'a> {
    pub segments: &'a [Segment],
    pub image: Option<ExampleImage<'a>>,
    pub regions: &'a [RegionSpec],
    /// Without an image: the token ids of each region's name, in `<region>`
    /// order. Each such region is read as the mean of its name's word
    /// embeddings, the form a from-scratch decoder can learn to look regions up
    /// in before any comes from an image (docs/experiments/demo-journal.md).
    pub region_names: &'a [Vec<i64>],
    /// With an image: the token ids of the name each region should read
    /// as, in `<region>` order, or none. Given, the forward also measures
    /// how far each region's embedding is from that name's code
    /// ([`TrainingOutput::alignment`]).
    pub region_targets: &'a [Vec<i64>],
}

/// A preprocessed image of a training example.
#[derive(Clone, Copy)]
pub struct ExampleImage<'a> {
    /// [3, H, W]; every image of a batch has the same size.
    pub pixel_values: &'a Tensor,
    pub transform: &'a ImageTransform,
}

/// What one training forward gives back.
#[derive(Debug)]
pub struct TrainingOutput {
    /// Scalar f32: mean cross-entropy over the target tokens.
    pub loss: Tensor,
    /// [batch, seq, hidden]: the LLM's final-normed hidden states. The
    /// loss runs the LM head only where it is taken; `llm.logits(&hidden)`
    /// gives every position's logits.
    pub hidden: Tensor,
    /// [batch, seq]: the token where the loss is taken, else IGNORE_INDEX.
    pub labels: Tensor,
    /// How many tokens the loss averaged over.
    pub target_tokens: i64,
    /// Over the regions with `region_targets`: the mean of
    /// `|r - c|^2 / |c|^2`, `r` the connector's output for the region and
    /// `c` its target name's code (the mean of the name's word embeddings,
    /// as a region given by name is read), held fixed; and how many regions
    /// it averaged over. None when no region has a target.
    pub alignment: Option<(Tensor, i64)>,
}

impl RegionGpt {
    /// The training forward (paper Sec. 4): every example's image goes
    /// through tower, refiner and connector in one batch, its regions are
    /// pooled and projected, the splice builds each sequence, sequences are
    /// packed into rows (each still seeing only itself), and the loss is next-token cross-entropy on the answer
    /// tokens only. Gradients reach whatever `vs` leaves trainable.
    pub fn forward_train(
        &self,
        examples: &[TrainingExample<'_>],
    ) -> Result<TrainingOutput, ModelError> {
        if examples.is_empty() {
            return Err(
                rgpt_llm::LlmError::InvalidRequest("an empty training batch".into()).into(),
            );
        }
        let with_image: Vec<&TrainingExample<'_>> =
            examples.iter().filter(|e| e.image.is_some()).collect();
        let (image_embeds, region_embeds) = if with_image.is_empty() {
            (None, None)
        } else {
            let pixels: Vec<Tensor> = with_image
                .iter()
                .filter_map(|e| e.image.as_ref())
                .map(|image| image.pixel_values.shallow_clone())
                .collect();
            let pixels = Tensor::f_stack(&pixels, 0)?.f_to_device(self.llava.llm.device())?;
            let (refined, tokens) = self.encode_image(&pixels)?;
            let per_image: Vec<(&ImageTransform, &[RegionSpec])> = with_image
                .iter()
                .filter_map(|e| e.image.as_ref().map(|image| (image.transform, e.regions)))
                .collect();
            let pooled = self.batch_region_features(&refined, &per_image)?;
            let counts: Vec<i64> = with_image.iter().map(|e| e.regions.len() as i64).collect();
            (
                Some(self.embed_image_tokens(&tokens)),
                Some(self.embed_regions(&pooled, &counts)?),
            )
        };
        let alignment = match &region_embeds {
            Some(regions) => self.region_alignment(&regions.projected, &with_image)?,
            None => None,
        };
        let hidden = self.llava.llm.config().hidden_size as i64;
        let no_regions = Tensor::zeros(
            [0, hidden],
            (self.llava.llm.kind(), self.llava.llm.device()),
        );
        let embed = |ids: &Tensor| self.llava.llm.embed(ids);
        let mut next_image = 0i64;
        let mut spliced = Vec::with_capacity(examples.len());
        for example in examples {
            let (images, regions) = match (&example.image, &image_embeds, &region_embeds) {
                (Some(_), Some(tokens), Some(embedded)) => {
                    let regions = embedded.prompt(next_image as usize)?;
                    let image = tokens.f_get(next_image)?;
                    next_image += 1;
                    (vec![image], regions)
                }
                _ if !example.regions.is_empty() => {
                    return Err(crate::splice::SpliceError::RegionCount {
                        placeholders: 0,
                        regions: example.regions.len(),
                    }
                    .into())
                }
                _ if !example.region_names.is_empty() => (
                    Vec::new(),
                    self.number_regions(self.named_regions(example.region_names)?)?,
                ),
                _ => (Vec::new(), no_regions.shallow_clone()),
            };
            spliced.push(splice(example.segments, &embed, &images, &regions)?);
        }
        // Packed, not padded: the same result at every real position
        // without the padding's work (rgpt_llm::packing).
        let llm = &self.llava.llm;
        let lengths: Vec<usize> = spliced.iter().map(|p| p.labels.len()).collect();
        let packing = Packing::plan(&lengths, llm.config())?;
        let embeds: Vec<Tensor> = spliced.iter().map(|p| p.embeds.shallow_clone()).collect();
        let packed = llm.forward_packed(&packing.pack(&embeds)?, &packing)?;
        let hidden = packing.unpack(&packed)?;
        let labels = pad_labels(&spliced, llm.device());
        let (loss, target_tokens) = causal_lm_loss_from_hidden(&hidden, &labels, |h| llm.logits(h));
        Ok(TrainingOutput {
            loss,
            hidden,
            labels,
            target_tokens,
            alignment,
        })
    }
}
