//! Image + regions + text in, text out: what `rgpt generate --image` and
//! `rgpt chat` run. Loads an RGPT (or LLaVA) directory with its tokenizer
//! and `preprocessor_config.json`, templates the conversation (adding
//! `<image>` to the first turn when the user left it out), and streams
//! decoded text.
use std::path::Path;

use rgpt_llm::generation::GenerationConfig;
use rgpt_llm::{stream_completion, Completion, Conversation, Role, Template, Tokenizer};
use rgpt_region::RegionSpec;
use rgpt_vision::preprocess::{ImageTransform, PreprocessorConfig, RgbImage};
use tch::{nn, Device, Kind, Tensor};

use crate::llava::{PreparedBatch, SplicedRequest};
use crate::prompt_ids::{prompt_ids, PromptTokenization};
use crate::rgpt::RegionGpt;
use crate::splice::SpliceError;
use crate::ModelError;

pub struct RegionGenerator {
    pub model: RegionGpt,
    pub tokenizer: Tokenizer,
    pub preprocessor: PreprocessorConfig,
    /// How prompts become ids ([`crate::prompt_ids`]): decided from the
    /// checkpoint at load; a caller may set it.
    pub prompt_tokenization: PromptTokenization,
    /// None for a checkpoint whose tokenizer has no region token (a plain
    /// LLaVA): it answers about images, and refuses regions.
    region_token_id: Option<i64>,
    _vs: nn::VarStore,
}

impl RegionGenerator {
    pub fn load(dir: &Path, device: Device, kind: Kind) -> Result<Self, ModelError> {
        let preprocessor = PreprocessorConfig::from_file(dir.join("preprocessor_config.json"))?;
        let prompt_tokenization = PromptTokenization::for_checkpoint(dir)?;
        let tokenizer = prompt_tokenization.tokenizer(dir)?;
        let (model, vs) = RegionGpt::from_pretrained(dir, device, kind)?;
        let region_token_id = model.region_token_id(&tokenizer).ok();
        Ok(RegionGenerator {
            model,
            tokenizer,
            preprocessor,
            prompt_tokenization,
            region_token_id,
            _vs: vs,
        })
    }

    /// The model with the store that owns its weights, and the
    /// preprocessing: for a caller that runs the model itself.
    pub fn into_parts(self) -> ((RegionGpt, nn::VarStore), PreprocessorConfig) {
        ((self.model, self._vs), self.preprocessor)
    }

    /// The id of the region placeholder in this model's prompts, or why
    /// it has none.
    pub fn region_token_id(&self) -> Result<i64, ModelError> {
        match self.region_token_id {
            Some(id) => Ok(id),
            None => self.model.region_token_id(&self.tokenizer),
        }
    }

    /// The ids of a rendered prompt (BOS, `<image>` and `<region>`
    /// placeholders included) as this checkpoint reads them: the one path
    /// of chat, `generate` and evaluation ([`crate::prompt_ids`]).
    pub fn prompt_ids(&self, prompt: &str) -> Result<Vec<i64>, ModelError> {
        prompt_ids(
            &self.tokenizer,
            prompt,
            self.prompt_tokenization,
            self.model.llava.config.image_token_index,
        )
    }

    /// A generation config with the decoder's EOS and pad ids filled in.
    pub fn default_config(&self) -> GenerationConfig {
        GenerationConfig::for_model(self.model.llava.llm.config(), &self.tokenizer)
    }

    /// Encodes `image` for [`RegionChat::with_image`]: preprocessing, the
    /// tower, the refiner and the image tokens.
    pub fn encode_image(&self, image: &RgbImage) -> Result<EncodedImage, ModelError> {
        let mut encoded = self.encode_images(&[image])?;
        Ok(encoded.remove(0))
    }

    /// [`RegionGenerator::encode_image`] for several images in one batch
    /// through the tower and the refiner (one preprocessor gives every
    /// image the same size).
    pub fn encode_images(&self, images: &[&RgbImage]) -> Result<Vec<EncodedImage>, ModelError> {
        let _guard = tch::no_grad_guard();
        if images.is_empty() {
            return Ok(Vec::new());
        }
        let model = &self.model;
        let processed = images
            .iter()
            .map(|image| self.preprocessor.preprocess(image))
            .collect::<Result<Vec<_>, _>>()?;
        let pixels: Vec<&Tensor> = processed.iter().map(|p| &p.pixel_values).collect();
        let pixel_values = Tensor::f_stack(&pixels, 0)?.to_device(model.device());
        let (refined, tokens) = model.encode_image(&pixel_values)?;
        let tokens = model.embed_image_tokens(&tokens);
        Ok(processed
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let (refined, tokens) = (refined.narrow(0, i as i64, 1), tokens.get(i as i64));
                // One image of a batch gets tensors of its own, so that
                // keeping it (a server's cache) does not keep the batch.
                let own = |t: Tensor| if processed.len() > 1 { t.copy() } else { t };
                EncodedImage {
                    refined: own(refined),
                    tokens: own(tokens),
                    transform: p.transform,
                }
            })
            .collect())
    }

    /// Answers `question` about `image` and `regions` (one `<region>` in the
    /// question per region, in order), streaming text to `on_text`.
    pub fn complete(
        &self,
        question: &str,
        image: &RgbImage,
        regions: &[RegionSpec],
        template: Template,
        config: &GenerationConfig,
        on_text: &mut dyn FnMut(&str),
    ) -> Result<Completion, ModelError> {
        let mut chat = RegionChat::new(self, image, template)?;
        for region in regions {
            chat.add_region(region.clone())?;
        }
        chat.ask(question, config, on_text)
    }
}

/// An image as a conversation reads it. Cloning shares the tensors.
#[derive(Debug)]
pub struct EncodedImage {
    /// [1, C, H', W'], pooled for each region.
    pub refined: Tensor,
    /// [tokens, text_hidden]: what `<image>` becomes.
    pub tokens: Tensor,
    /// How original-image pixels map onto the preprocessed image.
    pub transform: ImageTransform,
}

impl Clone for EncodedImage {
    fn clone(&self) -> Self {
        EncodedImage {
            refined: self.refined.shallow_clone(),
            tokens: self.tokens.shallow_clone(),
            transform: self.transform,
        }
    }
}

/// The next question of a conversation as the decoder reads it, ready to
/// be answered ([`RegionChat::prepare`]).
pub struct PreparedQuestion {
    /// The user turn as recorded: `<image>` added to a first turn without it.
    pub question: String,
    pub prompt_ids: Vec<i64>,
    /// The spliced prompt (one row) and the ids the repetition penalty sees.
    pub batch: PreparedBatch,
}

/// A multi-turn conversation about one image (paper Sec. 3.2: the image is
/// given once, at the start, and regions join as the talk goes on). The
/// image is encoded once and each region pooled once, when added; every
/// question then re-reads the whole conversation, answers included.
pub struct RegionChat<'g> {
    generator: &'g RegionGenerator,
    template: Template,
    conversation: Conversation,
    transform: ImageTransform,
    /// [1, C, H', W'], kept to pool regions added later.
    refined: Tensor,
    /// [tokens, text_hidden]: what `<image>` becomes.
    image: Tensor,
    regions: Vec<RegionSpec>,
    /// One pooled feature [1, C] per region, in the order they were added;
    /// each question turns them into embeddings through
    /// [`RegionGpt::embed_regions`], the path training and evaluation take.
    pooled: Vec<Tensor>,
    /// Regions already referred to by a `<region>` in an earlier question.
    regions_asked: usize,
}

impl<'g> RegionChat<'g> {
    /// Starts a conversation about `image`, encoding it once.
    pub fn new(
        generator: &'g RegionGenerator,
        image: &RgbImage,
        template: Template,
    ) -> Result<Self, ModelError> {
        Ok(Self::with_image(
            generator,
            generator.encode_image(image)?,
            template,
        ))
    }

    /// Starts a conversation about an image already encoded (a server
    /// keeps them, so that a follow-up turn does not encode it again).
    pub fn with_image(
        generator: &'g RegionGenerator,
        image: EncodedImage,
        template: Template,
    ) -> Self {
        RegionChat {
            generator,
            template,
            conversation: Conversation::new(template),
            transform: image.transform,
            refined: image.refined,
            image: image.tokens,
            regions: Vec::new(),
            pooled: Vec::new(),
            regions_asked: 0,
        }
    }

    /// Adds a region, checked and pooled now; the next question refers to
    /// it with a `<region>`. Returns its number (0-based, as in errors).
    pub fn add_region(&mut self, region: RegionSpec) -> Result<usize, ModelError> {
        let _guard = tch::no_grad_guard();
        self.generator.region_token_id()?;
        let index = self.regions.len();
        let model = &self.generator.model;
        if let Some(numbered) = model.max_regions().filter(|&max| index >= max) {
            return Err(ModelError::TooManyRegions {
                regions: index + 1,
                numbered,
            });
        }
        let pooled = model
            .region_features(
                &self.refined,
                &self.transform,
                std::slice::from_ref(&region),
            )
            .map_err(|e| match e {
                ModelError::Region { source, .. } => ModelError::Region { index, source },
                other => other,
            })?;
        self.pooled.push(pooled);
        self.regions.push(region);
        Ok(index)
    }

    /// Every region's embedding as the LLM reads it [regions, text_hidden],
    /// numbered within the whole conversation as a one-shot prompt over it
    /// would be.
    pub fn region_embeddings(&self) -> Result<Tensor, ModelError> {
        let _guard = tch::no_grad_guard();
        let model = &self.generator.model;
        let pooled = match self.pooled.as_slice() {
            [] => {
                let channels = self.refined.size()[1];
                Tensor::zeros([0, channels], (self.refined.kind(), self.refined.device()))
            }
            pooled => Tensor::f_cat(pooled, 0)?,
        };
        let count = self.pooled.len() as i64;
        model.embed_regions(&pooled, &[count])?.prompt(0)
    }

    /// Every region added so far.
    pub fn regions(&self) -> &[RegionSpec] {
        &self.regions
    }

    /// Regions added since the last question, each waiting for its `<region>`.
    pub fn pending_regions(&self) -> usize {
        self.regions.len() - self.regions_asked
    }

    /// The conversation so far.
    pub fn conversation(&self) -> &Conversation {
        &self.conversation
    }

    /// Forgets the conversation and its regions; the image stays.
    pub fn reset(&mut self) {
        self.conversation = Conversation::new(self.template);
        self.regions.clear();
        self.pooled.clear();
        self.regions_asked = 0;
    }

    /// Asks the next question, streaming the answer to `on_text`. It must
    /// hold one `<region>` per pending region; `<image>` is added to the
    /// first question when missing. A failed question leaves the
    /// conversation as it was.
    pub fn ask(
        &mut self,
        question: &str,
        config: &GenerationConfig,
        on_text: &mut dyn FnMut(&str),
    ) -> Result<Completion, ModelError> {
        let generator = self.generator;
        let prepared = self.prepare(question)?;
        let completion = stream_completion(
            &generator.tokenizer,
            &prepared.prompt_ids,
            on_text,
            &mut |on_token| {
                generator.model.llava.generate_prepared(
                    &prepared.batch,
                    config,
                    Some(&generator.tokenizer),
                    on_token,
                )
            },
        )?;
        self.record(prepared.question, &completion.text);
        Ok(completion)
    }

    /// The next question (checked as [`RegionChat::ask`] checks it)
    /// templated after the conversation so far, tokenized and spliced with
    /// the image and every region, without answering it: for a caller that
    /// runs generation itself, as the server's continuous batch does.
    pub fn prepare(&self, question: &str) -> Result<PreparedQuestion, ModelError> {
        let _guard = tch::no_grad_guard();
        let generator = self.generator;
        let question = self.next_question(question)?;
        let mut conversation = self.conversation.clone();
        conversation.push(Role::User, Some(question.clone()));
        conversation.push(Role::Assistant, None);
        let prompt_ids = generator.prompt_ids(&conversation.prompt())?;
        let regions = self.region_embeddings()?;
        let request = SplicedRequest {
            prompt_ids: &prompt_ids,
            region_token_id: generator.region_token_id,
            images: std::slice::from_ref(&self.image),
            regions: &regions,
        };
        let batch = generator
            .model
            .llava
            .splice_batch(std::slice::from_ref(&request))?;
        Ok(PreparedQuestion {
            question,
            prompt_ids,
            batch,
        })
    }

    fn record(&mut self, question: String, answer: &str) {
        self.conversation.push(Role::User, Some(question));
        self.conversation
            .push(Role::Assistant, Some(answer.to_string()));
        self.regions_asked = self.regions.len();
    }

    /// Records a turn that was already answered (an earlier turn of a
    /// conversation a client sends whole, as OpenAI's API does): the same
    /// checks as [`RegionChat::ask`], and the regions it names are asked.
    pub fn replay(&mut self, question: &str, answer: &str) -> Result<(), ModelError> {
        let question = self.next_question(question)?;
        self.record(question, answer);
        Ok(())
    }

    /// `question` as the next user turn: not empty, with `<image>` added to
    /// the first turn when missing, and one `<region>` per pending region.
    fn next_question(&self, question: &str) -> Result<String, ModelError> {
        if question.trim().is_empty() {
            return Err(rgpt_llm::LlmError::InvalidRequest("the prompt is empty".into()).into());
        }
        let first = self.conversation.turns().is_empty();
        let question = if !first || question.contains("<image>") {
            question.to_string()
        } else {
            format!("<image>\n{question}")
        };
        let images = question.matches("<image>").count();
        if images != usize::from(first) {
            return Err(SpliceError::ImageCount {
                placeholders: images,
                images: usize::from(first),
            }
            .into());
        }
        let placeholders = question
            .matches(self.generator.model.section.region_token.as_str())
            .count();
        if placeholders != self.pending_regions() {
            return Err(SpliceError::RegionCount {
                placeholders,
                regions: self.pending_regions(),
            }
            .into());
        }
        Ok(question)
    }
}
