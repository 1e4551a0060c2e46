//! Runs a model over evaluation questions ([`crate::items`]), batched:
//! each batch's images go through the tower together and its prompts are
//! generated in one left-padded batch. Classification questions also get
//! a probability for every class name, from the log-likelihood of the name
//! (and `</s>`) after the prompt, normalised over the classes: the scores
//! behind the paper's mAP (Table 3). Answers are appended to a
//! [`PredictionStore`], so a stopped run resumes.
use std::collections::BTreeMap;
use std::path::PathBuf;

use rgpt_llm::generation::GenerationConfig;
use rgpt_llm::{Conversation, Role, Template};
use rgpt_model::chat::RegionGenerator;
use rgpt_model::rgpt::RegionPrompt;
use rgpt_region::RegionSpec;
use rgpt_vision::preprocess::{load_image, ImageTransform};
use tch::Tensor;

use crate::items::{EvalItem, TaskKind};
use crate::predictions::{Prediction, PredictionStore};
use crate::EvalError;

pub struct Evaluator<'g> {
    pub generator: &'g RegionGenerator,
    /// Item `image` paths are relative to this directory.
    pub image_root: PathBuf,
    pub batch_size: usize,
    pub max_new_tokens: usize,
    pub template: Template,
}

/// Class names as the model would write them after `ASSISTANT:`, in
/// token ids, with `</s>`.
fn class_candidates(
    generator: &RegionGenerator,
    classes: &[String],
) -> Result<Vec<Vec<i64>>, EvalError> {
    let tokenizer = &generator.tokenizer;
    let prefix = tokenizer
        .encode("ASSISTANT:", false)
        .map_err(rgpt_model::ModelError::from)?;
    classes
        .iter()
        .map(|name| {
            let full = tokenizer
                .encode(&format!("ASSISTANT: {name}</s>"), false)
                .map_err(rgpt_model::ModelError::from)?;
            match full.strip_prefix(prefix.as_slice()) {
                Some(rest) if !rest.is_empty() => Ok(rest.to_vec()),
                _ => Err(EvalError::Sample {
                    id: name.clone(),
                    message: "the class name does not tokenise after `ASSISTANT:` as a \
                              continuation; check the tokenizer"
                        .into(),
                }),
            }
        })
        .collect()
}

/// A preprocessed image and where its pixels went.
struct Prepared {
    pixel_values: Tensor,
    transform: ImageTransform,
}

impl Evaluator<'_> {
    fn prompt_ids(&self, item: &EvalItem) -> Result<Vec<i64>, EvalError> {
        let mut conversation = Conversation::new(self.template);
        for (question, answer) in &item.history {
            conversation.push(Role::User, Some(question.clone()));
            conversation.push(Role::Assistant, Some(answer.clone()));
        }
        conversation.push(Role::User, Some(item.question.clone()));
        conversation.push(Role::Assistant, None);
        Ok(self.generator.prompt_ids(&conversation.prompt())?)
    }

    fn prepare_image(&self, item: &EvalItem) -> Result<Prepared, EvalError> {
        let relative = item.image.as_deref().ok_or_else(|| EvalError::Sample {
            id: item.id.clone(),
            message: "has no image".into(),
        })?;
        let path = self.image_root.join(relative);
        let rgb = load_image(&path).map_err(|e| EvalError::Image {
            path: path.clone(),
            message: e.to_string(),
        })?;
        let processed =
            self.generator
                .preprocessor
                .preprocess(&rgb)
                .map_err(|e| EvalError::Image {
                    path,
                    message: e.to_string(),
                })?;
        Ok(Prepared {
            pixel_values: processed.pixel_values.unsqueeze(0),
            transform: processed.transform,
        })
    }

    fn region_specs(&self, item: &EvalItem) -> Result<Vec<RegionSpec>, EvalError> {
        item.regions
            .iter()
            .enumerate()
            .map(|(index, region)| {
                region
                    .to_spec(&self.image_root)
                    .map_err(|e| EvalError::Sample {
                        id: item.id.clone(),
                        message: format!("region {index}: {e}"),
                    })
            })
            .collect()
    }

    /// Answers every item `store` does not hold yet; `classes` are the
    /// closed set scored for classification items. `on_progress(done,
    /// total)` after each batch.
    pub fn answer(
        &self,
        items: &[EvalItem],
        classes: &[String],
        store: &mut PredictionStore,
        on_progress: &mut dyn FnMut(usize, usize),
    ) -> Result<(), EvalError> {
        let _guard = tch::no_grad_guard();
        // Questions of similar length share a batch, so little of each
        // left-padded batch is padding; the answers do not depend on it.
        let mut todo: Vec<(Vec<i64>, &EvalItem)> = items
            .iter()
            .filter(|i| store.get(&i.id).is_none())
            .map(|i| Ok((self.prompt_ids(i)?, i)))
            .collect::<Result<_, EvalError>>()?;
        todo.sort_by_key(|(ids, _)| ids.len());
        let total = items.len();
        let mut done = total - todo.len();
        on_progress(done, total);
        let candidates = if classes.is_empty() {
            Vec::new()
        } else {
            class_candidates(self.generator, classes)?
        };
        let config = GenerationConfig {
            max_new_tokens: self.max_new_tokens.max(1),
            ..self.generator.default_config()
        };
        let model = &self.generator.model;
        let region_id = self.generator.region_token_id()?;
        for chunk in todo.chunks(self.batch_size.max(1)) {
            let (ids, batch): (Vec<Vec<i64>>, Vec<&EvalItem>) = chunk.iter().cloned().unzip();
            let images: Vec<Prepared> = batch
                .iter()
                .map(|i| self.prepare_image(i))
                .collect::<Result<_, _>>()?;
            let regions: Vec<Vec<RegionSpec>> = batch
                .iter()
                .map(|i| self.region_specs(i))
                .collect::<Result<_, _>>()?;
            let prompts: Vec<RegionPrompt<'_>> = batch
                .iter()
                .enumerate()
                .map(|(k, _)| RegionPrompt {
                    prompt_ids: &ids[k],
                    pixel_values: &images[k].pixel_values,
                    transform: &images[k].transform,
                    regions: &regions[k],
                })
                .collect();
            // A prompt the model cannot take fails its batch: answer that
            // batch one by one so only the offending question is lost.
            // Images and regions are encoded and spliced once per batch,
            // for the answers and the class scores alike.
            let prepared = model.prepare_batch(&prompts, region_id)?;
            let wants_scores =
                !candidates.is_empty() && batch.iter().any(|i| i.kind == TaskKind::Classification);
            let outputs: Vec<Result<Vec<i64>, String>> = match model.llava.generate_prepared(
                &prepared,
                &config,
                Some(&self.generator.tokenizer),
                &mut |_, _| {},
            ) {
                Ok(output) => output
                    .sequences
                    .into_iter()
                    .map(|s| Ok(s.token_ids))
                    .collect(),
                Err(rgpt_model::ModelError::Llm(_)) if prompts.len() > 1 => prompts
                    .iter()
                    .map(|p| {
                        model
                            .generate(
                                p,
                                region_id,
                                &config,
                                Some(&self.generator.tokenizer),
                                &mut |_, _| {},
                            )
                            .map(|o| {
                                o.sequences
                                    .into_iter()
                                    .next()
                                    .map(|s| s.token_ids)
                                    .unwrap_or_default()
                            })
                            .map_err(|e| e.to_string())
                    })
                    .collect(),
                Err(e @ rgpt_model::ModelError::Llm(_)) => vec![Err(e.to_string())],
                Err(e) => return Err(e.into()),
            };
            // A prompt too long for the batch leaves no batch scores: each
            // prompt is then scored alone below.
            let batch_scores: Option<Vec<Vec<f64>>> = if wants_scores {
                model.llava.score_prepared(&prepared, &candidates).ok()
            } else {
                None
            };
            let mut predictions = Vec::with_capacity(batch.len());
            for (k, (item, output)) in batch.iter().zip(outputs).enumerate() {
                let prediction = match output {
                    Ok(token_ids) => {
                        let answer = self
                            .generator
                            .tokenizer
                            .decode(&token_ids, true)
                            .map_err(rgpt_model::ModelError::from)?
                            .trim()
                            .to_string();
                        let scores = if item.kind == TaskKind::Classification
                            && !candidates.is_empty()
                        {
                            // The batch failed as a whole (a prompt too long):
                            // score this prompt alone.
                            let scored = match &batch_scores {
                                Some(rows) => Ok(rows[k].clone()),
                                None => model.score_answers(&prompts[k], region_id, &candidates),
                            };
                            match scored {
                                Ok(log_likelihoods) => {
                                    Ok(Some(normalise(classes, &log_likelihoods)))
                                }
                                Err(e @ rgpt_model::ModelError::Llm(_)) => Err(e.to_string()),
                                Err(e) => return Err(e.into()),
                            }
                        } else {
                            Ok(None)
                        };
                        let (scores, error) = match scores {
                            Ok(scores) => (scores, None),
                            Err(error) => (None, Some(error)),
                        };
                        Prediction {
                            id: item.id.clone(),
                            answer,
                            scores,
                            error,
                        }
                    }
                    Err(error) => Prediction {
                        id: item.id.clone(),
                        answer: String::new(),
                        scores: None,
                        error: Some(error),
                    },
                };
                predictions.push(prediction);
            }
            store.append(predictions)?;
            done += batch.len();
            on_progress(done, total);
        }
        Ok(())
    }
}

/// Softmax over the classes' log-likelihoods.
fn normalise(classes: &[String], log_likelihoods: &[f64]) -> BTreeMap<String, f64> {
    let top = log_likelihoods
        .iter()
        .copied()
        .fold(f64::NEG_INFINITY, f64::max);
    let total: f64 = log_likelihoods.iter().map(|l| (l - top).exp()).sum();
    classes
        .iter()
        .zip(log_likelihoods)
        .map(|(c, l)| (c.clone(), (l - top).exp() / total))
        .collect()
}
