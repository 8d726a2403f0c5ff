//! Giving memory back to the operating system after a burst of websocket
//! clients has left, or after large messages have come and gone.
//!
//! Every client allocates a few KiB in small pieces. When thousands leave,
//! glibc's allocator keeps the freed pieces: it returns memory to the system
//! only from the top of each heap, and a few long-lived allocations made
//! during the burst pin the rest, so RSS stays at its peak after they have
//! all gone. `malloc_trim(0)` releases every free page in every heap, and
//! brings RSS back to near its fresh level (`cargo bench --bench websocket`,
//! docs/websockets.md). The buffers of large messages (up to `WS_MAX_MESSAGE_BYTES`
//! each, freed as soon as the message has been handled) stay with glibc the
//! same way. So a background task calls it after clients have left or large
//! messages have been freed, at most once per check period.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::shutdown::CancellationToken;

/// How often the task checks whether memory has been freed.
pub const CHECK_EVERY: Duration = Duration::from_secs(5);

/// Set when a client leaves or a large message is freed, cleared when the
/// heap is trimmed. A flag rather than a look at `connected_clients`: a
/// burst that comes and goes between two checks leaves the gauge where it
/// was, but its memory still needs returning.
static MEMORY_FREED: AtomicBool = AtomicBool::new(false);

/// Records that a client has left or a large buffer has been freed, so the
/// next check trims the heap.
pub fn release_soon() {
    MEMORY_FREED.store(true, Ordering::Relaxed);
}

/// Until shutdown, trims the heap at every check that follows a release.
pub async fn release_freed_memory(stopping: CancellationToken) {
    let mut checks = tokio::time::interval(CHECK_EVERY);
    loop {
        tokio::select! {
            _ = checks.tick() => {}
            () = stopping.cancelled() => return,
        }
        if MEMORY_FREED.swap(false, Ordering::Relaxed) {
            // Trimming walks every heap under its lock: off the async workers.
            let _ = tokio::task::spawn_blocking(release_free_memory).await;
        }
    }
}

/// Returns the allocator's free pages to the operating system.
fn release_free_memory() {
    // Only glibc has malloc_trim; other allocators (musl's, jemalloc) return
    // memory on their own.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists; it has no
    // preconditions and is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}
