//! The HTTP server: accepting connections and serving each one with hyper's
//! HTTP/1.1 and the warp routes, within limits that a hostile client cannot
//! stretch, and draining them at shutdown.
//!
//! `warp::serve` sets no such limits: it accepts any number of connections
//! and gives hyper no timer, so a request head has no deadline and a client
//! that connects and sends nothing holds its socket forever. Driving hyper
//! directly takes little more code than configuring warp would, and makes
//! the limits visible.
//!
//! The deadline is coarse on purpose: a connection with no request in flight
//! on which no request has started for the idle timeout is closed, checked
//! once per period, so after one to two periods. That covers a client that sends nothing, one that
//! sends a request head a byte at a time, and one that has simply gone quiet.
//! hyper's own `header_read_timeout` is exact, but it creates, registers and
//! drops a timer for every request, which cost about 7 % of a request's CPU
//! here.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};
use warp::Filter;
use warp::hyper::server::conn::http1;
use warp::hyper::service::{Service, service_fn};
use warp::reply::Response;

use crate::config::HttpSettings;
use crate::shutdown::Shutdown;

/// How long to wait before accepting again after `accept` fails, typically
/// because the process is out of file descriptors: retrying at once would
/// spin on the same error.
const ACCEPT_RETRY_DELAY: Duration = Duration::from_millis(100);

/// The connections being served, so shutdown can wait for them or cut them off.
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

/// Accepts connections on `listener` and serves them with `routes`, within
/// the limits of `settings`, until `stopping` says to stop. Returns the
/// connections still being served; each has been told to finish its current
/// request and close.
///
/// At the limit, new connections wait in the kernel's listen queue until a
/// slot frees. A connection that becomes a websocket leaves its slot: the
/// session is counted against the websocket limit instead.
pub async fn accept<F>(
    listener: TcpListener,
    routes: F,
    settings: HttpSettings,
    mut stopping: Shutdown,
) -> Connections
where
    F: Filter<Extract = (Response,), Error = Infallible> + Clone + Send + Sync + 'static,
{
    let slots = Arc::new(Semaphore::new(settings.max_connections));
    let mut connections = JoinSet::new();
    // Every `select!` here and below is `biased` towards the shutdown
    // notice: once it has come, no new connection or request may win a race
    // against it.
    loop {
        let slot = tokio::select! {
            biased;
            () = stopping.recv() => break,
            slot = Arc::clone(&slots).acquire_owned() => slot.expect("the semaphore is never closed"),
        };
        let stream = tokio::select! {
            biased;
            () = stopping.recv() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                // The client gave up before we took its connection: nothing
                // is wrong on this side.
                Err(err) if is_connection_error(&err) => continue,
                Err(err) => {
                    tracing::error!(error = %err, "cannot accept a connection");
                    tokio::select! {
                        biased;
                        () = stopping.recv() => break,
                        () = tokio::time::sleep(ACCEPT_RETRY_DELAY) => continue,
                    }
                }
            },
        };
        // Reap finished connections so the set holds only open ones.
        while connections.try_join_next().is_some() {}
        connections.spawn(serve_connection(
            stream,
            routes.clone(),
            settings.idle_timeout,
            slot,
            stopping.clone(),
        ));
    }
    Connections(connections)
}

/// The requests a connection has started and finished, for the idle check.
/// Only that connection's task touches them, so the atomics are uncontended.
#[derive(Default)]
struct RequestCounts {
    started: AtomicU64,
    finished: AtomicU64,
}

/// Whether an `accept` error concerns only the connection being accepted.
fn is_connection_error(err: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    matches!(
        err.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    )
}

/// Serves one connection until the client closes it, it is upgraded to a
/// websocket, it goes `idle_timeout` without a request in flight or a new
/// one started, or shutdown lets its current request finish.
async fn serve_connection<F>(
    stream: TcpStream,
    routes: F,
    idle_timeout: Duration,
    _slot: OwnedSemaphorePermit,
    mut stopping: Shutdown,
) where
    F: Filter<Extract = (Response,), Error = Infallible> + Clone + Send + Sync + 'static,
{
    let requests = Arc::new(RequestCounts::default());
    let service = {
        let requests = Arc::clone(&requests);
        let routes = TowerToHyperService::new(warp::service(routes));
        service_fn(move |request| {
            requests.started.fetch_add(1, Ordering::Relaxed);
            let answered = routes.call(request);
            let requests = Arc::clone(&requests);
            async move {
                let response = answered.await;
                requests.finished.fetch_add(1, Ordering::Relaxed);
                response
            }
        })
    };
    let connection = http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(connection);

    let mut checks = tokio::time::interval_at(Instant::now() + idle_timeout, idle_timeout);
    // A stalled runtime must not fire missed checks back to back, which
    // would find no new request between them and close a busy connection.
    checks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut started_at_last_check = 0;
    // The routes never fail, so an error from the connection is the client's
    // doing (a reset, a malformed request head), which hyper has already
    // answered as well as it could: nothing for the server to report.
    loop {
        tokio::select! {
            biased;
            () = stopping.recv() => {
                // Finishes the request in flight, if any, then closes.
                connection.as_mut().graceful_shutdown();
                let _ = connection.await;
                return;
            }
            _ = connection.as_mut() => return,
            _ = checks.tick() => {
                let started = requests.started.load(Ordering::Relaxed);
                let idle = started == requests.finished.load(Ordering::Relaxed);
                if idle && started == started_at_last_check {
                    // Dropping the connection closes it, whatever it was
                    // waiting for.
                    return;
                }
                started_at_last_check = started;
            }
        }
    }
}

/// The soft limit on open files before and after [`raise_open_file_limit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenFileLimit {
    pub before: u64,
    pub now: u64,
}

/// Raises this process's soft limit on open files to its hard limit (capped
/// by the kernel's `fs.nr_open`), as Go programs do at start-up: every
/// connection is a descriptor, so a default soft limit of 1024 would bound
/// the service before `HTTP_MAX_CONNECTIONS` and `WS_MAX_CLIENTS` do. Child
/// processes started afterwards inherit the raised limit.
pub fn raise_open_file_limit() -> std::io::Result<OpenFileLimit> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes into the struct passed.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let before = limit.rlim_cur;
    // An unlimited hard limit still cannot exceed the kernel's nr_open.
    let ceiling = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(limit.rlim_max);
    let wanted = limit.rlim_max.min(ceiling);
    if before < wanted {
        limit.rlim_cur = wanted;
        // SAFETY: setrlimit only reads the struct passed.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(OpenFileLimit {
        before,
        now: before.max(wanted),
    })
}
