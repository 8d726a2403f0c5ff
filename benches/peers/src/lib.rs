//! What every peer server shares with the service, so that the comparison
//! can start them all alike: the address to listen on, `LISTEN_ADDR` or
//! `127.0.0.1:0`, and the `Started on port N` line that tells the bench
//! which port was bound; and the accept loop of the servers that drive
//! hyper themselves.
//!
//! Each binary in `src/bin/` is one peer, set up as its library's own
//! documentation sets it up; the routes are the service's, cut down to what
//! is measured:
//!
//! - `GET /some` says `hello!` and counts the request in `incoming_requests`,
//!   the tutorial's counter, kept the library's usual way;
//! - `GET /metrics` is the library's exposition;
//! - `GET /ws/{id}` holds a websocket client, answering its pings, printing
//!   one line per message it receives (as the service logs one) and
//!   otherwise ignoring them, with the library's usual websocket support,
//!   and counts it in `connected_clients`, which the bench polls.
//!
//! The bare servers (`hyper`, `warp-hyper`, `warp-serve`) serve `/some`
//! alone: they are the floor that the others' CPU is measured against.
//! The websocket candidates (`fastwebsockets`, `soketto`, `yawc`) serve
//! `/ws/{id}` and `/metrics` alone, over hyper, with [`websockets`].

use std::net::TcpListener;
use std::time::Duration;

use hyper::body::{Body, Incoming};
use hyper::server::conn::http1;
use hyper::service::HttpService;
use hyper_util::rt::TokioIo;

pub mod websockets;

/// The largest message, and frame, every websocket peer accepts: the
/// service's default `WS_MAX_MESSAGE_BYTES`. A larger one closes the
/// connection.
pub const MAX_MESSAGE_BYTES: usize = 65_536;

/// How long to wait before accepting again after `accept` fails, typically
/// because the process is out of file descriptors: retrying at once would
/// spin on the same error at full CPU, as the service's own loop avoids.
const ACCEPT_RETRY_DELAY: Duration = Duration::from_millis(100);

/// Binds `LISTEN_ADDR` (default `127.0.0.1:0`) and announces the port on
/// stdout. Returns a non-blocking listener, ready for any runtime.
///
/// A peer is a benchmark fixture, so a bad address or a failed bind ends it
/// with a panic naming the cause; the bench reports the missing line.
pub fn bind() -> TcpListener {
    let addr = std::env::var("LISTEN_ADDR").unwrap_or_else(|_| "127.0.0.1:0".to_owned());
    let listener = TcpListener::bind(&addr).unwrap_or_else(|err| panic!("bind {addr}: {err}"));
    listener
        .set_nonblocking(true)
        .expect("make the listener non-blocking");
    let port = listener.local_addr().expect("bound address").port();
    println!("Started on port {port}");
    listener
}

/// Accepts connections on `listener` for ever and serves each on a task of
/// its own with hyper's HTTP/1.1 alone and `service`: the whole server of
/// the bare peers that drive hyper directly, as the service does.
pub async fn serve_http1<S>(listener: tokio::net::TcpListener, service: S)
where
    S: HttpService<Incoming> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::ResBody: Send + 'static,
    <S::ResBody as Body>::Data: Send,
    <S::ResBody as Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    accept_each(listener, move |io| {
        // A client that goes away mid-request is no concern of a bare
        // server.
        let connection = http1::Builder::new().serve_connection(io, service.clone());
        async move {
            let _ = connection.await;
        }
    })
    .await
}

/// Like [`serve_http1`], but lets `service` take a connection over with an
/// upgrade, as a websocket handshake does.
pub async fn serve_http1_with_upgrades<S>(listener: tokio::net::TcpListener, service: S)
where
    S: HttpService<Incoming> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::ResBody: Send + 'static,
    <S::ResBody as Body>::Data: Send,
    <S::ResBody as Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    accept_each(listener, move |io| {
        let connection = http1::Builder::new()
            .serve_connection(io, service.clone())
            .with_upgrades();
        async move {
            let _ = connection.await;
        }
    })
    .await
}

/// Accepts connections for ever and runs `serve(connection)` on a task of
/// its own for each.
async fn accept_each<F>(
    listener: tokio::net::TcpListener,
    serve: impl Fn(TokioIo<tokio::net::TcpStream>) -> F,
) where
    F: Future<Output = ()> + Send + 'static,
{
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(serve(TokioIo::new(stream)));
            }
            Err(_) => tokio::time::sleep(ACCEPT_RETRY_DELAY).await,
        }
    }
}
