//! axum 0.8 with axum-prometheus 0.10, set up as its README sets it up:
//! `PrometheusMetricLayer::pair()` for the layer and the handle, `/metrics`
//! rendering the handle, `axum::serve`. The tutorial's counter and gauge are
//! kept with the `metrics` macros, which record into the same recorder that
//! the layer installs. Websockets use axum's own `WebSocketUpgrade`.

use axum::Router;
use axum::extract::ws::{WebSocket, WebSocketUpgrade};
use axum::response::Response;
use axum::routing::get;
use axum_prometheus::PrometheusMetricLayer;
use tokio::net::TcpListener;

#[tokio::main]
async fn main() {
    let (prometheus_layer, metric_handle) = PrometheusMetricLayer::pair();
    // The `metrics` macros create a series when it is first touched; these
    // are touched now so that, as in the service, both are scraped from the
    // start (the bench waits for `connected_clients 0`).
    metrics::counter!("incoming_requests").absolute(0);
    metrics::gauge!("connected_clients").set(0.0);
    let app = Router::new()
        .route("/some", get(some))
        .route("/ws/{id}", get(websocket))
        .route("/metrics", get(|| async move { metric_handle.render() }))
        .layer(prometheus_layer);
    let listener = TcpListener::from_std(peers::bind()).expect("listener for tokio");
    axum::serve(listener, app).await.expect("serve");
}

async fn some() -> &'static str {
    metrics::counter!("incoming_requests").increment(1);
    "hello!"
}

async fn websocket(upgrade: WebSocketUpgrade) -> Response {
    upgrade.on_upgrade(hold)
}

/// Holds one client until it leaves. Reading is all it takes: axum answers
/// pings itself, and every other message is ignored.
async fn hold(mut socket: WebSocket) {
    let _connected = Connected::new();
    while let Some(Ok(_)) = socket.recv().await {}
}

/// Counts a client in `connected_clients` for as long as it lives, so a
/// client that leaves by any path is uncounted.
struct Connected;

impl Connected {
    fn new() -> Connected {
        metrics::gauge!("connected_clients").increment(1);
        Connected
    }
}

impl Drop for Connected {
    fn drop(&mut self) {
        metrics::gauge!("connected_clients").decrement(1);
    }
}
