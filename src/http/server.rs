//! Accepting connections and serving each with hyper's HTTP/1.1 and the
//! warp routes, within limits a hostile client cannot stretch, and draining
//! them at shutdown.
//!
//! `warp::serve` sets no such limits: it accepts any number of connections,
//! lets each one's read buffer grow to about 400 KiB, and a connection that
//! sends nothing holds its socket for ever. Here:
//!
//! - at most `HTTP_MAX_CONNECTIONS` are served at once; more wait in the
//!   kernel's listen queue;
//! - a request head may be at most `MAX_REQUEST_HEAD_BYTES`; a longer one
//!   is answered 431;
//! - a connection on which nothing has moved towards the client for the idle
//!   timeout is closed, checked once per period. Moving means the client
//!   acknowledging bytes (`tcpi_bytes_acked` of `TCP_INFO`), so a slow
//!   reader of a large body stays while the body moves, and a client that
//!   sends nothing, trickles a request head, idles or stops reading goes.
//!   What the client sends does not count, or a head trickling in a byte at a
//!   time would never end. Linux only; elsewhere no connection is closed
//!   for idling. One timer per connection, where hyper's
//!   `header_read_timeout` makes one per request.
//!
//! A connection that becomes a websocket leaves this module: hyper hands
//! `TokioIo<TcpStream>` to `ws`, which reads the socket directly.

use std::cell::RefCell;
use std::convert::Infallible;
use std::os::fd::{AsRawFd, RawFd};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use http::Request;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};
use warp::Filter;
use warp::hyper::body::Incoming;
use warp::hyper::server::conn::http1;
use warp::reply::Response;

use crate::config::HttpSettings;
use crate::metrics::record_panic;
use crate::shutdown::CancellationToken;

/// How long to wait before accepting again after `accept` fails, typically
/// for want of file descriptors: retrying at once would spin on the error.
const ACCEPT_RETRY_DELAY: Duration = Duration::from_millis(100);

/// The largest request head, and so the most a connection's read buffer
/// holds. 16 KiB is Node.js's default and room for any browser's request;
/// hyper's own ceiling, about 400 KiB, let 1,024 slow heads pin 0.4 GiB.
const MAX_REQUEST_HEAD_BYTES: usize = 16 * 1024;

/// The connections being served, so shutdown can wait for them or cut them
/// off.
pub struct Connections(JoinSet<()>);

impl Connections {
    /// Completes when every connection has finished.
    pub async fn drained(&mut self) {
        while self.0.join_next().await.is_some() {}
    }

    /// Drops every connection still open.
    pub fn abort(&mut self) {
        self.0.abort_all();
    }
}

/// Accepts connections on `listener` and serves them with `routes` within
/// `settings`' limits, until `stopping` says to stop. Returns the
/// connections still open, each told to finish its request and close.
pub async fn accept<F>(
    listener: TcpListener,
    routes: F,
    settings: HttpSettings,
    stopping: CancellationToken,
) -> Connections
where
    F: Filter<Extract = (Response,), Error = Infallible> + Clone + Send + Sync + 'static,
{
    let slots = Arc::new(Semaphore::new(settings.max_connections));
    let mut connections = JoinSet::new();
    // `biased` towards the shutdown notice: once it has come, no new
    // connection may win a race against it.
    loop {
        let slot = tokio::select! {
            biased;
            () = stopping.cancelled() => break,
            slot = Arc::clone(&slots).acquire_owned() => slot.expect("the semaphore is never closed"),
        };
        let stream = tokio::select! {
            biased;
            () = stopping.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                // The client gave up before we took its connection.
                Err(err) if is_connection_error(&err) => continue,
                Err(err) => {
                    tracing::error!(error = %err, "cannot accept a connection");
                    tokio::time::sleep(ACCEPT_RETRY_DELAY).await;
                    continue;
                }
            },
        };
        // Reap finished connections, so the set holds only open ones.
        while connections.try_join_next().is_some() {}
        let connection = serve(
            stream,
            routes.clone(),
            settings.idle_timeout,
            slot,
            stopping.clone(),
        );
        // A panic (a bug in a route) ends only its connection, and is
        // logged and counted as it happens.
        connections.spawn(async move {
            if let Err(panic) = AssertUnwindSafe(connection).catch_unwind().await {
                record_panic("http_connection", panic.as_ref());
            }
        });
    }
    Connections(connections)
}

/// Whether an `accept` error concerns only the connection being accepted.
fn is_connection_error(err: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    matches!(
        err.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    )
}

/// Serves one connection until the client closes it, it becomes a
/// websocket, it idles (then it is closed through hyper's graceful
/// shutdown, which lets a request that has just arrived finish), or
/// shutdown lets its current request finish.
async fn serve<F>(
    stream: TcpStream,
    routes: F,
    idle_timeout: Duration,
    _slot: OwnedSemaphorePermit,
    stopping: CancellationToken,
) where
    F: Filter<Extract = (Response,), Error = Infallible> + Clone + Send + Sync + 'static,
{
    // Valid while `connection` owns the stream, as long as this runs.
    let socket = stream.as_raw_fd();
    let service = Routes(RefCell::new(warp::service(routes)));
    let connection = http1::Builder::new()
        .max_buf_size(MAX_REQUEST_HEAD_BYTES)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(connection);

    let mut checks = tokio::time::interval_at(Instant::now() + idle_timeout, idle_timeout);
    // A stalled runtime must not fire missed checks back to back, which
    // would find nothing moved between them.
    checks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut acknowledged = acknowledged_bytes(socket);
    let mut closing = false;
    // Pinned once: a new one per wake-up would lock the token's waiters.
    let stopped = stopping.cancelled();
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            biased;
            () = &mut stopped, if !closing => {
                connection.as_mut().graceful_shutdown();
                closing = true;
            }
            // An error is the client's doing (a reset, a malformed head),
            // which hyper has answered as well as it could.
            _ = connection.as_mut() => return,
            _ = checks.tick() => {
                let before = acknowledged;
                acknowledged = acknowledged_bytes(socket);
                if acknowledged.is_some() && acknowledged == before {
                    if closing {
                        // Idle through a whole period of closing, too.
                        return;
                    }
                    connection.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
        }
    }
}

/// How many bytes of the connection on `socket` the client has
/// acknowledged, from the kernel; `None` where it cannot say.
#[cfg(all(target_os = "linux", any(target_env = "gnu", target_env = "musl")))]
fn acknowledged_bytes(socket: RawFd) -> Option<u64> {
    // SAFETY: tcp_info is plain integers, for which all zeroes is valid.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut length = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `length` bytes into `info`.
    let result = unsafe {
        libc::getsockopt(
            socket,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&raw mut info).cast(),
            &mut length,
        )
    };
    (result == 0).then_some(info.tcpi_bytes_acked)
}

#[cfg(not(all(target_os = "linux", any(target_env = "gnu", target_env = "musl"))))]
fn acknowledged_bytes(_socket: RawFd) -> Option<u64> {
    None
}

/// One connection's copy of the routes, which hyper calls for each request
/// in turn. hyper calls a service through `&self`, warp's needs `&mut self`,
/// and hyper-util's `TowerToHyperService` bridges the two by cloning the
/// whole route tree for every request.
struct Routes<S>(RefCell<S>);

impl<S> warp::hyper::service::Service<Request<Incoming>> for Routes<S>
where
    S: tower_service::Service<Request<Incoming>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn call(&self, request: Request<Incoming>) -> S::Future {
        // warp's service is always ready, and the future holds no borrow
        // of it, so requests of one connection (which come one at a time)
        // borrow it in turn.
        self.0.borrow_mut().call(request)
    }
}
