//! `rgpt serve --model DIR [--host 127.0.0.1] [--port 8080]`.
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use rgpt_model::chat::RegionGenerator;
use rgpt_serve::{Engine, EngineOptions, Limits, Metrics, ServerState};

use crate::runtime::RuntimeArgs;

#[derive(Args)]
pub struct ServeArgs {
    /// RGPT or LLaVA checkpoint directory.
    #[arg(long)]
    model: PathBuf,
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// 0 picks a free port (printed at start).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// The name `/v1/models` lists and requests may give (default: the
    /// model directory's name).
    #[arg(long)]
    model_name: Option<String>,
    /// Requests that may wait for the engine; more get 429.
    #[arg(long, default_value_t = 64)]
    queue: usize,
    /// Requests decoded together in the continuous batch (1: one at a time).
    #[arg(long, default_value_t = 16)]
    max_batch: usize,
    /// Encoded images kept, so that a follow-up turn about the same image
    /// skips the vision tower (0: none).
    #[arg(long, default_value_t = 16)]
    image_cache: usize,
    /// The most tokens one request may generate.
    #[arg(long, default_value_t = 1024)]
    max_tokens: usize,
    /// The largest image, in bytes.
    #[arg(long, default_value_t = 20 << 20)]
    max_image_bytes: usize,
    /// The most pixels an image may have (width times height).
    #[arg(long, default_value_t = 40_000_000)]
    max_image_pixels: u64,
    /// The most regions in one request.
    #[arg(long, default_value_t = 64)]
    max_regions: usize,
    /// Seconds a chat request may take, queueing included (a 504 past it).
    #[arg(long, default_value_t = 600.0)]
    request_timeout: f64,
    /// Let `image_url` name a file on this machine (`file://` URLs and
    /// paths), for local use; off by default.
    #[arg(long)]
    allow_local_files: bool,
    /// An origin whose pages may call the API (CORS), e.g.
    /// `https://example.org`, or `*` for any; repeatable. None by default.
    #[arg(long = "cors-origin", value_name = "ORIGIN")]
    cors_origins: Vec<String>,
    /// For tests of the engine's recovery: the engine panics on a question
    /// containing this text followed by `join` (while it joins the batch)
    /// or `step` (in the first decode step it shares with another request).
    #[arg(long, hide = true)]
    test_panic_on: Option<String>,
    /// Require `Authorization: Bearer KEY` on the `/v1/` routes.
    #[arg(long, env = "RGPT_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    #[command(flatten)]
    runtime: RuntimeArgs,
}

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let (device, kind) = args.runtime.apply()?;
    anyhow::ensure!(args.max_batch >= 1, "--max-batch must be at least 1");
    for origin in &args.cors_origins {
        anyhow::ensure!(
            origin == "*"
                || ((origin.starts_with("http://") || origin.starts_with("https://"))
                    && origin.parse::<axum::http::HeaderValue>().is_ok()),
            "--cors-origin {origin:?} is not an origin: give scheme and host, such as \
             https://example.org, or *"
        );
    }
    let dir = args.model.clone();
    let metrics = Arc::new(Metrics::default());
    let engine = Engine::start(
        move || RegionGenerator::load(&dir, device, kind),
        EngineOptions {
            queue: args.queue,
            max_batch: args.max_batch,
            image_cache: args.image_cache,
            panic_on: args.test_panic_on.clone(),
        },
        Arc::clone(&metrics),
    )
    .with_context(|| format!("while loading {}", args.model.display()))?;
    let model_name = args.model_name.clone().unwrap_or_else(|| {
        args.model
            .file_name()
            .map_or("rgpt".into(), |n| n.to_string_lossy().into_owned())
    });
    let state = Arc::new(ServerState {
        engine,
        model_name,
        limits: Limits {
            max_tokens: args.max_tokens,
            max_image_bytes: args.max_image_bytes,
            max_image_pixels: args.max_image_pixels,
            max_regions: args.max_regions,
            allow_local_files: args.allow_local_files,
        },
        cors_origins: args.cors_origins.clone(),
        metrics,
        api_key: args.api_key.clone(),
        request_timeout: std::time::Duration::try_from_secs_f64(args.request_timeout)
            .ok()
            .filter(|t| !t.is_zero())
            .context("--request-timeout must be a positive number of seconds")?,
    });
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let address = format!("{}:{}", args.host, args.port);
        let listener = tokio::net::TcpListener::bind(&address)
            .await
            .with_context(|| format!("cannot listen on {address}"))?;
        let local = listener.local_addr()?;
        println!("serving {} on http://{local}", state.model_name);
        axum::serve(listener, rgpt_serve::router(state))
            .with_graceful_shutdown(async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await
            .context("the server stopped")
    })
}
