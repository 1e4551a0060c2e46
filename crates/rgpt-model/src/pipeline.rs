//! Image + regions + text in, text out: what `rgpt generate --image` runs.
//! Loads an RGPT (or LLaVA) directory with its tokenizer and
//! `preprocessor_config.json`, templates the question (adding `<image>` to
//! the first turn when the user left it out), and streams decoded text.
use std::path::Path;

use rgpt_llm::generation::GenerationConfig;
use rgpt_llm::{stream_completion, Completion, Conversation, Template, Tokenizer};
use rgpt_region::RegionSpec;
use rgpt_vision::preprocess::{PreprocessorConfig, RgbImage};
use tch::{nn, Device, Kind};

use crate::rgpt::{RegionGpt, RegionPrompt};
use crate::ModelError;

pub struct RegionGenerator {
    pub model: RegionGpt,
    pub tokenizer: Tokenizer,
    pub preprocessor: PreprocessorConfig,
    region_token_id: i64,
    _vs: nn::VarStore,
}

impl RegionGenerator {
    pub fn load(dir: &Path, device: Device, kind: Kind) -> Result<Self, ModelError> {
        let preprocessor = PreprocessorConfig::from_file(dir.join("preprocessor_config.json"))?;
        let tokenizer = Tokenizer::from_dir(dir)?;
        let (model, vs) = RegionGpt::from_pretrained(dir, device, kind)?;
        let token = &model.section.region_token;
        let region_token_id = tokenizer
            .token_to_id(token)
            .ok_or_else(|| ModelError::Config {
                path: dir.join("tokenizer.json"),
                message: format!("the tokenizer has no `{token}` token for region placeholders"),
            })?;
        Ok(RegionGenerator {
            model,
            tokenizer,
            preprocessor,
            region_token_id,
            _vs: vs,
        })
    }

    /// A generation config with the decoder's EOS and pad ids filled in.
    pub fn default_config(&self) -> GenerationConfig {
        GenerationConfig::for_model(self.model.llava.llm.config(), &self.tokenizer)
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
        if question.trim().is_empty() {
            return Err(rgpt_llm::LlmError::InvalidRequest("the prompt is empty".into()).into());
        }
        let question = if question.contains("<image>") {
            question.to_string()
        } else {
            format!("<image>\n{question}")
        };
        let text = Conversation::single_turn(template, &question).prompt();
        let prompt_ids = self.tokenizer.encode(&text, true)?;
        let processed = self.preprocessor.preprocess(image)?;
        let pixel_values = processed
            .pixel_values
            .unsqueeze(0)
            .to_device(self.model.llava.llm.device());
        let request = RegionPrompt {
            prompt_ids: &prompt_ids,
            pixel_values: &pixel_values,
            transform: &processed.transform,
            regions,
        };
        stream_completion(&self.tokenizer, &prompt_ids, on_text, &mut |on_token| {
            self.model.generate(
                &request,
                self.region_token_id,
                config,
                Some(&self.tokenizer),
                on_token,
            )
        })
    }
}
