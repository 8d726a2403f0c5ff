//! A warp web service instrumented with Prometheus, after the tutorial
//! "Prometheus metrics in a Rust web service".
//!
//! - [`config`]: every setting, its default, parsing and validation.
//! - [`metrics`]: the custom registry, the tutorial's four metrics, and
//!   encoding them for `GET /metrics`.
//! - [`http_metrics`]: `http_requests_total` and
//!   `http_request_duration_seconds` for every request, recorded by one
//!   wrapper around the routes.
//! - [`gzip`]: `Accept-Encoding` negotiation and gzip for `/metrics`.
//! - [`collector`]: the simulated `data_collector` that feeds the response
//!   metrics, and the status-code classification.
//! - [`routes`]: the warp filter tree and its small handlers.
//! - [`ws`]: websocket sessions and the `connected_clients` guard.
//! - [`shutdown`]: the signals that stop the server and how tasks observe them.
//!
//! [`serve`] runs the whole service on a listener the caller has bound, so
//! `main` binds the configured address and tests bind port 0.
//!
//! Errors: configuration errors are [`config::ConfigError`]; everything else
//! that can stop the server is returned as a boxed [`Error`] for `main` to
//! print. Handlers never panic on bad input.

pub mod collector;
pub mod config;
pub mod gzip;
pub mod http_metrics;
pub mod metrics;
pub mod routes;
pub mod shutdown;
pub mod ws;

use std::future::Future;

use tokio::net::TcpListener;

use crate::config::Config;

/// An error that stopped the server.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// Runs the service on `listener` until `shutdown` completes, then stops
/// accepting, lets in-flight requests finish and returns.
pub async fn serve(
    listener: TcpListener,
    config: &Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    metrics::register()?;
    let (trigger, stopping) = shutdown::channel();
    if let Some(interval) = config.collect_interval {
        tokio::spawn(collector::data_collector(interval, stopping.clone()));
    }
    warp::serve(routes::routes())
        .incoming(listener)
        .graceful(async move {
            shutdown.await;
            trigger.fire();
        })
        .run()
        .await;
    Ok(())
}
