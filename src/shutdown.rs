//! Graceful shutdown: the OS signals that start it, and the [`Shutdown`]
//! handle that long-running tasks hold and `select!` on to learn of it.

use tokio::sync::watch;

/// Installs handlers for SIGTERM (what `docker stop` and Kubernetes send) and
/// SIGINT (Ctrl-C) and returns a future that completes when either arrives.
///
/// The handlers are installed before this returns, not when the future is
/// first polled, so a signal sent as soon as the server says it has started
/// is never lost to the default action (dying on the spot).
pub fn signal() -> std::io::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};

    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
    })
}

/// Sends the shutdown notice to every [`Shutdown`] made from it.
#[derive(Debug)]
pub struct Trigger(watch::Sender<bool>);

/// A task's view of the shutdown notice. Cheap to clone, one per task.
#[derive(Debug, Clone)]
pub struct Shutdown(watch::Receiver<bool>);

/// A connected trigger and handle.
pub fn channel() -> (Trigger, Shutdown) {
    let (sender, receiver) = watch::channel(false);
    (Trigger(sender), Shutdown(receiver))
}

impl Trigger {
    /// Tells every handle that shutdown has begun.
    pub fn fire(&self) {
        self.0.send_replace(true);
    }
}

impl Shutdown {
    /// Whether shutdown has begun.
    pub fn is_stopping(&self) -> bool {
        *self.0.borrow()
    }

    /// Completes once shutdown has begun, at once if it already has. Also
    /// completes if the trigger is dropped, so a task can never outlive the
    /// server that would have told it to stop.
    pub async fn recv(&mut self) {
        // `wait_for` errs only when the trigger is gone, which also means stop.
        let _ = self.0.wait_for(|&stopping| stopping).await;
    }
}
