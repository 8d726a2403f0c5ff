//! `http_requests_in_flight`: the HTTP requests the routes are handling right
//! now, the scrape that reads it included.
//!
//! A shared gauge would have every request write the same atomic from every
//! worker thread twice, and fetching its cache line from the other core
//! costs far more than the update, as with the request counters in
//! [`http_metrics`](crate::http_metrics). So each thread counts the requests
//! it has started and those it has finished, in a slot only it writes, and a
//! scrape sums the slots.
//!
//! A request can start on one worker and finish on another, so one thread's
//! slot alone means nothing, and both counts only grow. The sum is exact:
//! a scrape first reads every thread's finished count, then every started
//! count. A finish happens after its start, and reading the finish (with
//! `Acquire`) makes the start visible to the reads that follow, so every
//! finished request counted is also counted as started and the total is
//! never negative. Requests that start or finish while the scrape reads may
//! or may not be counted, as with any gauge read at one moment.

use std::sync::atomic::{AtomicU64, Ordering, fence};
use std::sync::{Arc, Mutex, MutexGuard};

use prometheus::core::{Collector, Desc};
use prometheus::proto::{MetricFamily, MetricType};

use crate::metrics::{desc, family};

/// One thread's counts. Aligned to a cache line of its own (128 bytes covers
/// the adjacent-line prefetch of x86 too), so that no other thread's slot
/// shares it.
#[derive(Default)]
#[repr(align(128))]
struct Slot {
    started: AtomicU64,
    finished: AtomicU64,
}

impl Slot {
    /// Adds one to a count only this thread writes: a load and a store, with
    /// no locked read-modify-write. `Release`, so that a scrape that sees a
    /// finish also sees the start that came before it on another thread.
    fn bump(count: &AtomicU64) {
        count.store(count.load(Ordering::Relaxed) + 1, Ordering::Release);
    }
}

/// Every thread's slot, and the counts of threads that have ended.
struct Slots {
    live: Vec<Arc<Slot>>,
    ended_started: u64,
    ended_finished: u64,
}

static SLOTS: Mutex<Slots> = Mutex::new(Slots {
    live: Vec::new(),
    ended_started: 0,
    ended_finished: 0,
});

thread_local! {
    static SLOT: Arc<Slot> = {
        let slot = Arc::new(Slot::default());
        lock().live.push(Arc::clone(&slot));
        slot
    };
}

/// Locks the list of slots (see [`crate::lock`] for why poisoning is ignored).
fn lock() -> MutexGuard<'static, Slots> {
    crate::lock(&SLOTS)
}

/// A request being handled, counted from [`InFlight::start`] until the guard
/// is dropped: when the response leaves the routes, or when the connection
/// goes away first and drops the request with it.
#[must_use = "the request counts as in flight only while the guard lives"]
pub struct InFlight(());

impl InFlight {
    pub fn start() -> InFlight {
        SLOT.with(|slot| Slot::bump(&slot.started));
        InFlight(())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        // A guard dropped while its thread is being torn down (a runtime
        // shutting down drops the tasks it holds) falls back to the shared
        // list, where the slot would have ended up anyway.
        let counted = SLOT.try_with(|slot| Slot::bump(&slot.finished));
        if counted.is_err() {
            lock().ended_finished += 1;
        }
    }
}

/// The requests in flight now, by the reading order explained at the top.
pub fn count() -> u64 {
    let mut slots = lock();
    // Threads that have ended hold no request: fold their final counts in.
    let mut ended = (0, 0);
    slots.live.retain(|slot| {
        let alive = Arc::strong_count(slot) > 1;
        if !alive {
            // Pairs with the release of the thread's own handle, after its
            // last count.
            fence(Ordering::Acquire);
            ended.0 += slot.started.load(Ordering::Acquire);
            ended.1 += slot.finished.load(Ordering::Acquire);
        }
        alive
    });
    slots.ended_started += ended.0;
    slots.ended_finished += ended.1;

    let finished: u64 = slots.ended_finished
        + slots
            .live
            .iter()
            .map(|slot| slot.finished.load(Ordering::Acquire))
            .sum::<u64>();
    let started: u64 = slots.ended_started
        + slots
            .live
            .iter()
            .map(|slot| slot.started.load(Ordering::Acquire))
            .sum::<u64>();
    started - finished
}

/// The collector of `http_requests_in_flight`.
#[derive(Debug)]
pub struct RequestsInFlight(Desc);

impl RequestsInFlight {
    pub fn new() -> RequestsInFlight {
        RequestsInFlight(desc(
            "http_requests_in_flight",
            "HTTP requests being handled, this scrape included",
            &[],
        ))
    }
}

impl Default for RequestsInFlight {
    fn default() -> Self {
        RequestsInFlight::new()
    }
}

impl Collector for RequestsInFlight {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.0]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let in_flight = [(vec![], count() as f64)];
        vec![family(&self.0, MetricType::GAUGE, in_flight)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    // The count is process-wide: the tests here take turns, and no other
    // test of this crate starts a request.
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

    #[test]
    fn a_request_that_moves_to_another_thread_is_counted_once() {
        let _turn = crate::lock(&ONE_AT_A_TIME);
        let before = count();
        let (to_finisher, guards) = mpsc::channel::<InFlight>();
        let finisher = std::thread::spawn(move || {
            for guard in guards {
                drop(guard);
            }
        });

        let held: Vec<InFlight> = (0..5).map(|_| InFlight::start()).collect();
        assert_eq!(count(), before + 5);
        for guard in held {
            to_finisher.send(guard).unwrap();
        }
        drop(to_finisher);
        finisher.join().unwrap();

        // The finishing thread has ended too: its counts are folded in.
        assert_eq!(count(), before);
    }

    #[test]
    fn starts_and_finishes_on_many_threads_add_up_to_zero() {
        let _turn = crate::lock(&ONE_AT_A_TIME);
        let before = count();
        let (to_finishers, guards) = mpsc::channel::<InFlight>();
        let guards = Arc::new(Mutex::new(guards));
        let finishers: Vec<_> = (0..4)
            .map(|_| {
                let guards = Arc::clone(&guards);
                std::thread::spawn(move || {
                    while let Ok(guard) = guards.lock().unwrap().recv() {
                        drop(guard);
                    }
                })
            })
            .collect();
        let starters: Vec<_> = (0..4)
            .map(|_| {
                let to_finishers = to_finishers.clone();
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        to_finishers.send(InFlight::start()).unwrap();
                    }
                })
            })
            .collect();
        for starter in starters {
            starter.join().unwrap();
        }
        drop(to_finishers);
        for finisher in finishers {
            finisher.join().unwrap();
        }

        assert_eq!(count(), before);
    }
}
