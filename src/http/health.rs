//! Health checks for orchestrators and load balancers: `GET /healthz` (the
//! process serves requests) and `GET /readyz` (it wants new traffic), and the
//! drain period between a stop signal and the shutdown proper.
//!
//! Why drain: when Kubernetes stops a pod it sends SIGTERM and, at the same
//! moment, starts taking the pod out of the Service's endpoints. Every node's
//! proxy and every load balancer learns of that a little later, and until
//! then keeps sending new connections. A service that closed its listener on
//! SIGTERM would refuse them. So on the signal `/readyz` turns 503 at once
//! (for balancers that probe it), the service keeps accepting and serving for
//! `SHUTDOWN_DRAIN_SECS`, and only then does the shutdown of [`crate::app::serve`]
//! begin.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http::StatusCode;
use warp::reply::{Reply, Response};

/// Whether the service wants new traffic: true from start-up until a stop
/// signal. A handle to one shared flag; the route tree holds a clone.
#[derive(Debug, Clone)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    /// A service that is ready.
    pub fn new() -> Readiness {
        Readiness(Arc::new(AtomicBool::new(true)))
    }

    /// Whether `/readyz` answers 200.
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// Turns `/readyz` to 503 for good: a stopping service never becomes
    /// ready again.
    fn stop_accepting_traffic(&self) {
        self.0.store(false, Ordering::Relaxed);
    }
}

impl Default for Readiness {
    fn default() -> Readiness {
        Readiness::new()
    }
}

/// Completes `drain` after `stop_signal` does, having marked `readiness`
/// unready the moment the signal came. [`crate::app::serve`] starts its shutdown
/// when this completes.
pub async fn drain_after(
    stop_signal: impl Future<Output = ()>,
    readiness: &Readiness,
    drain: Duration,
) {
    stop_signal.await;
    readiness.stop_accepting_traffic();
    if !drain.is_zero() {
        tracing::info!(?drain, "draining: /readyz answers 503, still serving");
        tokio::time::sleep(drain).await;
    }
}

/// `GET /healthz`: 200 whenever the process can answer at all, draining or
/// not, so a liveness probe never restarts a service that is shutting down.
pub fn healthz() -> Response {
    "ok".into_response()
}

/// `GET /readyz`: 200 while the service wants traffic, 503 once a stop
/// signal has come.
pub fn readyz(readiness: &Readiness) -> Response {
    if readiness.is_ready() {
        "ready".into_response()
    } else {
        warp::reply::with_status("draining", StatusCode::SERVICE_UNAVAILABLE).into_response()
    }
}
