//! A warp web service instrumented with Prometheus, after the tutorial
//! "Prometheus metrics in a Rust web service".
//!
//! - [`config`]: every setting, its default, parsing and validation.
//! - [`metrics`]: the custom registry, the tutorial's four metrics, and
//!   encoding them for `GET /metrics`.
//! - [`http_metrics`]: `http_requests_total` and
//!   `http_request_duration_seconds` for every request, recorded by one
//!   wrapper around the routes.
//! - [`in_flight`]: `http_requests_in_flight`, counted per thread.
//! - [`process_metrics`]: the standard `process_*` metrics, from `/proc`.
//! - [`runtime_metrics`]: what the tokio runtime is doing (`tokio_*`).
//! - [`exposition`]: writing the metrics in the Prometheus text format.
//! - [`scrape`]: `GET /metrics`, with its limit on scrapes at once.
//! - [`gzip`]: `Accept-Encoding` negotiation and gzip for `/metrics`.
//! - [`collector`]: the simulated `data_collector` that feeds the response
//!   metrics, and the status-code classification.
//! - [`routes`]: the warp filter tree and its small handlers.
//! - [`health`]: `/healthz`, `/readyz`, and the drain period after a stop
//!   signal.
//! - [`server`]: accepting and serving connections within limits, and
//!   draining them at shutdown.
//! - [`ws`]: websocket sessions: the upgrade, heartbeats, limits, graceful
//!   close, and the `connected_clients` guard.
//! - [`logging`]: log lines through `tracing`, to stdout without ever
//!   blocking or failing a worker thread.
//! - [`memory`]: returning freed memory to the system after clients leave.
//! - [`shutdown`]: the signals that stop the server and how tasks observe them.
//!
//! [`serve`] runs the whole service on listeners the caller has bound, so
//! `main` binds the configured addresses and tests bind port 0.
//!
//! Errors: configuration errors are [`config::ConfigError`]; everything else
//! that can stop the server is returned as a boxed [`Error`] for `main` to
//! print. Handlers never panic on bad input.

pub mod collector;
pub mod config;
pub mod exposition;
pub mod gzip;
pub mod health;
pub mod http_metrics;
pub mod in_flight;
pub mod logging;
pub mod memory;
pub mod metrics;
pub mod process_metrics;
pub mod routes;
pub mod runtime_metrics;
pub mod scrape;
pub mod server;
pub mod shutdown;
pub mod ws;

use std::future::Future;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::time::Instant;

use crate::config::{Config, HttpSettings};
use crate::routes::MetricsRoute;
use crate::server::Connections;

/// An error that stopped the server.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// Locks `mutex` even if a thread panicked while holding it. Every mutex in
/// the service guards counts or lists that each step changes in one push,
/// insert, removal or addition, so a panic cannot leave them half-changed, and a
/// poisoned lock is as good as any.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// How long after the grace period shutdown still waits for websocket
/// sessions, which each started their own wait a moment after it began.
const SESSION_SLACK: Duration = Duration::from_secs(1);

/// Connections served at once on the listener of `METRICS_ADDR`, which
/// serves only `/metrics`. Prometheus keeps one connection open to each
/// target; the rest leave room for a second Prometheus and a person with
/// curl. The address is meant to be reachable only by them.
const METRICS_MAX_CONNECTIONS: usize = 16;

/// Runs the service on `listener` until `shutdown` completes; `/metrics` is
/// served on `metrics_listener` instead, if there is one. Then `/readyz`
/// turns 503 while the service goes on serving for the configured drain
/// period (see [`health`]). After that it stops accepting, lets in-flight
/// requests finish, closes every websocket with 1001 (going away), and
/// returns once all that is done or the configured grace period is over,
/// whichever comes first; connections still open then are dropped.
pub async fn serve(
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    config: &Config,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    metrics::register()?;
    let (trigger, stopping) = shutdown::channel();
    let mut background = vec![tokio::spawn(memory::release_after_disconnects(
        stopping.clone(),
    ))];
    if let Some(interval) = config.collect_interval {
        background.push(tokio::spawn(collector::data_collector(
            interval,
            stopping.clone(),
        )));
    }
    let (sessions, all_closed) =
        ws::Sessions::new(config.ws, stopping.clone(), config.shutdown_grace);

    let readiness = health::Readiness::new();
    let metrics_route = match metrics_listener {
        Some(_) => MetricsRoute::Elsewhere,
        None => MetricsRoute::Included,
    };
    // One limit for the scrapes on both listeners.
    let scrapes = scrape::Scrapes::new(config.metrics_max_in_flight);
    let routes = routes::routes(sessions, readiness.clone(), metrics_route, scrapes.clone());
    let scrapes = async {
        let listener = metrics_listener?;
        let settings = HttpSettings {
            max_connections: METRICS_MAX_CONNECTIONS,
            ..config.http
        };
        let metrics_only = routes::metrics_only(scrapes);
        Some(server::accept(listener, metrics_only, settings, stopping.clone()).await)
    };

    let (connections, scrapes, ()) = tokio::join!(
        server::accept(listener, routes, config.http, stopping.clone()),
        scrapes,
        async {
            health::drain_after(shutdown, &readiness, config.shutdown_drain).await;
            trigger.fire();
        },
    );

    let mut connections: Vec<Connections> = std::iter::once(connections).chain(scrapes).collect();
    let deadline = Instant::now() + config.shutdown_grace;
    if tokio::time::timeout_at(deadline, drained(&mut connections))
        .await
        .is_err()
    {
        tracing::warn!(
            grace = ?config.shutdown_grace,
            "shutdown grace period over; dropping the remaining connections"
        );
        connections.iter_mut().for_each(Connections::abort);
        drained(&mut connections).await;
    }
    // The routes, and with them the last `Sessions` handles outside the
    // sessions, went with the connections. Each session gives its client at
    // most the grace period to answer the close, so the sessions end by the
    // deadline too, give or take the moment each took to see the notice.
    let sessions_closed = tokio::time::timeout_at(deadline + SESSION_SLACK, all_closed.wait());
    if sessions_closed.await.is_err() {
        tracing::warn!("websocket sessions still open after the grace period; leaving them");
    }
    // They stop as soon as they see the notice; a panic in one surfaces here.
    for task in background {
        task.await?;
    }
    Ok(())
}

/// Completes when every connection of every listener has finished.
async fn drained(connections: &mut [Connections]) {
    for listener_connections in connections {
        listener_connections.drained().await;
    }
}
