//! Pre-training a from-scratch vision tower on the synthetic world, the
//! stand-in for the image-text pre-training behind RegionGPT's CLIP (paper
//! Sec. 3.1 takes ViT-L/14 pre-trained and keeps it frozen). With no
//! pretrained weights offline, a fresh ViT must first learn features that
//! survive Mask Pooling: the mean over a region only keeps what every
//! covered cell knows about its object, so each cell has to learn its
//! object's shape, colour, size and place from its context. The objective
//! asks exactly that: the tower's features are mask-pooled inside each
//! object and linear heads read off the object's attributes. The heads are
//! thrown away; only the tower is kept.
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rgpt_data::synth::{ColorName, Position, ShapeKind, SizeClass, SynthImage, SynthWorld};
use rgpt_model::rgpt::RegionGpt;
use rgpt_region::RegionSpec;
use rgpt_vision::preprocess::{ImageTransform, PreprocessorConfig};
use rgpt_vision::refiner::tokens_to_map;
use serde::{Deserialize, Serialize};
use tch::{nn, nn::Module, Kind, Tensor};

use rgpt_train::freeze::{set_trainable, Part};
use rgpt_train::optimizer::{AdamW, AdamWConfig};
use rgpt_train::schedule::cosine_with_warmup;
use rgpt_train::TrainError;

/// How the tower is pre-trained.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TowerPretrainConfig {
    /// Optimiser steps.
    pub steps: u64,
    /// Images per step.
    pub batch_images: usize,
    pub lr: f64,
    pub warmup_ratio: f64,
    /// The world's images `0..train_images` are drawn from, so held-out
    /// images (indices beyond) are never seen.
    #[serde(default)]
    pub train_images: u64,
    #[serde(default)]
    pub seed: u64,
    /// Features are pooled on the tower's grid upsampled (bilinear) by this.
    pub pool_upscale: i64,
}

/// The attributes read off a pooled region, each a closed set.
const HEADS: [(&str, usize); 5] = [
    ("shape", ShapeKind::ALL.len()),
    ("color", ColorName::ALL.len()),
    ("size", SizeClass::ALL.len()),
    ("row", 3),
    ("column", 3),
];

/// The attribute heads: one linear map from a pooled feature per attribute.
struct AttributeHeads {
    heads: Vec<nn::Linear>,
}

impl AttributeHeads {
    fn new(vs: &nn::Path, hidden: i64) -> Self {
        let heads = HEADS
            .iter()
            .map(|(name, classes)| {
                nn::linear(vs / *name, hidden, *classes as i64, Default::default())
            })
            .collect();
        AttributeHeads { heads }
    }

    /// Logits of every head for `pooled` [regions, hidden].
    fn forward(&self, pooled: &Tensor) -> Vec<Tensor> {
        self.heads.iter().map(|h| h.forward(pooled)).collect()
    }
}

/// The class index of each attribute of one object, in [`HEADS`] order.
fn attribute_targets(image: &SynthImage, object: usize) -> [i64; 5] {
    let o = &image.objects[object];
    let index_of = |found: Option<usize>| found.unwrap_or(0) as i64;
    let (row, column) = Position::of(o.center, image.size(), image.size()).cell();
    [
        index_of(ShapeKind::ALL.iter().position(|&s| s == o.shape)),
        index_of(ColorName::ALL.iter().position(|&c| c == o.color)),
        index_of(SizeClass::ALL.iter().position(|&s| s == o.size)),
        row as i64,
        column as i64,
    ]
}

/// One step's figures.
#[derive(Debug, Clone, Serialize)]
pub struct TowerStep {
    pub step: u64,
    pub total_steps: u64,
    pub loss: f64,
    pub lr: f64,
    pub elapsed_s: f64,
}

/// Held-out accuracy of each head after pre-training.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TowerReport {
    pub steps: u64,
    pub seconds: f64,
    /// (attribute, accuracy) in the order of the heads (shape, colour, ...).
    pub accuracy: Vec<(String, f64)>,
}

/// A batch of world images, preprocessed, with every object as a region.
struct TowerBatch {
    pixel_values: Tensor,
    transforms: Vec<ImageTransform>,
    regions: Vec<Vec<RegionSpec>>,
    targets: Tensor,
}

fn tower_batch(
    world: &SynthWorld,
    preprocessor: &PreprocessorConfig,
    indices: &[u64],
) -> Result<TowerBatch, TrainError> {
    let mut pixels = Vec::with_capacity(indices.len());
    let mut transforms = Vec::with_capacity(indices.len());
    let mut regions = Vec::with_capacity(indices.len());
    let mut targets = Vec::new();
    for &index in indices {
        let image = world.generate_image(index);
        let processed = preprocessor
            .preprocess(&image.rgb)
            .map_err(rgpt_model::ModelError::from)?;
        pixels.push(processed.pixel_values);
        transforms.push(processed.transform);
        regions.push(
            image
                .objects
                .iter()
                .map(|o| RegionSpec::Rle(o.mask.clone()))
                .collect(),
        );
        for object in 0..image.objects.len() {
            targets.extend_from_slice(&attribute_targets(&image, object));
        }
    }
    let regions_total = (targets.len() / HEADS.len()) as i64;
    Ok(TowerBatch {
        pixel_values: Tensor::f_stack(&pixels, 0)?,
        transforms,
        regions,
        targets: Tensor::from_slice(&targets).view([regions_total, HEADS.len() as i64]),
    })
}

/// The tower's features of a batch pooled inside each object.
fn pooled_features(
    model: &RegionGpt,
    batch: &TowerBatch,
    upscale: i64,
) -> Result<Tensor, TrainError> {
    let tokens = model.llava.vision_features(&batch.pixel_values)?;
    let side = (tokens.size()[1] as f64).sqrt().round() as i64;
    let mut features =
        tokens_to_map(&tokens, (side, side)).map_err(rgpt_model::ModelError::from)?;
    if upscale > 1 {
        features =
            features.f_upsample_bilinear2d([side * upscale, side * upscale], false, None, None)?;
    }
    let images: Vec<(&ImageTransform, &[RegionSpec])> = batch
        .transforms
        .iter()
        .zip(&batch.regions)
        .map(|(t, r)| (t, r.as_slice()))
        .collect();
    Ok(model.batch_region_features(&features, &images)?)
}

/// Pre-trains `model`'s vision tower (the variables `vision_tower.*` of
/// `vs`) on `world`; every other variable is left as it was, and frozen
/// afterwards as before (the caller sets what trains next). Accuracy is
/// measured on `eval_images` held-out indices.
pub fn pretrain_tower(
    model: &RegionGpt,
    vs: &nn::VarStore,
    world: &SynthWorld,
    preprocessor: &PreprocessorConfig,
    config: &TowerPretrainConfig,
    eval_images: std::ops::Range<u64>,
    on_step: &mut dyn FnMut(&TowerStep),
) -> Result<TowerReport, TrainError> {
    if config.steps == 0 || config.batch_images == 0 || config.train_images == 0 {
        return Err(TrainError::Invalid {
            field: "tower_pretrain",
            message: "steps, batch_images and train_images must be at least 1".into(),
        });
    }
    let started = std::time::Instant::now();
    let trainable = set_trainable(vs, &[Part::Vision]);
    let hidden = model.llava.vision.hidden_size() as i64;
    let head_vs = nn::VarStore::new(vs.device());
    let heads = AttributeHeads::new(&head_vs.root(), hidden);
    let vars = vs.variables();
    let mut params: Vec<(String, Tensor)> = trainable
        .iter()
        .map(|n| (n.clone(), vars[n].shallow_clone()))
        .collect();
    params.extend(head_vs.variables());
    let mut optimizer = AdamW::new(params, AdamWConfig::default());
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    for step in 0..config.steps {
        let indices: Vec<u64> = (0..config.batch_images)
            .map(|_| rng.random_range(0..config.train_images))
            .collect();
        let batch = tower_batch(world, preprocessor, &indices)?;
        optimizer.zero_grad();
        let logits = heads.forward(&pooled_features(model, &batch, config.pool_upscale)?);
        let loss = logits
            .iter()
            .enumerate()
            .map(|(k, l)| l.cross_entropy_for_logits(&batch.targets.select(1, k as i64)))
            .fold(Tensor::zeros([], (Kind::Float, vs.device())), |a, b| a + b);
        let value = loss.double_value(&[]);
        if !value.is_finite() {
            return Err(TrainError::NonFiniteLoss {
                step: step + 1,
                loss: value,
            });
        }
        loss.backward();
        optimizer.clip_grad_norm(1.0);
        let lr = cosine_with_warmup(config.lr, step, config.steps, config.warmup_ratio);
        optimizer.step(lr);
        on_step(&TowerStep {
            step: step + 1,
            total_steps: config.steps,
            loss: value,
            lr,
            elapsed_s: started.elapsed().as_secs_f64(),
        });
    }
    set_trainable(vs, &[]);
    let accuracy = evaluate_heads(
        model,
        &heads,
        world,
        preprocessor,
        eval_images,
        config.pool_upscale,
    )?;
    Ok(TowerReport {
        steps: config.steps,
        seconds: started.elapsed().as_secs_f64(),
        accuracy,
    })
}

fn evaluate_heads(
    model: &RegionGpt,
    heads: &AttributeHeads,
    world: &SynthWorld,
    preprocessor: &PreprocessorConfig,
    images: std::ops::Range<u64>,
    upscale: i64,
) -> Result<Vec<(String, f64)>, TrainError> {
    let _guard = tch::no_grad_guard();
    let mut correct = [0i64; HEADS.len()];
    let mut total = 0i64;
    let indices: Vec<u64> = images.collect();
    for chunk in indices.chunks(64) {
        let batch = tower_batch(world, preprocessor, chunk)?;
        let logits = heads.forward(&pooled_features(model, &batch, upscale)?);
        for (k, l) in logits.iter().enumerate() {
            let hits = l
                .argmax(-1, false)
                .eq_tensor(&batch.targets.select(1, k as i64));
            correct[k] += hits.sum(Kind::Int64).int64_value(&[]);
        }
        total += batch.targets.size()[0];
    }
    Ok(HEADS
        .iter()
        .zip(correct)
        .map(|((name, _), c)| (name.to_string(), c as f64 / total.max(1) as f64))
        .collect())
}
