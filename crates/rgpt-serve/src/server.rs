//! The HTTP side (axum on tokio): routes, request reading and the shape of
//! answers, whole or streamed as server-sent events in OpenAI's chunk
//! format. The model runs on the engine's thread; handlers only wait on
//! its events.
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_stream::StreamExt;

use crate::api::{
    ApiError, AssistantMessage, ChatCompletion, ChatRequest, Choice, Chunk, ChunkChoice, Delta,
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
}

/// The API's routes over `state`.
pub fn router(state: Arc<ServerState>) -> Router {
    // The body holds the image as base64 (4/3 of its bytes) and the text.
    let body_limit = state.limits.max_image_bytes / 3 * 4 + (1 << 20);
    Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/v1/models", get(models))
        .route(
            "/metrics",
            get(|State(state): State<Arc<ServerState>>| async move { state.metrics.render() }),
        )
        .route("/v1/chat/completions", post(chat_completions))
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
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
    let Json(request) = request.map_err(|rejection| {
        ApiError::invalid(
            None,
            format!("the body is not a chat request: {}", rejection.body_text()),
        )
        .with_status(rejection.status())
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
    state.engine.submit(job, sender)?;
    let id = format!("chatcmpl-{}", unique());
    let created = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    if stream {
        Ok(stream_answer(events, id, created, state.model_name.clone()).into_response())
    } else {
        whole_answer(events, id, created, state.model_name.clone())
            .await
            .map(|c| Json(c).into_response())
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
    while let Some(event) = events.recv().await {
        match event {
            Event::Text(text) => content.push_str(&text),
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
/// `data: [DONE]`. A failure mid-stream is sent as an error object.
fn stream_answer(
    events: UnboundedReceiver<Event>,
    id: String,
    created: u64,
    model: String,
) -> Sse<impl tokio_stream::Stream<Item = Result<SseEvent, Infallible>>> {
    let chunk = move |delta: Delta, finish_reason, usage| Chunk {
        id: id.clone(),
        object: "chat.completion.chunk",
        created,
        model: model.clone(),
        choices: vec![ChunkChoice {
            index: 0,
            delta,
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
    ));
    let rest = UnboundedReceiverStream::new(events).map(move |event| match event {
        Event::Text(text) => json(&chunk(
            Delta {
                role: None,
                content: Some(text),
            },
            None,
            None,
        )),
        Event::Done {
            usage,
            finish_reason,
        } => json(&chunk(Delta::default(), Some(finish_reason), Some(usage))),
        Event::Failed(error) => SseEvent::default().data(error.body().to_string()),
    });
    let done = tokio_stream::once(SseEvent::default().data("[DONE]"));
    let stream = tokio_stream::once(first).chain(rest).chain(done).map(Ok);
    Sse::new(stream)
}

/// A process-unique number for completion ids.
fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}
