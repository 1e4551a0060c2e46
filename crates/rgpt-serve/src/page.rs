//! The web page at `/`: upload or drop an image, draw boxes, polygons and
//! free-hand masks on it, and chat about them with answers streamed from
//! `/v1/chat/completions`. Its three files are embedded in the binary at
//! build time, so nothing is built or installed to run it.
use axum::http::header::CONTENT_TYPE;
use axum::routing::get;
use axum::Router;

const INDEX: &str = include_str!("../static/index.html");
const SCRIPT: &str = include_str!("../static/app.js");
const STYLE: &str = include_str!("../static/style.css");

/// `/`, `/app.js` and `/style.css`.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    let file = |body: &'static str, kind: &'static str| {
        get(move || async move { ([(CONTENT_TYPE, kind)], body) })
    };
    Router::new()
        .route("/", file(INDEX, "text/html; charset=utf-8"))
        .route("/app.js", file(SCRIPT, "text/javascript; charset=utf-8"))
        .route("/style.css", file(STYLE, "text/css; charset=utf-8"))
}
