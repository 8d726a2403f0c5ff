//! The composition point: binding the listeners, registering the metrics,
//! starting the background tasks, serving both listeners, and shutting down
//! in order. Nothing else in the crate imports this module.
//!
//! Shutdown, on the first SIGTERM or SIGINT: `/readyz` turns 503 and the
//! service goes on serving for `SHUTDOWN_DRAIN_SECS` (see `http::health`);
//! then it stops accepting, lets requests in flight finish, closes every
//! websocket with 1001, and returns once all that is done or
//! `SHUTDOWN_GRACE_SECS` is over. A second signal exits at once. A
//! background task that dies starts the same shutdown, and the process then
//! exits non-zero, so that its supervisor restarts it: the tasks feed the
//! metrics, and a service running for days with a dead one would report
//! nonsense without a sign.

use std::future::Future;
use std::time::Duration;

use once_cell::sync::OnceCell;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::config::{Config, HttpSettings};
use crate::http::health::{self, Readiness};
use crate::http::routes::{self, Handlers, ROUTES};
use crate::http::server::{self, Connections};
use crate::metrics::http::HttpMetrics;
use crate::metrics::scrape::Scrapes;
use crate::metrics::{self, REGISTRY};
use crate::shutdown::{CancellationToken, Signals};
use crate::telemetry::{ANNOUNCE, FLUSH_LIMIT, Logs};
use crate::ws::Sessions;
use crate::{collector, memory};

/// An error that stops the service, for `main` to print.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// Connections served at once on the `METRICS_ADDR` listener: Prometheus
/// keeps one open, the rest leave room for a second one, the probes and a
/// person with curl.
const METRICS_MAX_CONNECTIONS: usize = 16;

/// How long after the grace period shutdown still waits for websocket
/// sessions, which each started their own wait a moment after it began.
const SESSION_SLACK: Duration = Duration::from_secs(1);

/// The bound listeners: the main one and, with `METRICS_ADDR`, the one for
/// `/metrics` and the health checks.
pub struct Listeners {
    pub main: TcpListener,
    pub metrics: Option<TcpListener>,
}

/// Runs the binary's service: binds the configured addresses, announces
/// them, and serves until a signal. `logs` is flushed on a second signal,
/// which exits at once with the status a shell gives a process killed by
/// it (128 + its number).
pub async fn run(config: &Config, logs: &Logs) -> Result<(), Error> {
    // Every connection is a descriptor, so a soft limit of 1024 would bound
    // the service before its own limits do: raised to the hard limit, as Go
    // programs do. Best effort: at the old limit the service still runs.
    if let Err(err) = rlimit::increase_nofile_limit(u64::MAX) {
        tracing::warn!(error = %err, "cannot raise the open-file limit");
    }
    let listeners = bind(config).await?;
    let mut signals = Signals::install()
        .map_err(|err| format!("cannot install the SIGTERM/SIGINT handlers: {err}"))?;
    // Scripts and tests wait for the `Started` line; the metrics port comes
    // first, so that whoever waits for it has both.
    if let Some(listener) = &listeners.metrics {
        let port = listener.local_addr()?.port();
        tracing::info!(target: ANNOUNCE, "Metrics on port {port}");
    }
    let port = listeners.main.local_addr()?.port();
    tracing::info!(target: ANNOUNCE, "Started on port {port}");

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let logs = logs.clone();
    tokio::spawn(async move {
        let (first, _) = signals.recv().await;
        tracing::info!(signal = first, "shutting down");
        let _ = stop.send(());
        let (second, number) = signals.recv().await;
        tracing::error!(
            signal = second,
            "second signal during shutdown, exiting at once"
        );
        // Off the worker thread: the flush may wait for the pipe.
        let _ = tokio::task::spawn_blocking(move || logs.finish(FLUSH_LIMIT)).await;
        std::process::exit(128 + number);
    });
    serve(listeners, config, async {
        let _ = stopped.await;
    })
    .await
}

/// Binds `LISTEN_ADDR` and, if set, `METRICS_ADDR`.
async fn bind(config: &Config) -> Result<Listeners, Error> {
    let bind = |variable: &'static str, addr| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|err| format!("cannot listen on {variable}={addr}: {err}"))
    };
    let main = bind("LISTEN_ADDR", config.listen_addr).await?;
    let metrics = match config.metrics_addr {
        Some(addr) => Some(bind("METRICS_ADDR", addr).await?),
        None => None,
    };
    Ok(Listeners { main, metrics })
}

/// Runs the service on `listeners` until `stop` completes, then shuts down
/// as the module documentation says. Tests bind port 0 and call this.
pub async fn serve(
    listeners: Listeners,
    config: &Config,
    stop: impl Future<Output = ()>,
) -> Result<(), Error> {
    metrics::register()?;
    let stopping = CancellationToken::new();
    // Cancelled however this returns, so no task outlives the service.
    let _cancel_on_return = stopping.clone().drop_guard();
    let mut background = JoinSet::new();
    background.spawn(memory::release_freed_memory(stopping.clone()));
    if let Some(interval) = config.collect_interval() {
        background.spawn(collector::data_collector(interval, stopping.clone()));
    }
    let sessions = Sessions::new(config.ws, stopping.clone(), config.shutdown_grace);
    let readiness = Readiness::new();
    // Leaked, one per run of the service: the routes, which warp clones for
    // every request, then hold a plain reference, not shared counts.
    let handlers: &'static Handlers = Box::leak(Box::new(Handlers {
        metrics: http_metrics()?,
        // One limit for the scrapes of both listeners.
        scrapes: Scrapes::new(REGISTRY.clone(), config.metrics_max_in_flight),
        readiness: readiness.clone(),
        sessions: sessions.clone(),
    }));
    let public = routes::public(handlers, listeners.metrics.is_none());
    let metrics_listener = listeners.metrics.map(|listener| {
        let settings = HttpSettings {
            max_connections: METRICS_MAX_CONNECTIONS,
            ..config.http
        };
        server::accept(
            listener,
            routes::metrics_only(handlers),
            settings,
            stopping.clone(),
        )
    });

    let mut died = None;
    let (main, metrics_connections, ()) = tokio::join!(
        server::accept(listeners.main, public, config.http, stopping.clone()),
        async {
            match metrics_listener {
                Some(accepting) => Some(accepting.await),
                None => None,
            }
        },
        async {
            let drained = health::drain_after(stop, &readiness, config.shutdown_drain);
            died = until_done_or_dead(drained, &mut background).await;
            stopping.cancel();
        },
    );

    let mut connections: Vec<Connections> =
        std::iter::once(main).chain(metrics_connections).collect();
    let deadline = Instant::now() + config.shutdown_grace;
    if tokio::time::timeout_at(deadline, drained(&mut connections))
        .await
        .is_err()
    {
        tracing::warn!(grace = ?config.shutdown_grace, "grace period over; dropping the remaining connections");
        connections.iter_mut().for_each(Connections::abort);
        drained(&mut connections).await;
    }
    // Each session gives its client at most the grace period to answer the
    // close, so the sessions end by the deadline too, give or take the
    // moment each took to see the notice.
    if tokio::time::timeout_at(deadline + SESSION_SLACK, sessions.all_closed())
        .await
        .is_err()
    {
        tracing::warn!("websocket sessions still open after the grace period; leaving them");
    }
    // The others stop as soon as they see the notice.
    while let Some(ended) = background.join_next().await {
        if let Err(err) = ended {
            died.get_or_insert(task_error(Err(err)));
        }
    }
    match died {
        Some(error) => Err(format!("a background task died: {error}").into()),
        None => Ok(()),
    }
}

/// Waits for `done`, or for a task of `background` to end first, which
/// only shutdown should make them do: then logs it and returns what became
/// of it.
async fn until_done_or_dead(
    done: impl Future<Output = ()>,
    background: &mut JoinSet<()>,
) -> Option<String> {
    tokio::select! {
        () = done => None,
        Some(ended) = background.join_next() => {
            let error = task_error(ended);
            tracing::error!(error, "a background task died; shutting down");
            Some(error)
        }
    }
}

/// The request metrics, registered once per process however many times
/// [`serve`] runs.
fn http_metrics() -> prometheus::Result<HttpMetrics> {
    static HTTP_METRICS: OnceCell<HttpMetrics> = OnceCell::new();
    HTTP_METRICS
        .get_or_try_init(|| HttpMetrics::register(&REGISTRY, &ROUTES))
        .cloned()
}

/// What became of a background task that ended, which only shutdown
/// should make it do.
fn task_error(ended: Result<(), tokio::task::JoinError>) -> String {
    match ended {
        Ok(()) => "it returned".to_owned(),
        Err(err) if err.is_panic() => {
            format!(
                "it panicked: {}",
                metrics::panic_message(err.into_panic().as_ref())
            )
        }
        Err(err) => err.to_string(),
    }
}

/// Completes when every connection of every listener has finished.
async fn drained(connections: &mut [Connections]) {
    for listener_connections in connections {
        listener_connections.drained().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_background_task_that_dies_ends_the_wait_and_says_how() {
        let mut background = JoinSet::new();
        background.spawn(std::future::pending());
        background.spawn(async { panic!("the collector broke") });

        let died = until_done_or_dead(std::future::pending(), &mut background).await;

        assert_eq!(died.as_deref(), Some("it panicked: the collector broke"));
    }

    #[tokio::test]
    async fn a_task_that_returns_early_has_died_too_and_a_stop_is_no_death() {
        let mut background = JoinSet::new();
        background.spawn(async {});
        let died = until_done_or_dead(std::future::pending(), &mut background).await;
        assert_eq!(died.as_deref(), Some("it returned"));

        background.spawn(std::future::pending());
        assert_eq!(until_done_or_dead(async {}, &mut background).await, None);
    }
}
