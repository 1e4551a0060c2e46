//! A chat request checked and taken apart into what the engine runs: the
//! image's bytes, the turns (each user question with the answer it got, the
//! last without), the regions and the sampling settings. Everything that
//! can be checked without the model is checked here, so a bad request is a
//! 400 before it waits in the queue.
use base64::Engine as _;

use crate::api::{ApiError, ApiRegion, ChatRequest, Content, Part, Stop};

/// What a request asks of the engine.
#[derive(Debug)]
pub struct Job {
    /// The image, encoded (PNG, JPEG).
    pub image: Vec<u8>,
    /// Each user turn's text and the assistant's answer to it; the last
    /// turn has none: it is the question to answer.
    pub turns: Vec<(String, Option<String>)>,
    pub regions: Vec<ApiRegion>,
    /// One placeholder and no `regions`: the region is the image's alpha
    /// channel (Describe Anything's convention), checked when it is decoded.
    pub alpha_region: bool,
    pub params: Params,
}

/// Sampling settings; the engine puts them on the model's defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct Params {
    /// 0: greedy.
    pub temperature: f64,
    pub top_p: Option<f64>,
    pub max_tokens: usize,
    pub stop: Vec<String>,
    pub seed: Option<u64>,
    pub ignore_eos: bool,
    pub logprobs: bool,
    /// With `logprobs`: the most likely tokens to report per step.
    pub top_logprobs: usize,
}

/// Limits a request must keep.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_tokens: usize,
    pub max_image_bytes: usize,
    /// The most pixels (width times height) an image may decode to.
    pub max_image_pixels: u64,
    pub max_regions: usize,
    /// Whether an `image_url` may name a file on the server's machine.
    pub allow_local_files: bool,
}

impl Limits {
    /// The largest request body: the image as base64 (4/3 of its bytes)
    /// and a MiB for the text.
    pub fn body_limit(&self) -> usize {
        self.max_image_bytes / 3 * 4 + (1 << 20)
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_tokens: 1024,
            max_image_bytes: 20 << 20,
            max_image_pixels: 40_000_000,
            max_regions: 64,
            allow_local_files: false,
        }
    }
}

impl Job {
    /// Checks `request` against `limits`; `region_token` is the model's
    /// placeholder (`<region>`).
    pub fn from_request(
        request: ChatRequest,
        limits: &Limits,
        region_token: &str,
    ) -> Result<Job, ApiError> {
        let invalid = |param, message: String| Err(ApiError::invalid(Some(param), message));
        let mut image = None;
        let mut turns: Vec<(String, Option<String>)> = Vec::new();
        for (i, message) in request.messages.into_iter().enumerate() {
            let (text, images) = match message.content {
                None => (String::new(), Vec::new()),
                Some(Content::Text(text)) => (text, Vec::new()),
                Some(Content::Parts(parts)) => {
                    let mut texts = Vec::new();
                    let mut images = Vec::new();
                    for part in parts {
                        match part {
                            Part::Text { text } => texts.push(text),
                            Part::ImageUrl { image_url } => images.push(image_url.url),
                        }
                    }
                    (texts.join("\n"), images)
                }
            };
            match message.role.as_str() {
                // The model's own template carries its system prompt.
                "system" | "developer" => continue,
                "user" => {
                    if turns.last().is_some_and(|t| t.1.is_none()) {
                        return invalid(
                            "messages",
                            format!("message {i}: two user messages in a row; answer the first"),
                        );
                    }
                    for url in images {
                        if image.is_some() || !turns.is_empty() {
                            return invalid(
                                "messages",
                                format!(
                                    "message {i}: the image goes in the first user message, \
                                     once (one image per conversation)"
                                ),
                            );
                        }
                        image = Some(image_bytes(&url, limits)?);
                    }
                    turns.push((text, None));
                }
                "assistant" => match turns.last_mut() {
                    Some((_, answer @ None)) => *answer = Some(text),
                    _ => {
                        return invalid(
                            "messages",
                            format!("message {i}: an assistant message must answer a user one"),
                        )
                    }
                },
                other => {
                    return invalid(
                        "messages",
                        format!(
                            "message {i}: unknown role `{other}`; use system, user or assistant"
                        ),
                    )
                }
            }
        }
        match turns.last() {
            None => return invalid("messages", "the conversation has no user message".into()),
            Some((_, Some(_))) => {
                return invalid(
                    "messages",
                    "the conversation ends with an assistant message; end it with the user's \
                     question"
                        .into(),
                )
            }
            Some(_) => {}
        }
        let Some(image) = image else {
            return invalid(
                "messages",
                "no image: give one as an image_url content part (a data: URL) in the first \
                 user message"
                    .into(),
            );
        };
        let placeholders: usize = turns
            .iter()
            .map(|(q, _)| q.matches(region_token).count())
            .sum();
        let alpha_region = request.regions.is_empty() && placeholders == 1;
        if placeholders != request.regions.len() && !alpha_region {
            return invalid(
                "regions",
                format!(
                    "the messages hold {placeholders} {region_token} placeholder(s) but \
                     `regions` has {} region(s); give one region per placeholder, in order",
                    request.regions.len()
                ),
            );
        }
        if request.regions.len() > limits.max_regions {
            return invalid(
                "regions",
                format!(
                    "{} regions; this server takes at most {} per request",
                    request.regions.len(),
                    limits.max_regions
                ),
            );
        }
        let max_tokens = request.max_tokens.unwrap_or(limits.max_tokens.min(256));
        if max_tokens == 0 || max_tokens > limits.max_tokens {
            return invalid(
                "max_tokens",
                format!(
                    "max_tokens {max_tokens}: this server generates 1 to {} tokens per request",
                    limits.max_tokens
                ),
            );
        }
        let temperature = request.temperature.unwrap_or(1.0);
        if !(temperature.is_finite() && (0.0..=2.0).contains(&temperature)) {
            return invalid(
                "temperature",
                format!("temperature {temperature} is not in [0, 2]"),
            );
        }
        if let Some(top_p) = request.top_p {
            if !(top_p > 0.0 && top_p <= 1.0) {
                return invalid("top_p", format!("top_p {top_p} is not in (0, 1]"));
            }
        }
        let top_logprobs = request.top_logprobs.unwrap_or(0);
        if top_logprobs > 20 {
            return invalid(
                "top_logprobs",
                format!("top_logprobs {top_logprobs} is not in [0, 20]"),
            );
        }
        if top_logprobs > 0 && !request.logprobs {
            return invalid(
                "top_logprobs",
                "top_logprobs needs `logprobs: true`".to_string(),
            );
        }
        let stop = match request.stop {
            None => Vec::new(),
            Some(Stop::One(s)) => vec![s],
            Some(Stop::Many(v)) => v,
        };
        Ok(Job {
            image,
            turns,
            regions: request.regions,
            alpha_region,
            params: Params {
                temperature,
                top_p: request.top_p,
                max_tokens,
                stop,
                seed: request.seed,
                ignore_eos: request.ignore_eos,
                logprobs: request.logprobs,
                top_logprobs,
            },
        })
    }
}

/// The bytes of an `image_url`: a `data:[<type>][;base64],<data>` URL,
/// or, when the server allows local files, a `file://` URL or a path on
/// the server's machine. Checked against the size limits before decoding.
fn image_bytes(url: &str, limits: &Limits) -> Result<Vec<u8>, ApiError> {
    let invalid = |message: String| ApiError::invalid(Some("messages"), message);
    let too_large = || {
        invalid(format!(
            "image_url: the image is over this server's {} bytes",
            limits.max_image_bytes
        ))
        .with_status(axum::http::StatusCode::PAYLOAD_TOO_LARGE)
    };
    let bytes = if let Some(rest) = url.strip_prefix("data:") {
        let Some((header, data)) = rest.split_once(',') else {
            return Err(invalid(
                "image_url: a data: URL needs a comma before its data".into(),
            ));
        };
        if !header.ends_with(";base64") {
            return Err(invalid(
                "image_url: the data: URL must be base64 (;base64,)".into(),
            ));
        }
        // base64 grows data by 4/3: refuse before decoding what cannot fit.
        if data.len() / 4 * 3 > limits.max_image_bytes {
            return Err(too_large());
        }
        base64::engine::general_purpose::STANDARD
            .decode(data.trim())
            .map_err(|e| invalid(format!("image_url: the base64 data does not decode: {e}")))?
    } else if limits.allow_local_files {
        let path = std::path::Path::new(url.strip_prefix("file://").unwrap_or(url));
        let size = std::fs::metadata(path)
            .map_err(|e| invalid(format!("image_url: cannot read {}: {e}", path.display())))?
            .len();
        if size > limits.max_image_bytes as u64 {
            return Err(too_large());
        }
        std::fs::read(path)
            .map_err(|e| invalid(format!("image_url: cannot read {}: {e}", path.display())))?
    } else {
        return Err(invalid(
            "image_url: only data: URLs are accepted (data:image/png;base64,...); a server \
             started with --allow-local-files also reads file:// URLs and paths"
                .into(),
        ));
    };
    // The header says the size: refuse a huge image before decoding it.
    let (width, height) = image::ImageReader::new(std::io::Cursor::new(&bytes))
        .with_guessed_format()
        .map_err(|e| invalid(format!("image_url: {e}")))?
        .into_dimensions()
        .map_err(|e| invalid(format!("image_url: not an image this server reads: {e}")))?;
    if u64::from(width) * u64::from(height) > limits.max_image_pixels {
        return Err(invalid(format!(
            "image_url: the image is {width}x{height}, over this server's {} pixels",
            limits.max_image_pixels
        ))
        .with_status(axum::http::StatusCode::PAYLOAD_TOO_LARGE));
    }
    Ok(bytes)
}
