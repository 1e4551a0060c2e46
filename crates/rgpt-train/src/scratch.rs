//! A small RGPT built from nothing, for machines without pretrained weights
//! (the demo): a CLIP-layout ViT, the refiner, the connector and a LLaMA
//! decoder, all freshly initialised as transformers initialises them
//! (normal(0, 0.02) matrices and embeddings, unit norms, zero biases), and
//! a tokenizer (BPE or word-level) trained on the run's own conversations.
use std::collections::HashMap;
use std::path::Path;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

use rgpt_data::format::read_samples;
use rgpt_llm::conversation::Role;
use rgpt_llm::{Conversation, Template, Tokenizer};
use rgpt_model::llava::LlavaConfig;
use rgpt_model::rgpt::{RegionGpt, RegionIndexScale, RgptConfig, RgptExtensions, RgptSection};
use rgpt_region::MaskPoolKind;
use rgpt_vision::preprocess::PreprocessorConfig;
use rgpt_vision::refiner::RefinerKind;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tch::{nn, Device};

use crate::TrainError;

/// The shape of a from-scratch model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TinySpec {
    #[serde(default = "d_image")]
    pub image_size: usize,
    #[serde(default = "d_patch")]
    pub patch_size: usize,
    #[serde(default = "d_vision_hidden")]
    pub vision_hidden: usize,
    #[serde(default = "d_layers")]
    pub vision_layers: usize,
    #[serde(default = "d_heads")]
    pub vision_heads: usize,
    #[serde(default = "d_hidden")]
    pub hidden: usize,
    #[serde(default = "d_layers")]
    pub layers: usize,
    #[serde(default = "d_heads")]
    pub heads: usize,
    #[serde(default = "d_intermediate")]
    pub intermediate: usize,
    /// Upper bound of the trained tokenizer's vocabulary.
    #[serde(default = "d_vocab")]
    pub vocab_size: usize,
    /// The refiner (`deconv`, the reference's, by default; the demo names
    /// `deconv_no_final_gelu`, the variant it was tuned with).
    #[serde(default)]
    pub refiner: RefinerKind,
    /// How regions are pooled, recorded as `rgpt.mask_pool`: `reference`
    /// (default, RegionGPT's reference) or `area` (the covered fraction of
    /// each cell, which the demo is tuned with).
    #[serde(default)]
    pub mask_pool: MaskPoolKind,
    /// Channels of the tower's convolutional stem (see
    /// `ClipVisionConfig::conv_stem`; one per halving of `patch_size`);
    /// empty for CLIP's plain patch projection.
    #[serde(default)]
    pub conv_stem: Vec<usize>,
    /// `[height, width]` of the image-token grid the refined map is pooled
    /// to; default the tower's patch grid. Fewer image tokens make every
    /// training sequence shorter.
    #[serde(default)]
    pub image_token_grid: Option<[i64; 2]>,
    /// One matrix for the word embeddings and the LM head (HF's
    /// `tie_word_embeddings`). The demo's decoder learns to name regions sooner
    /// with it (docs/experiments/demo-journal.md): the words it must output are
    /// then the same vectors it reads.
    #[serde(default)]
    pub tie_embeddings: bool,
    /// The conversation template it is trained and asked in (rgpt-llm's
    /// `Template` names), recorded in its config as `rgpt.conversation`.
    /// Default `vicuna_v1`, the paper's; the demo drops the system prompt,
    /// which a model trained from nothing does not need
    /// (docs/experiments/demo-journal.md).
    #[serde(default = "d_conversation")]
    pub conversation: String,
    /// Number the regions of every prompt: the k-th region gets the word
    /// embedding of the token `▁[k` added, the number as the REC answers write
    /// it (`Region [k].`), recorded as `rgpt.region_index_tokens` for every k
    /// the tokenizer has such a token for. Off by default, as in the paper's
    /// model. In a toy decoder it made REC learnable sooner and to 97-99%
    /// instead of about 85%; in the demo it has not helped yet
    /// (docs/experiments/demo-journal.md, eighth round).
    #[serde(default)]
    pub number_regions: bool,
    /// With `number_regions`: `embedding` adds the number's word embedding as
    /// it is; `region` rescales it to each region embedding's norm, so the
    /// connector's larger output does not drown it
    /// (docs/experiments/demo-journal.md, tenth round). Recorded as
    /// `rgpt.region_index_scale`.
    #[serde(default)]
    pub number_scale: RegionIndexScale,
    /// Train the tokenizer with punctuation split off words (see
    /// `rgpt_llm::Tokenizer::train_bpe`), so a quoted expression's words are
    /// the tokens the regions' names and the answers use. Numbers then come
    /// apart from their brackets, and `number_regions` numbers with the
    /// bare `1`, `2`, ... Off by default.
    #[serde(default)]
    pub split_punctuation: bool,
    /// The tokenizer trained on the run's conversations: `bpe` (default,
    /// at most `vocab_size` ids) or `words` (one id per word and punctuation
    /// mark, see `rgpt_llm::Tokenizer::train_word_level`; `vocab_size` and
    /// `split_punctuation` then play no part).
    #[serde(default)]
    pub tokenizer: TokenizerKind,
}

impl TinySpec {
    /// Checks settings that contradict each other, naming the field, so a
    /// run refuses them before any work starts.
    pub fn validate(&self) -> Result<(), TrainError> {
        if self.tokenizer == TokenizerKind::Words && self.split_punctuation {
            return Err(TrainError::Invalid {
                field: "model.split_punctuation",
                message: "applies to the bpe tokenizer only (words always splits punctuation \
                          off); remove it"
                    .into(),
            });
        }
        Ok(())
    }
}

/// How a tiny model's tokenizer is trained (`TinySpec::tokenizer`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenizerKind {
    /// LLaMA-style BPE, as every real checkpoint's.
    #[default]
    Bpe,
    /// One id per word: a closed world's vocabulary and nothing more. The
    /// placeholders swallow the spaces around them.
    Words,
}

fn d_image() -> usize {
    64
}
fn d_patch() -> usize {
    8
}
fn d_vision_hidden() -> usize {
    128
}
fn d_layers() -> usize {
    4
}
fn d_heads() -> usize {
    4
}
fn d_hidden() -> usize {
    256
}
fn d_intermediate() -> usize {
    688
}
fn d_vocab() -> usize {
    2000
}
fn d_conversation() -> String {
    Template::VicunaV1.name().into()
}

/// Every text a conversation file's samples put in front of the model, in
/// the template it will see them in.
fn corpus(files: &[&Path], template: Template) -> Result<Vec<String>, TrainError> {
    let mut texts = vec![Conversation::single_turn(template, "").prompt()];
    for file in files {
        for sample in read_samples(file)? {
            let sample = sample?;
            let mut conversation = Conversation::new(template);
            for turn in &sample.conversations {
                let role = match turn.from {
                    rgpt_data::Speaker::Human => Role::User,
                    rgpt_data::Speaker::Gpt => Role::Assistant,
                };
                conversation.push(role, Some(turn.value.clone()));
            }
            texts.push(conversation.prompt());
        }
    }
    Ok(texts)
}

/// The tokenizer `spec` names, trained on every text of `data_files` (in
/// the template the model will see), with `<image>` and `<region>` added.
pub fn train_tokenizer(spec: &TinySpec, data_files: &[&Path]) -> Result<Tokenizer, TrainError> {
    let template =
        Template::from_name(&spec.conversation).map_err(|message| TrainError::Invalid {
            field: "model.conversation",
            message,
        })?;
    spec.validate()?;
    let texts = corpus(data_files, template)?;
    let placeholders = ["<image>", "<region>"];
    let tokenizer = match spec.tokenizer {
        TokenizerKind::Bpe => {
            Tokenizer::train_bpe(texts.iter(), spec.vocab_size, spec.split_punctuation).and_then(
                |mut tokenizer| {
                    tokenizer.add_special_tokens(&placeholders)?;
                    Ok(tokenizer)
                },
            )
        }
        TokenizerKind::Words => Tokenizer::train_word_level(texts.iter(), &placeholders),
    }
    .map_err(rgpt_model::ModelError::from)?;
    Ok(tokenizer)
}

/// The ids of the numbers as the REC answers write them, for as long as the
/// tokenizer has them: `▁[1`, `▁[2`, ... (BPE learns one for every number
/// the answers use), or, in a tokenizer that splits punctuation off and so
/// has no `▁[1`, the bare `1`, `2`, ...; `None` when it has neither.
fn region_number_tokens(tokenizer: &Tokenizer) -> Option<Vec<i64>> {
    let numbers = |form: fn(usize) -> String| -> Option<Vec<i64>> {
        let ids: Vec<i64> = (1..)
            .map_while(|k| tokenizer.token_to_id(&form(k)))
            .collect();
        (!ids.is_empty()).then_some(ids)
    };
    numbers(|k| format!("\u{2581}[{k}")).or_else(|| numbers(|k| k.to_string()))
}

/// Builds the model, its VarStore (initialised from `seed` alone, nothing
/// frozen), its tokenizer (trained on `data_files`) and its preprocessing.
pub fn build_tiny(
    spec: &TinySpec,
    data_files: &[&Path],
    seed: u64,
) -> Result<(RegionGpt, nn::VarStore, Tokenizer, PreprocessorConfig), TrainError> {
    let tokenizer = train_tokenizer(spec, data_files)?;
    let (model, vs, preprocessor) = build_tiny_with_tokenizer(spec, &tokenizer, seed)?;
    Ok((model, vs, tokenizer, preprocessor))
}

/// Builds the model for an existing tokenizer (one holding `<image>` and
/// `<region>`), with its VarStore (initialised from `seed` alone, nothing
/// frozen) and its preprocessing.
pub fn build_tiny_with_tokenizer(
    spec: &TinySpec,
    tokenizer: &Tokenizer,
    seed: u64,
) -> Result<(RegionGpt, nn::VarStore, PreprocessorConfig), TrainError> {
    let invalid = |message: String| TrainError::Invalid {
        field: "model.tiny",
        message,
    };
    if spec.image_size % spec.patch_size != 0 {
        return Err(invalid(format!(
            "image_size {} is not a multiple of patch_size {}",
            spec.image_size, spec.patch_size
        )));
    }
    let image_token_index = tokenizer
        .token_to_id("<image>")
        .ok_or_else(|| invalid("the tokenizer has no `<image>` token".into()))?;
    let region_index_tokens = if spec.number_regions {
        region_number_tokens(tokenizer).ok_or_else(|| {
            invalid(
                "`number_regions` needs a tokenizer with the token `▁[1` or `1` (as in \
                 `Region [1]`); train it on REC conversations or turn `number_regions` off"
                    .into(),
            )
        })?
    } else {
        Vec::new()
    };
    let vision_config = json!({
        "model_type": "clip_vision_model", "hidden_size": spec.vision_hidden,
        "intermediate_size": spec.vision_hidden * 4, "num_hidden_layers": spec.vision_layers,
        "num_attention_heads": spec.vision_heads, "image_size": spec.image_size,
        "patch_size": spec.patch_size, "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5,
        "conv_stem": spec.conv_stem,
    });
    let text_config = json!({
        "model_type": "llama", "hidden_size": spec.hidden, "intermediate_size": spec.intermediate,
        "num_hidden_layers": spec.layers, "num_attention_heads": spec.heads,
        "num_key_value_heads": spec.heads, "vocab_size": tokenizer.vocab_size(),
        "max_position_embeddings": 1024, "rms_norm_eps": 1e-6, "bos_token_id": 1,
        "eos_token_id": 2, "tie_word_embeddings": spec.tie_embeddings, "rope_theta": 10000.0,
    });
    let config = RgptConfig {
        llava: LlavaConfig {
            model_type: Some("rgpt".into()),
            vision_config,
            text_config,
            image_token_index,
            vision_feature_layer: -1,
            vision_feature_select_strategy: "default".into(),
            projector_hidden_act: "gelu".into(),
            multimodal_projector_bias: true,
        },
        rgpt: Some(RgptSection {
            refiner: spec.refiner,
            mask_pool: spec.mask_pool,
            image_token_grid: spec.image_token_grid.map(|[h, w]| (h, w)),
            region_token: "<region>".into(),
            conversation: spec.conversation.clone(),
            extensions: RgptExtensions {
                region_index_tokens,
                region_index_scale: spec.number_scale,
            },
        }),
    };
    let vs = nn::VarStore::new(Device::Cpu);
    let model = RegionGpt::new(&vs.root(), &config, Path::new("model.tiny"))?;
    initialise(&vs, seed);
    let size = spec.image_size as u32;
    let preprocessor = PreprocessorConfig::from_json_str(
        &json!({
            "image_processor_type": "CLIPImageProcessor",
            "size": {"shortest_edge": size}, "crop_size": {"height": size, "width": size},
            "image_aspect_ratio": "pad",
        })
        .to_string(),
    )
    .map_err(|e| invalid(e.to_string()))?;
    Ok((model, vs, preprocessor))
}

/// transformers' `_init_weights` for CLIP and LLaMA, by variable name, and
/// PyTorch's default (kaiming-uniform, `U(+-1/sqrt(fan_in))`) for the
/// refiner's and the connector's layers, all drawn from a generator seeded
/// with `seed` alone. Not libtorch's global generator: tests in one process
/// build models on parallel threads, and anything else drawing from the
/// global stream would change the weights, so a seed would not name one set.
pub fn initialise(vs: &nn::VarStore, seed: u64) {
    let _guard = tch::no_grad_guard();
    // By name: `variables()` is a HashMap whose order changes from one
    // process to the next, and each variable draws its share of the seeded
    // stream in turn, so any other order makes the seed meaningless.
    let mut vars: Vec<(String, tch::Tensor)> = vs.variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    let shapes: HashMap<String, Vec<i64>> = vars
        .iter()
        .map(|(name, var)| (name.clone(), var.size()))
        .collect();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for (name, mut var) in vars {
        let is_norm = name.contains("norm") || name.contains("layrnorm");
        let fresh_module =
            name.starts_with("feature_refiner.") || name.starts_with("multi_modal_projector.");
        let values = if is_norm {
            let _ = if name.ends_with(".weight") {
                var.fill_(1.0)
            } else {
                var.zero_()
            };
            continue;
        } else if fresh_module {
            // A bias takes its weight's bound, as nn.Linear and
            // nn.ConvTranspose2d draw it; fan_in is the product of the
            // weight's dimensions after the first for both ([out, in] and
            // [in, out, kh, kw]).
            let weight = name
                .strip_suffix(".bias")
                .map(|stem| format!("{stem}.weight"));
            let Some(shape) = shapes.get(weight.as_ref().unwrap_or(&name)) else {
                continue;
            };
            let fan_in: i64 = shape[1..].iter().product();
            let bound = 1.0 / (fan_in.max(1) as f64).sqrt();
            draw(&mut rng, var.numel(), |rng| rng.random_range(-bound..bound))
        } else if name.ends_with(".bias") {
            let _ = var.zero_();
            continue;
        } else if name.contains(".conv_stem.") && name.ends_with(".weight") {
            // He initialisation: GELU convs from scratch need unit-scale
            // activations, which 0.02 would shrink layer by layer.
            let fan_in: i64 = var.size()[1..].iter().product();
            let std = (2.0 / fan_in as f64).sqrt();
            draw(&mut rng, var.numel(), |rng| {
                std * rng.sample::<f64, _>(StandardNormal)
            })
        } else {
            draw(&mut rng, var.numel(), |rng| {
                0.02 * rng.sample::<f64, _>(StandardNormal)
            })
        };
        let drawn = tch::Tensor::from_slice(&values).view(var.size().as_slice());
        var.copy_(&drawn.to_kind(var.kind()).to_device(var.device()));
    }
}

fn draw(rng: &mut ChaCha8Rng, n: usize, mut value: impl FnMut(&mut ChaCha8Rng) -> f64) -> Vec<f32> {
    (0..n).map(|_| value(rng) as f32).collect()
}
