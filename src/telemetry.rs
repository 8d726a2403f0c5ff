//! Log lines: `tracing` events, filtered as `RUST_LOG` says, formatted by
//! `tracing-subscriber` as text or as one JSON object per line, and written
//! to stdout by `tracing-appender`'s non-blocking writer.
//!
//! stdout is often a pipe to a process that can be slow or gone (`| head
//! -1`, a stalled log shipper). Writing to it from a worker thread would
//! stall every client served there, or panic on a broken pipe. So a worker
//! formats its line and hands it to a bounded queue; a thread of its own
//! writes the queue to stdout; a line that finds the queue full is dropped,
//! and so is one the thread fails to write. Both are counted, and
//! [`Logs::dropped_lines`] is exported as `log_lines_dropped_total`.
//!
//! Untrusted text (websocket ids, message text) is always a field of its
//! own: the text format writes string fields quoted and escaped, the JSON
//! format escapes them as JSON, so no client can forge a line.

use std::fs::File;
use std::io::{IsTerminal, Write};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tracing_appender::non_blocking::{ErrorCounter, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::{LogFormat, LogSettings};

/// The target of the lines that say where the service listens, which
/// scripts wait for: written whatever `RUST_LOG` says.
pub const ANNOUNCE: &str = "rust_web_prometheus_example::announce";

/// Lines that may wait for the writer thread. A line is a few hundred bytes
/// at most (message text is cut at 80 characters), so a stalled reader costs
/// at most a few MiB.
const QUEUED_LINES: usize = 8192;

/// Bytes gathered before the writer thread writes them, whether or not the
/// queue has run empty.
const WRITE_BATCH_BYTES: usize = 64 * 1024;

/// The installed logger.
#[derive(Clone)]
pub struct Logs {
    queue_full: ErrorCounter,
    write_failed: Arc<AtomicU64>,
    /// Flushes the queue when dropped; taken by [`Logs::finish`].
    guard: Arc<Mutex<Option<WorkerGuard>>>,
}

impl Logs {
    /// Lines lost so far: dropped from a full queue or failed to write.
    pub fn dropped_lines(&self) -> u64 {
        self.queue_full.dropped_lines() as u64 + self.write_failed.load(Ordering::Relaxed)
    }

    /// Waits until the lines logged so far are written, but at most `limit`:
    /// a reader that does not read must not hold up the exit. Lines logged
    /// afterwards are not written.
    pub fn finish(&self, limit: Duration) {
        let guard = self
            .guard
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let (done, finished) = std::sync::mpsc::channel();
        // The guard's drop waits for the writer thread, which may be stuck
        // on a pipe nobody reads: waited for from a thread of its own.
        std::thread::spawn(move || {
            drop(guard);
            let _ = done.send(());
        });
        let _ = finished.recv_timeout(limit);
    }
}

/// Installs the process-wide logger. Fails if stdout cannot be duplicated
/// (the process is out of descriptors) or a logger is already installed.
pub fn init(settings: &LogSettings) -> Result<Logs, Box<dyn std::error::Error + Send + Sync>> {
    let filter = settings
        .filter
        .env_filter()
        .add_directive(format!("{ANNOUNCE}=info").parse()?);
    let write_failed = Arc::new(AtomicU64::new(0));
    // A descriptor of its own, written unbuffered, apart from std's `Stdout`.
    let stdout = Stdout {
        file: File::from(std::io::stdout().as_fd().try_clone_to_owned()?),
        batch: Vec::new(),
        write_failed: Arc::clone(&write_failed),
    };
    let (writer, guard) = NonBlockingBuilder::default()
        .buffered_lines_limit(QUEUED_LINES)
        .lossy(true)
        .thread_name("log-writer")
        .finish(stdout);
    let queue_full = writer.error_counter();
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_ansi(settings.format == LogFormat::Text && std::io::stdout().is_terminal());
    let registry = tracing_subscriber::registry().with(filter);
    match settings.format {
        LogFormat::Text => registry.with(layer).try_init()?,
        LogFormat::Json => registry.with(layer.json().flatten_event(true)).try_init()?,
    }
    Ok(Logs {
        queue_full,
        write_failed,
        guard: Arc::new(Mutex::new(Some(guard))),
    })
}

/// stdout as the writer thread sees it: lines are gathered and written
/// together when the queue runs empty (the thread then flushes) or the batch
/// is full. A line that cannot be written is counted, never reported as an
/// error: the thread would only print it to stderr.
struct Stdout {
    file: File,
    batch: Vec<u8>,
    write_failed: Arc<AtomicU64>,
}

impl Write for Stdout {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        self.batch.extend_from_slice(line);
        if self.batch.len() >= WRITE_BATCH_BYTES {
            self.flush()?;
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let mut written = 0;
        while written < self.batch.len() {
            match self.file.write(&self.batch[written..]) {
                Ok(0) => break,
                Ok(count) => written += count,
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
                // A broken pipe, or stdout closed: the rest is lost.
                Err(_) => break,
            }
        }
        let lost = self.batch[written..]
            .iter()
            .filter(|&&byte| byte == b'\n')
            .count();
        self.write_failed.fetch_add(lost as u64, Ordering::Relaxed);
        self.batch.clear();
        Ok(())
    }
}
