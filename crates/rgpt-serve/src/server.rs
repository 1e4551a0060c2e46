//! The HTTP side (axum on tokio): routes, request reading and the shape of
//! answers, whole or streamed as server-sent events in OpenAI's chunk
//! format. The model runs on the engine's thread; handlers only wait on
//! its events.
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::middleware;
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_stream::StreamExt;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::api::{
    ApiError, AssistantMessage, ChatCompletion, ChatRequest, Choice, Chunk, ChunkChoice, Delta,
    Logprobs,
};
use crate::engine::{Engine, Event};
use crate::metrics::Metrics;
use crate::request::{Job, Limits};

/// What the handlers share.
pub struct ServerState {
    pub engine: Engine,
    /// The name `/v1/models` lists and answers carry.
    pub model_name: String,
    pub limits: Limits,
    /// Shared with the engine, which counts tokens, queue and latency.
    pub metrics: Arc<Metrics>,
    /// Required as `Authorization: Bearer KEY` on `/v1/` routes when set.
    pub api_key: Option<String>,
    /// The longest a chat request may take, queueing included; past it the
    /// request ends (504, or the stream stops with an error) and its
    /// generation is cancelled.
    pub request_timeout: Duration,
    /// Origins whose pages may call the API from a browser (CORS); none
    /// by default, `*` for any.
    pub cors_origins: Vec<String>,
}

/// The API's routes over `state`.
pub fn router(state: Arc<ServerState>) -> Router {
    let body_limit = state.limits.body_limit();
    let api = Router::new()
        .route("/v1/models", get(models))
        .route("/v1/chat/completions", post(chat_completions))
        .layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            authorize,
        ));
    let cors = cors(&state.cors_origins);
    let router = Router::new()
        .merge(crate::page::routes())
        .route("/health", get(|| async { "ok" }))
        .route(
            "/metrics",
            get(|State(state): State<Arc<ServerState>>| async move { state.metrics.render() }),
        )
        .merge(api)
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state);
    match cors {
        Some(cors) => router.layer(cors),
        None => router,
    }
}

/// CORS for `origins`: none (same-origin only) when empty.
fn cors(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let layer = CorsLayer::new()
        .allow_methods([axum::http::Method::GET, axum::http::Method::POST])
        .allow_headers([
            axum::http::header::AUTHORIZATION,
            axum::http::header::CONTENT_TYPE,
        ]);
    Some(if origins.iter().any(|o| o == "*") {
        layer.allow_origin(AllowOrigin::any())
    } else {
        layer.allow_origin(AllowOrigin::list(
            origins.iter().filter_map(|o| o.parse().ok()),
        ))
    })
}

/// Refuses `/v1/` requests without the server's API key, when it has one.
async fn authorize(
    State(state): State<Arc<ServerState>>,
    request: axum::extract::Request,
    next: middleware::Next,
) -> Response {
    if let Some(key) = &state.api_key {
        let given = request
            .headers()
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if given != Some(key.as_str()) {
            let error = ApiError {
                status: axum::http::StatusCode::UNAUTHORIZED,
                message: "a valid API key is needed: send `Authorization: Bearer KEY`".into(),
                kind: "invalid_request_error",
                param: None,
            };
            return error.into_response();
        }
    }
    next.run(request).await
}

async fn models(State(state): State<Arc<ServerState>>) -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "object": "list",
        "data": [{"id": state.model_name, "object": "model", "created": 0, "owned_by": "rgpt"}],
    }))
}

async fn chat_completions(
    State(state): State<Arc<ServerState>>,
    request: Result<Json<ChatRequest>, JsonRejection>,
) -> Response {
    let metrics = Arc::clone(&state.metrics);
    let response = match answer(state, request).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    };
    metrics.request(response.status().as_u16());
    response
}

async fn answer(
    state: Arc<ServerState>,
    request: Result<Json<ChatRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let body_limit = state.limits.body_limit();
    let Json(request) = request.map_err(|rejection| {
        let message = if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            format!(
                "the request body is over this server's {body_limit} bytes: send a smaller \
                 image (the server takes images up to --max-image-bytes)"
            )
        } else {
            format!("the body is not a chat request: {}", rejection.body_text())
        };
        ApiError::invalid(None, message).with_status(rejection.status())
    })?;
    if let Some(model) = &request.model {
        if model != &state.model_name {
            return Err(ApiError::invalid(
                Some("model"),
                format!(
                    "unknown model `{model}`; this server serves `{}`",
                    state.model_name
                ),
            )
            .with_status(axum::http::StatusCode::NOT_FOUND));
        }
    }
    let stream = request.stream;
    let job = Job::from_request(request, &state.limits, &state.engine.region_token)?;
    let (sender, events) = unbounded_channel();
    let deadline = tokio::time::Instant::now() + state.request_timeout;
    state.engine.submit(job, sender)?;
    let id = format!("chatcmpl-{}", unique());
    let created = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let timed_out = || {
        ApiError::internal(format!(
            "the request took longer than this server's limit of {:.1} s (--request-timeout); \
             its generation was stopped",
            state.request_timeout.as_secs_f64()
        ))
        .with_status(axum::http::StatusCode::GATEWAY_TIMEOUT)
    };
    if stream {
        let stream = stream_answer(
            events,
            id,
            created,
            state.model_name.clone(),
            deadline,
            timed_out(),
        );
        Ok(stream.into_response())
    } else {
        // Past the deadline the receiver is dropped, which cancels the
        // generation at its next token.
        let answer = whole_answer(events, id, created, state.model_name.clone());
        match tokio::time::timeout_at(deadline, answer).await {
            Ok(answer) => answer.map(|c| Json(c).into_response()),
            Err(_) => Err(timed_out()),
        }
    }
}

/// Collects the engine's events into one completion.
async fn whole_answer(
    mut events: UnboundedReceiver<Event>,
    id: String,
    created: u64,
    model: String,
) -> Result<ChatCompletion, ApiError> {
    let mut content = String::new();
    let mut all_logprobs: Option<Logprobs> = None;
    while let Some(event) = events.recv().await {
        match event {
            Event::Text { text, logprobs } => {
                content.push_str(&text);
                if let Some(logprobs) = logprobs {
                    all_logprobs
                        .get_or_insert_with(Logprobs::default)
                        .content
                        .extend(logprobs.content);
                }
            }
            Event::Failed(error) => return Err(error),
            Event::Done {
                usage,
                finish_reason,
            } => {
                return Ok(ChatCompletion {
                    id,
                    object: "chat.completion",
                    created,
                    model,
                    choices: vec![Choice {
                        index: 0,
                        message: AssistantMessage {
                            role: "assistant",
                            content,
                        },
                        logprobs: all_logprobs,
                        finish_reason,
                    }],
                    usage,
                })
            }
        }
    }
    Err(ApiError::internal("the engine stopped before answering"))
}

/// The engine's events as OpenAI's chunks: the role first, then the text
/// as it comes, a last chunk with the finish reason and usage, and
/// `data: [DONE]`. A failure mid-stream, or the deadline passing, is sent
/// as an error object before `[DONE]`.
fn stream_answer(
    events: UnboundedReceiver<Event>,
    id: String,
    created: u64,
    model: String,
    deadline: tokio::time::Instant,
    timed_out: ApiError,
) -> Sse<impl tokio_stream::Stream<Item = Result<SseEvent, Infallible>>> {
    let chunk = move |delta: Delta, logprobs, finish_reason, usage| Chunk {
        id: id.clone(),
        object: "chat.completion.chunk",
        created,
        model: model.clone(),
        choices: vec![ChunkChoice {
            index: 0,
            delta,
            logprobs,
            finish_reason,
        }],
        usage,
    };
    let json =
        |chunk: &Chunk| SseEvent::default().data(serde_json::to_string(chunk).unwrap_or_default());
    let first = json(&chunk(
        Delta {
            role: Some("assistant"),
            content: None,
        },
        None,
        None,
        None,
    ));
    let rest = UnboundedReceiverStream::new(events).map(move |event| match event {
        Event::Text { text, logprobs } => json(&chunk(
            Delta {
                role: None,
                content: Some(text),
            },
            logprobs,
            None,
            None,
        )),
        Event::Done {
            usage,
            finish_reason,
        } => json(&chunk(
            Delta::default(),
            None,
            Some(finish_reason),
            Some(usage),
        )),
        Event::Failed(error) => SseEvent::default().data(error.body().to_string()),
    });
    // The events until the last one or the deadline, whichever is first;
    // past the deadline, the error. Ending the stream drops the receiver,
    // which cancels the generation at its next token.
    let rest = futures_util::StreamExt::take_until(rest, tokio::time::sleep_until(deadline));
    let late = tokio_stream::once(()).filter_map(move |()| {
        (tokio::time::Instant::now() >= deadline)
            .then(|| SseEvent::default().data(timed_out.body().to_string()))
    });
    let done = tokio_stream::once(SseEvent::default().data("[DONE]"));
    let stream = tokio_stream::once(first)
        .chain(rest)
        .chain(late)
        .chain(done)
        .map(Ok);
    Sse::new(stream)
}

/// A process-unique number for completion ids.
fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}
