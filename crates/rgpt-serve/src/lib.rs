//! `rgpt serve`: an OpenAI-compatible chat API for RGPT and LLaVA
//! checkpoints, with regions. `POST /v1/chat/completions` takes OpenAI's
//! messages (text and `image_url` parts) plus a `regions` list for the
//! `<region>` placeholders, and answers whole or streamed (server-sent
//! events); `GET /v1/models`, `GET /health` and `GET /metrics` (Prometheus
//! text) as such servers have them.
//! The model runs on its own engine thread behind a bounded queue, in a
//! continuous batch ([`engine`]); the HTTP side is axum on tokio
//! ([`server`]).
pub mod api;
pub mod engine;
pub mod metrics;
mod page;
pub mod prepare;
pub mod request;
pub mod server;

pub use engine::{Engine, EngineOptions};
pub use metrics::Metrics;
pub use request::Limits;
pub use server::{router, ServerState};
