//! Graceful shutdown: the OS signals that start it (and a second one that
//! cuts it short, in `main`), and the [`Shutdown`]
//! handle that long-running tasks hold and `select!` on to learn of it.
//!
//! Why not tokio's `watch` or tokio-util's `CancellationToken`: every
//! connection task polls its handle each time it wakes, about once per
//! request, and a pending `Notify` (under both) takes a lock shared by all
//! its waiters on every poll. Here a poll reads one flag that nothing writes
//! until shutdown and touches only the handle's own waker slot; the shared
//! list of handles is locked only when a handle is made or dropped, and once
//! at shutdown. `CancellationToken` cost FIXME % of a request's CPU
//! (`cargo bench --bench http`, docs/performance.md).

use std::collections::HashMap;
use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::Poll;

use futures::task::AtomicWaker;

/// The stop signals: SIGTERM (what `docker stop` and Kubernetes send) and
/// SIGINT (Ctrl-C).
pub struct Signals {
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
}

impl Signals {
    /// Installs the handlers. They are in place when this returns, not when
    /// [`Signals::recv`] is first polled, so a signal sent as soon as the
    /// server says it has started is never lost to the default action
    /// (dying on the spot).
    pub fn install() -> std::io::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};

        Ok(Signals {
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
        })
    }

    /// Completes when the next SIGTERM or SIGINT arrives, with which it was.
    pub async fn recv(&mut self) -> StopSignal {
        tokio::select! {
            _ = self.terminate.recv() => StopSignal::Terminate,
            _ = self.interrupt.recv() => StopSignal::Interrupt,
        }
    }
}

/// A signal that asks the service to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopSignal {
    /// SIGTERM
    Terminate,
    /// SIGINT
    Interrupt,
}

impl StopSignal {
    /// Its name, for the log.
    pub fn name(self) -> &'static str {
        match self {
            StopSignal::Terminate => "SIGTERM",
            StopSignal::Interrupt => "SIGINT",
        }
    }

    /// Its number, for the exit status a shell gives a process it killed
    /// (128 + number).
    pub fn number(self) -> i32 {
        match self {
            StopSignal::Terminate => libc::SIGTERM,
            StopSignal::Interrupt => libc::SIGINT,
        }
    }
}

/// What the trigger and every handle share.
struct Shared {
    stopping: AtomicBool,
    handles: Mutex<Handles>,
}

/// The waker slot of every live handle, so the trigger can wake them all.
#[derive(Default)]
struct Handles {
    next_id: u64,
    wakers: HashMap<u64, Arc<AtomicWaker>>,
}

impl Shared {
    /// Locks the list even after a panic elsewhere: each change to it is one
    /// insertion or removal, which a panic cannot leave half-done.
    fn handles(&self) -> MutexGuard<'_, Handles> {
        self.handles.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Sends the shutdown notice to every [`Shutdown`] made from it. Dropping it
/// sends the notice too, so no task can outlive the server that would have
/// told it to stop.
pub struct Trigger(Arc<Shared>);

/// A task's view of the shutdown notice. Clone one for each task.
pub struct Shutdown {
    shared: Arc<Shared>,
    id: u64,
    waker: Arc<AtomicWaker>,
}

/// A connected trigger and handle.
pub fn channel() -> (Trigger, Shutdown) {
    let shared = Arc::new(Shared {
        stopping: AtomicBool::new(false),
        handles: Mutex::default(),
    });
    let handle = Shutdown::subscribe(&shared);
    (Trigger(shared), handle)
}

impl Trigger {
    /// Tells every handle that shutdown has begun. Only the first call does
    /// anything.
    pub fn fire(&self) {
        // Set before waking: a handle registering its waker concurrently
        // checks the flag after registering, so it cannot miss both.
        if self.0.stopping.swap(true, Ordering::SeqCst) {
            return;
        }
        // Woken outside the lock: a woken task may drop its handle at once,
        // which takes the lock.
        let wakers: Vec<_> = self.0.handles().wakers.values().cloned().collect();
        for waker in wakers {
            waker.wake();
        }
    }
}

impl Drop for Trigger {
    fn drop(&mut self) {
        self.fire();
    }
}

impl Shutdown {
    fn subscribe(shared: &Arc<Shared>) -> Shutdown {
        let waker = Arc::new(AtomicWaker::new());
        let mut handles = shared.handles();
        let id = handles.next_id;
        handles.next_id += 1;
        handles.wakers.insert(id, Arc::clone(&waker));
        Shutdown {
            shared: Arc::clone(shared),
            id,
            waker,
        }
    }

    /// Whether shutdown has begun.
    pub fn is_stopping(&self) -> bool {
        self.shared.stopping.load(Ordering::SeqCst)
    }

    /// Completes once shutdown has begun, at once if it already has.
    pub async fn recv(&mut self) {
        poll_fn(|cx| {
            if self.is_stopping() {
                return Poll::Ready(());
            }
            self.waker.register(cx.waker());
            // Checked again after registering: the trigger may have fired
            // between the first check and the registration.
            if self.is_stopping() {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await
    }
}

impl Clone for Shutdown {
    fn clone(&self) -> Shutdown {
        Shutdown::subscribe(&self.shared)
    }
}

impl Drop for Shutdown {
    fn drop(&mut self) {
        self.shared.handles().wakers.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// How long a test waits for a notice that should come at once: it
    /// bounds a failure, so a regression fails the test instead of hanging
    /// the suite.
    const PATIENCE: Duration = Duration::from_secs(10);

    /// `handle.recv()`, failing the test if it does not complete.
    async fn hears(handle: &mut Shutdown) {
        tokio::time::timeout(PATIENCE, handle.recv())
            .await
            .expect("the handle heard the notice");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_handle_hears_the_trigger_even_if_it_was_waiting_first() {
        let (trigger, handle) = channel();
        let (parked, mut parked_waiters) = tokio::sync::mpsc::unbounded_channel();
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let mut handle = handle.clone();
                let parked = parked.clone();
                tokio::spawn(async move {
                    let mut notice = std::pin::pin!(handle.recv());
                    // Polled once and found waiting, so only the trigger's
                    // wake-up can complete it.
                    assert!(futures::poll!(notice.as_mut()).is_pending());
                    parked.send(()).unwrap();
                    tokio::time::timeout(PATIENCE, notice)
                        .await
                        .expect("woken by the trigger");
                })
            })
            .collect();
        for _ in 0..3 {
            parked_waiters.recv().await.unwrap();
        }

        trigger.fire();

        for waiter in waiters {
            waiter.await.unwrap();
        }
        assert!(handle.is_stopping());
    }

    #[tokio::test]
    async fn a_handle_made_after_the_trigger_fired_completes_at_once() {
        let (trigger, handle) = channel();
        trigger.fire();

        let mut late = handle.clone();

        hears(&mut late).await;
    }

    #[tokio::test]
    async fn dropping_the_trigger_counts_as_firing_it() {
        let (trigger, mut handle) = channel();

        drop(trigger);

        hears(&mut handle).await;
    }

    #[test]
    fn dropped_handles_leave_the_list() {
        let (_trigger, handle) = channel();
        let clones: Vec<_> = (0..5).map(|_| handle.clone()).collect();
        assert_eq!(handle.shared.handles().wakers.len(), 6);

        drop(clones);

        assert_eq!(handle.shared.handles().wakers.len(), 1);
    }
}
