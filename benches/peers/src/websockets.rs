//! The HTTP side of the websocket candidates, which come without a router
//! or metrics of their own: hyper's HTTP/1.1 with upgrades, `GET /metrics`
//! with the `connected_clients` gauge, and `GET /ws/{id}` handed to the
//! candidate's handshake. Only what follows the handshake differs between
//! them, and that is what the bench measures.

use std::convert::Infallible;
use std::sync::LazyLock;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use prometheus::{Encoder, IntGauge, Registry, TextEncoder};
use tokio::net::TcpListener;

/// What every route answers with.
pub type Reply = Response<Full<Bytes>>;

/// `connected_clients`, in a registry of its own.
static CONNECTED_CLIENTS: LazyLock<(Registry, IntGauge)> = LazyLock::new(|| {
    let registry = Registry::new();
    let gauge = IntGauge::new("connected_clients", "Connected Clients").expect("gauge");
    registry
        .register(Box::new(gauge.clone()))
        .expect("register");
    (registry, gauge)
});

/// Binds `LISTEN_ADDR` and serves for ever: `/metrics`, and `/ws/{id}`
/// through `upgrade`, which is given the request and the id and answers
/// the handshake.
pub async fn serve<U>(upgrade: U)
where
    U: Fn(Request<Incoming>, String) -> Reply + Clone + Send + Sync + 'static,
{
    let listener = TcpListener::from_std(crate::bind()).expect("listener for tokio");
    let service = service_fn(move |request: Request<Incoming>| {
        let reply = route(request, &upgrade);
        async move { Ok::<_, Infallible>(reply) }
    });
    crate::serve_http1_with_upgrades(listener, service).await;
}

fn route(
    request: Request<Incoming>,
    upgrade: impl Fn(Request<Incoming>, String) -> Reply,
) -> Reply {
    if request.method() != Method::GET {
        return status(StatusCode::METHOD_NOT_ALLOWED);
    }
    if request.uri().path() == "/metrics" {
        return Response::new(Full::new(Bytes::from(exposition())));
    }
    match request.uri().path().strip_prefix("/ws/") {
        Some(id) if !id.is_empty() && !id.contains('/') => {
            let id = id.to_owned();
            upgrade(request, id)
        }
        _ => status(StatusCode::NOT_FOUND),
    }
}

/// An empty reply with `code`, such as 400 for a request that is no
/// websocket handshake.
pub fn status(code: StatusCode) -> Reply {
    let mut reply = Response::new(Full::default());
    *reply.status_mut() = code;
    reply
}

fn exposition() -> String {
    let mut text = Vec::new();
    TextEncoder::new()
        .encode(&CONNECTED_CLIENTS.0.gather(), &mut text)
        .expect("encode the exposition");
    String::from_utf8(text).expect("the text format is UTF-8")
}

/// Counts a client in `connected_clients` for as long as it lives, so a
/// client that leaves by any path is uncounted.
pub struct Connected(());

impl Connected {
    pub fn count() -> Connected {
        CONNECTED_CLIENTS.1.inc();
        Connected(())
    }
}

impl Drop for Connected {
    fn drop(&mut self) {
        CONNECTED_CLIENTS.1.dec();
    }
}
