//! The instrumentation of `src/metrics/` in an axum 0.8 service, included
//! by path as a reader copies the folder into a service of their own
//! (docs/reuse.md): `GET /hello` and `GET /items/{id}`, every request
//! recorded by one middleware under its route template, and `GET /metrics`.
//!
//! ```sh
//! cargo run --example axum          # LISTEN_ADDR overrides 127.0.0.1:3000
//! curl localhost:3000/items/7
//! curl localhost:3000/metrics | grep http_requests_total
//! ```

// The service uses only part of what the folder offers.
#[allow(dead_code)]
#[path = "../src/metrics/mod.rs"]
mod metrics;

use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::{MatchedPath, Path, Request, State};
use axum::http::HeaderMap;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::get;
use metrics::http::HttpMetrics;
use metrics::scrape::Scrapes;

/// The route templates, as axum spells them and the `path` label shows them.
const ROUTES: [&str; 3] = ["/hello", "/items/{id}", "/metrics"];

/// Scrapes gathered and encoded at once; one more gets 503.
const MAX_SCRAPES: usize = 4;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    metrics::register()?;
    let http_metrics = HttpMetrics::register(&metrics::REGISTRY, &ROUTES)?;
    let scrapes = Scrapes::new(metrics::REGISTRY.clone(), MAX_SCRAPES);

    let app = Router::new()
        .route("/hello", get(|| async { "hello!" }))
        .route("/items/{id}", get(item))
        .route("/metrics", get(scrape))
        .with_state(scrapes)
        // `layer`, not `route_layer`: the fallback's 404s are recorded too.
        .layer(middleware::from_fn_with_state(http_metrics, record));

    let addr = std::env::var("LISTEN_ADDR").unwrap_or_else(|_| "127.0.0.1:3000".to_owned());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("Started on port {}", listener.local_addr()?.port());
    axum::serve(listener, app).await?;
    Ok(())
}

async fn item(Path(id): Path<u32>) -> String {
    format!("item {id}\n")
}

async fn scrape(State(scrapes): State<Scrapes>, headers: HeaderMap) -> Response {
    scrapes.answer(&headers).await.map(Body::from)
}

/// Counts the request in flight while the routes handle it, then records it
/// under the template of the route that took it (axum sets `MatchedPath`
/// before the middleware runs), or `unmatched` for a 404 from the fallback.
async fn record(
    State(http_metrics): State<HttpMetrics>,
    matched: Option<MatchedPath>,
    request: Request,
    next: Next,
) -> Response {
    let route = match matched {
        Some(matched) => http_metrics.route(matched.as_str()),
        None => http_metrics.unmatched(),
    };
    let method = request.method().clone();
    let _in_flight = http_metrics.start();
    let started = Instant::now();
    let response = next.run(request).await;
    http_metrics.record(route, &method, response.status(), started.elapsed());
    response
}
