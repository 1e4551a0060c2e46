//! Answering with an RGPT: images and regions encoded in one batch, spliced
//! into left-padded prompts, then generation or answer scoring.
use rgpt_llm::generation::{GenerationConfig, GenerationOutput};
use rgpt_region::RegionSpec;
use rgpt_vision::preprocess::ImageTransform;
use tch::Tensor;

use super::RegionGpt;
use crate::llava::{PreparedBatch, SplicedRequest};
use crate::ModelError;

/// One image with its regions, as a user gives them.
pub struct RegionPrompt<'a> {
    /// Token ids with one `<image>` and one `<region>` id per region.
    pub prompt_ids: &'a [i64],
    /// [1, 3, H, W] preprocessed pixels.
    pub pixel_values: &'a Tensor,
    /// How original-image pixels map onto `pixel_values`.
    pub transform: &'a ImageTransform,
    pub regions: &'a [RegionSpec],
}

impl RegionGpt {
    /// Splices image tokens and region embeddings (from
    /// [`RegionGpt::embed_image_tokens`] and [`RegionGpt::embed_regions`])
    /// into the prompt and generates.
    pub fn generate_spliced(
        &self,
        request: &SplicedRequest<'_>,
        config: &GenerationConfig,
        tokenizer: Option<&rgpt_llm::Tokenizer>,
        on_token: &mut dyn FnMut(usize, i64),
    ) -> Result<GenerationOutput, ModelError> {
        self.llava
            .generate_spliced(request, config, tokenizer, on_token)
    }

    /// Generates an answer about the image and its regions.
    pub fn generate(
        &self,
        prompt: &RegionPrompt<'_>,
        region_token_id: i64,
        config: &GenerationConfig,
        tokenizer: Option<&rgpt_llm::Tokenizer>,
        on_token: &mut dyn FnMut(usize, i64),
    ) -> Result<GenerationOutput, ModelError> {
        self.generate_batch(
            std::slice::from_ref(prompt),
            region_token_id,
            config,
            tokenizer,
            on_token,
        )
    }

    /// Answers several prompts in one batch: their images go through the
    /// tower and refiner together, and the spliced prompts are left-padded
    /// into one generation. Every image must have the same preprocessed
    /// size (as one preprocessor gives).
    pub fn generate_batch(
        &self,
        prompts: &[RegionPrompt<'_>],
        region_token_id: i64,
        config: &GenerationConfig,
        tokenizer: Option<&rgpt_llm::Tokenizer>,
        on_token: &mut dyn FnMut(usize, i64),
    ) -> Result<GenerationOutput, ModelError> {
        let batch = self.prepare_batch(prompts, region_token_id)?;
        self.llava
            .generate_prepared(&batch, config, tokenizer, on_token)
    }

    /// Encodes the prompts' images and regions in one batch and splices
    /// them into the left-padded prompts, for
    /// [`Llava::generate_prepared`] and [`Llava::score_prepared`].
    pub fn prepare_batch(
        &self,
        prompts: &[RegionPrompt<'_>],
        region_token_id: i64,
    ) -> Result<PreparedBatch, ModelError> {
        let _guard = tch::no_grad_guard();
        let inputs = self.encode_prompt_batch(prompts)?;
        let requests: Vec<SplicedRequest<'_>> = prompts
            .iter()
            .zip(&inputs)
            .map(|(prompt, (image, regions))| SplicedRequest {
                prompt_ids: prompt.prompt_ids,
                region_token_id: Some(region_token_id),
                images: std::slice::from_ref(image),
                regions,
            })
            .collect();
        self.llava.splice_batch(&requests)
    }

    /// Per prompt, its image tokens [tokens, text_hidden] and region
    /// embeddings [regions, text_hidden], computed in one batch.
    pub fn encode_prompt_batch(
        &self,
        prompts: &[RegionPrompt<'_>],
    ) -> Result<Vec<(Tensor, Tensor)>, ModelError> {
        if prompts.is_empty() {
            return Ok(Vec::new());
        }
        let pixels: Vec<Tensor> = prompts
            .iter()
            .map(|p| {
                // [3, H, W] or [1, 3, H, W], as the preprocessor or a batch gives it.
                let size = p.pixel_values.size();
                let (height, width) = match size[..] {
                    [.., 3, height, width] => (height, width),
                    _ => (-1, -1),
                };
                p.pixel_values.f_view([-1, 3, height, width])
            })
            .collect::<Result<_, _>>()?;
        let pixels = Tensor::f_cat(&pixels, 0)?.f_to_device(self.llava.llm.device())?;
        let (refined, tokens) = self.encode_image(&pixels)?;
        let per_image: Vec<(&ImageTransform, &[RegionSpec])> =
            prompts.iter().map(|p| (p.transform, p.regions)).collect();
        let pooled = self.batch_region_features(&refined, &per_image)?;
        let images = self.embed_image_tokens(&tokens);
        let counts: Vec<i64> = prompts.iter().map(|p| p.regions.len() as i64).collect();
        let regions = self.embed_regions(&pooled, &counts)?;
        (0..regions.len())
            .map(|i| Ok((images.f_get(i as i64)?, regions.prompt(i)?)))
            .collect()
    }

    /// Log-likelihood of each candidate answer (token ids, e.g. a class
    /// name and `</s>`) after the prompt: the prompt runs once and the
    /// candidates in one batch (paper Table 3's closed-set scores).
    pub fn score_answers(
        &self,
        prompt: &RegionPrompt<'_>,
        region_token_id: i64,
        candidates: &[Vec<i64>],
    ) -> Result<Vec<f64>, ModelError> {
        let mut scores =
            self.score_answers_batch(std::slice::from_ref(prompt), region_token_id, candidates)?;
        Ok(scores.pop().unwrap_or_default())
    }

    /// [`RegionGpt::score_answers`] for a batch of prompts: images encoded
    /// together, one left-padded prefill, every (prompt, candidate) pair in
    /// one forward. Returns, per prompt, each candidate's score.
    pub fn score_answers_batch(
        &self,
        prompts: &[RegionPrompt<'_>],
        region_token_id: i64,
        candidates: &[Vec<i64>],
    ) -> Result<Vec<Vec<f64>>, ModelError> {
        let batch = self.prepare_batch(prompts, region_token_id)?;
        self.llava.score_prepared(&batch, candidates)
    }
}
