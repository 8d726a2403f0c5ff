//! Graceful shutdown: the OS signals that start it, and the [`Shutdown`]
//! handle that long-running tasks hold and `select!` on to learn of it.

use tokio::sync::watch;

/// Completes when the process receives SIGTERM (what `docker stop` and
/// Kubernetes send) or SIGINT (Ctrl-C).
pub async fn signal() {
    use tokio::signal::unix::{SignalKind, signal};

    // Installing a handler fails only if the runtime has no signal driver,
    // which `#[tokio::main]` always provides.
    let mut terminate = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    let mut interrupt = signal(SignalKind::interrupt()).expect("install SIGINT handler");
    tokio::select! {
        _ = terminate.recv() => {}
        _ = interrupt.recv() => {}
    }
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
    /// Completes once shutdown has begun, at once if it already has. Also
    /// completes if the trigger is dropped, so a task can never outlive the
    /// server that would have told it to stop.
    pub async fn recv(&mut self) {
        // `wait_for` errs only when the trigger is gone, which also means stop.
        let _ = self.0.wait_for(|&stopping| stopping).await;
    }
}
