//! A job made ready for the decode batch: its image decoded and encoded
//! (or found in the image cache), its regions read and pooled, its earlier
//! turns replayed and its last question templated, tokenized and spliced,
//! exactly as `rgpt generate` and `rgpt chat` do through [`RegionChat`].
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

use rgpt_llm::generation::{GenerationConfig, Sampling};
use rgpt_model::chat::{EncodedImage, PreparedQuestion, RegionChat, RegionGenerator};
use rgpt_model::ModelError;
use rgpt_region::RegionSpec;

use crate::api::{ApiError, ApiRegion};
use crate::metrics::Metrics;
use crate::request::{Job, Params};

/// The last question of a job, ready to answer, with its sampling.
pub struct Prepared {
    pub question: PreparedQuestion,
    pub config: GenerationConfig,
}

/// An image the engine has encoded, with what requests about it need
/// besides the features.
#[derive(Clone)]
pub struct CachedImage {
    bytes: Vec<u8>,
    encoded: EncodedImage,
    width: u32,
    height: u32,
    /// The region its alpha channel marks, or why there is none.
    alpha: Result<RegionSpec, ApiError>,
}

/// The images of recent requests, by content, so that a follow-up turn
/// about the same image does not run the vision tower again. A hit is the
/// same bytes (hashed, then compared); the least recently used image
/// leaves when it is full.
pub struct ImageCache {
    capacity: usize,
    /// Most recently used last.
    entries: Vec<(u64, CachedImage)>,
}

impl ImageCache {
    pub fn new(capacity: usize) -> Self {
        ImageCache {
            capacity,
            entries: Vec::new(),
        }
    }

    /// The images of several requests: those seen before from the cache,
    /// the rest decoded and encoded together in one batch through the
    /// tower (an image sent twice among them is encoded once).
    pub fn fetch_all(
        &mut self,
        images: &[&[u8]],
        generator: &RegionGenerator,
        metrics: &Metrics,
    ) -> Vec<Result<CachedImage, ApiError>> {
        let keys: Vec<u64> = images
            .iter()
            .map(|bytes| {
                let mut hasher = DefaultHasher::new();
                bytes.hash(&mut hasher);
                hasher.finish()
            })
            .collect();
        let mut results: Vec<Option<Result<CachedImage, ApiError>>> = Vec::new();
        // Decoded images to encode, each with the requests that sent it.
        let mut misses: Vec<(u64, image::DynamicImage, Vec<usize>)> = Vec::new();
        for (i, (&bytes, &key)) in images.iter().zip(&keys).enumerate() {
            results.push(None);
            if let Some(image) = self.get(key, bytes) {
                metrics.image_encoded(true);
                results[i] = Some(Ok(image));
            } else if let Some(miss) = misses
                .iter_mut()
                .find(|(k, _, users)| *k == key && images[users[0]] == bytes)
            {
                metrics.image_encoded(true);
                miss.2.push(i);
            } else {
                match image::load_from_memory(bytes) {
                    Ok(decoded) => misses.push((key, decoded, vec![i])),
                    Err(e) => {
                        results[i] = Some(Err(ApiError::invalid(
                            Some("messages"),
                            format!("image_url: {e}"),
                        )))
                    }
                }
            }
        }
        let rgb: Vec<image::RgbImage> = misses.iter().map(|(_, d, _)| d.to_rgb8()).collect();
        let refs: Vec<&image::RgbImage> = rgb.iter().collect();
        match generator.encode_images(&refs) {
            Ok(encoded) => {
                for ((key, decoded, users), encoded) in misses.into_iter().zip(encoded) {
                    metrics.image_encoded(false);
                    let image = CachedImage {
                        bytes: images[users[0]].to_vec(),
                        encoded,
                        width: decoded.width(),
                        height: decoded.height(),
                        alpha: alpha_region(&decoded),
                    };
                    for &user in &users {
                        results[user] = Some(Ok(image.clone()));
                    }
                    self.insert(key, image);
                }
            }
            Err(e) => {
                let error = model_error(e);
                for user in misses.into_iter().flat_map(|(_, _, users)| users) {
                    results[user] = Some(Err(error.clone()));
                }
            }
        }
        results
            .into_iter()
            .map(|r| r.expect("every image has a result"))
            .collect()
    }

    /// The cached image with these bytes, now the most recently used.
    fn get(&mut self, key: u64, bytes: &[u8]) -> Option<CachedImage> {
        let at = self
            .entries
            .iter()
            .position(|(k, image)| *k == key && image.bytes == bytes)?;
        let entry = self.entries.remove(at);
        let image = entry.1.clone();
        self.entries.push(entry);
        Some(image)
    }

    fn insert(&mut self, key: u64, image: CachedImage) {
        if self.capacity == 0 {
            return;
        }
        if self.entries.len() >= self.capacity {
            self.entries.remove(0);
        }
        self.entries.push((key, image));
    }
}

/// Replays `job`'s conversation about its `image` and prepares its last
/// question.
pub fn prepare(
    generator: &RegionGenerator,
    image: CachedImage,
    job: &Job,
) -> Result<Prepared, ApiError> {
    // Describe Anything's convention: with one placeholder and no
    // `regions`, the region is where the image is opaque.
    let alpha = if job.regions.is_empty() && job.alpha_region {
        Some(image.alpha.clone()?)
    } else {
        None
    };
    let (width, height) = (image.width, image.height);
    let mut chat = RegionChat::with_image(generator, image.encoded, generator.model.template());
    let token = generator.model.section.region_token.as_str();
    let mut regions = job.regions.iter().enumerate();
    let (last, earlier) = job
        .turns
        .split_last()
        .ok_or_else(|| ApiError::internal("no question was asked"))?;
    for (question, reply) in earlier.iter().chain(std::iter::once(last)) {
        if let Some(alpha) = &alpha {
            if question.contains(token) {
                chat.add_region(alpha.clone()).map_err(model_error)?;
            }
        }
        for _ in 0..question.matches(token).count() {
            let Some((index, region)) = regions.next() else {
                break; // counted when the request was read
            };
            let spec = region_spec(region, index, width, height)?;
            chat.add_region(spec).map_err(model_error)?;
        }
        if let Some(reply) = reply {
            chat.replay(question, reply).map_err(model_error)?;
        }
    }
    Ok(Prepared {
        question: chat.prepare(&last.0).map_err(model_error)?,
        config: generation_config(&job.params, generator.default_config()),
    })
}

/// The request's sampling on the model's defaults (EOS, pad), as `rgpt
/// generate` puts its flags on them.
fn generation_config(params: &Params, mut config: GenerationConfig) -> GenerationConfig {
    config.max_new_tokens = params.max_tokens;
    config.sampling = if params.temperature == 0.0 {
        Sampling::Greedy
    } else {
        Sampling::Sample {
            temperature: params.temperature,
            top_k: None,
            top_p: params.top_p,
        }
    };
    config.seed = params.seed;
    config.stop_strings = params.stop.clone();
    config.ignore_eos = params.ignore_eos;
    config.logprobs = params.logprobs;
    config.top_logprobs = params.top_logprobs;
    config
}

fn region_spec(
    region: &ApiRegion,
    index: usize,
    width: u32,
    height: u32,
) -> Result<RegionSpec, ApiError> {
    let invalid =
        |message: String| ApiError::invalid(Some("regions"), format!("region {index}: {message}"));
    Ok(match region {
        ApiRegion::Box([x1, y1, x2, y2]) => RegionSpec::from_xyxy(*x1, *y1, *x2, *y2),
        ApiRegion::Polygon(parts) => RegionSpec::polygon(parts.clone()),
        ApiRegion::Rle(value) => RegionSpec::Rle(
            rgpt_region::coco_json::rle_from_json_value(value)
                .map_err(|e| invalid(e.to_string()))?,
        ),
        ApiRegion::Point(xy) => match xy[..] {
            [x, y] => RegionSpec::Point { x, y, radius: None },
            [x, y, r] => RegionSpec::Point {
                x,
                y,
                radius: Some(r),
            },
            _ => return Err(invalid("a point is [x, y] or [x, y, radius]".into())),
        },
        ApiRegion::MaskPng(data) => {
            use base64::Engine as _;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(data.trim())
                .map_err(|e| invalid(format!("mask_png does not decode as base64: {e}")))?;
            let mask = rgpt_region::Bitmap::from_image_bytes(&bytes, "mask_png")
                .map_err(|e| invalid(e.to_string()))?;
            if (mask.width, mask.height) != (width, height) {
                return Err(invalid(format!(
                    "mask_png is {}x{}, the image {width}x{height}; give a mask of the image's size",
                    mask.width, mask.height
                )));
            }
            RegionSpec::Mask(mask)
        }
    })
}

/// The region an RGBA image's alpha channel marks: its pixels with alpha
/// at least 128.
fn alpha_region(image: &image::DynamicImage) -> Result<RegionSpec, ApiError> {
    let missing = || {
        ApiError::invalid(
            Some("regions"),
            "the question has a <region> but `regions` is empty, and the image has no alpha \
             channel marking one: give `regions`, or an RGBA image opaque on the region and \
             transparent elsewhere",
        )
    };
    if !image.color().has_alpha() {
        return Err(missing());
    }
    let rgba = image.to_rgba8();
    let data: Vec<u8> = rgba.pixels().map(|p| u8::from(p.0[3] >= 128)).collect();
    if data.iter().all(|&v| v == 1) || data.iter().all(|&v| v == 0) {
        return Err(missing());
    }
    Ok(RegionSpec::Mask(rgpt_region::Bitmap {
        height: rgba.height(),
        width: rgba.width(),
        data,
    }))
}

/// The model's complaint about a request, as the API's: what the user can
/// fix is a 400, the rest a 500.
pub fn model_error(error: ModelError) -> ApiError {
    match &error {
        ModelError::Region { .. }
        | ModelError::Pool(_)
        | ModelError::Splice(_)
        | ModelError::TooManyRegions { .. }
        | ModelError::Preprocess(_)
        | ModelError::Llm(
            rgpt_llm::LlmError::InvalidRequest(_) | rgpt_llm::LlmError::PromptTooLong { .. },
        ) => ApiError::invalid(None, error.to_string()),
        _ => ApiError::internal(error.to_string()),
    }
}
