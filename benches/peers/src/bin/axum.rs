//! axum 0.8 with axum-prometheus 0.10, set up as its README sets it up:
//! `PrometheusMetricLayer::pair()` for the layer and the handle, `/metrics`
//! rendering the handle, `axum::serve`. The tutorial's counter and gauge are
//! kept with the `metrics` macros, which record into the same recorder that
//! the layer installs. Websockets use axum's own `WebSocketUpgrade`, which
//! is tungstenite's, with the message and frame limits of every peer.

use axum::Router;
use axum::extract::Path;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use axum::routing::get;
use axum_prometheus::PrometheusMetricLayer;
use peers::MAX_MESSAGE_BYTES;
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

async fn websocket(upgrade: WebSocketUpgrade, Path(id): Path<String>) -> Response {
    upgrade
        .max_message_size(MAX_MESSAGE_BYTES)
        .max_frame_size(MAX_MESSAGE_BYTES)
        .on_upgrade(move |socket| hold(socket, id))
}

/// Holds one client until it leaves, printing a line per message it sends.
/// Reading is all it takes to answer pings: axum does that itself.
async fn hold(mut socket: WebSocket, id: String) {
    let _connected = Connected::new();
    while let Some(Ok(message)) = socket.recv().await {
        match message {
            Message::Text(text) => {
                println!("text message received id={id} bytes={}", text.len())
            }
            Message::Binary(bytes) => {
                println!("binary message received id={id} bytes={}", bytes.len())
            }
            Message::Ping(_) | Message::Pong(_) | Message::Close(_) => {}
        }
    }
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
