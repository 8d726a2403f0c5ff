//! The stop signals, and how tasks learn that shutdown has begun.
//!
//! Every long-running task holds a clone of one [`CancellationToken`]
//! (tokio-util's) and `select!`s on `cancelled()`; `app` cancels it once the
//! drain after the first signal is over. A connection task polls its
//! token's future about once per request: kept pinned across polls, that
//! costs nothing measurable (`cargo bench --bench http`).

pub use tokio_util::sync::CancellationToken;

/// The stop signals: SIGTERM (what `docker stop` and Kubernetes send) and
/// SIGINT (Ctrl-C).
pub struct Signals {
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
}

impl Signals {
    /// Installs the handlers. They are in place when this returns, so a
    /// signal sent as soon as the service says it has started is never lost
    /// to the default action (dying on the spot).
    pub fn install() -> std::io::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
        })
    }

    /// Completes when the next SIGTERM or SIGINT arrives, with its name and
    /// number.
    pub async fn recv(&mut self) -> (&'static str, i32) {
        tokio::select! {
            _ = self.terminate.recv() => ("SIGTERM", libc::SIGTERM),
            _ = self.interrupt.recv() => ("SIGINT", libc::SIGINT),
        }
    }
}
