//! Log lines: `tracing` events, filtered as `RUST_LOG` says, formatted by
//! `tracing-subscriber` as text or as one JSON object per line, and written
//! to stdout by a thread of their own.
//!
//! stdout is often a pipe to a process that can be slow or gone (`| head
//! -1`, a stalled log shipper). Writing to it from a worker thread would
//! stall every client served there, or panic on a broken pipe. So a worker
//! appends its line to a shared buffer of at most `MAX_QUEUED_BYTES`, and
//! the writer thread writes the buffer out; a line that finds it full is
//! dropped, and so is one the writer fails to write. Both are counted in the
//! counter given to [`init`], `log_lines_dropped_total`.
//!
//! Why not `tracing-appender`'s non-blocking writer: its thread waits on a
//! channel, so at any rate it keeps up with, every line costs a wake-up of
//! that thread and a `write` of its own, several times the CPU a line costs
//! here, on every websocket message (`cargo bench --bench logging`;
//! docs/logging.md has the figures). It also counts no failed write. Its
//! exit is bounded, as this writer's is by [`FLUSH_LIMIT`]: in 0.2.5,
//! dropping its guard waits at most about 1.1 s (100 ms to queue the
//! shutdown, 1 s for the thread to reach it), then leaves what is still
//! queued unwritten.
//!
//! Untrusted text (websocket ids, message text) is always a field of its
//! own: the text format writes string fields quoted and escaped, the JSON
//! format escapes them as JSON, so no client can forge a line.

use std::fs::File;
use std::io::Write;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread::Thread;
use std::time::{Duration, Instant};

use prometheus::IntCounter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::{LogFormat, LogSettings};

/// The target of the lines that say where the service listens, which
/// scripts wait for: written whatever `RUST_LOG` says.
pub const ANNOUNCE: &str = "rust_web_prometheus_example::announce";

/// Bytes of lines that may wait for the writer thread: thousands of lines,
/// and all that a reader that has stopped can cost.
const MAX_QUEUED_BYTES: usize = 1 << 20;

/// How long exit waits for the last log lines to reach stdout: a reader
/// that has stalled must not hold the process up.
pub const FLUSH_LIMIT: Duration = Duration::from_millis(500);

/// How long the writer lets lines gather before it writes them, unless
/// [`WRITE_NOW_BYTES`] are waiting: log lines reach stdout that much later.
const GATHER: Duration = Duration::from_millis(10);
const WRITE_NOW_BYTES: usize = 64 * 1024;

/// The installed logger. Clones share it.
#[derive(Clone)]
pub struct Logs(Arc<Shared>);

struct Shared {
    queue: Mutex<Queue>,
    writer: OnceLock<Thread>,
    /// Bytes the writer has written or given up on, for [`Logs::finish`].
    done_bytes: AtomicU64,
    dropped_lines: IntCounter,
}

struct Queue {
    lines: Vec<u8>,
    /// Bytes ever queued.
    queued_bytes: u64,
    /// The writer sleeps until a line comes.
    writer_waiting: bool,
    /// Someone waits in [`Logs::finish`]: write at once.
    finishing: bool,
}

impl Shared {
    /// Locks the queue even after a panic elsewhere: each change to it is
    /// one append or one swap, which a panic cannot leave half-done.
    fn queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn wake_writer(&self) {
        if let Some(writer) = self.writer.get() {
            writer.unpark();
        }
    }

    /// Queues `line`, or drops and counts it if the queue is full. Never
    /// waits, and wakes the writer only when it sleeps or must write now.
    fn push(&self, line: &[u8]) {
        let mut queue = self.queue();
        let before = queue.lines.len();
        if before + line.len() > MAX_QUEUED_BYTES {
            drop(queue);
            self.dropped_lines.inc();
            return;
        }
        queue.lines.extend_from_slice(line);
        queue.queued_bytes += line.len() as u64;
        let crossed = before < WRITE_NOW_BYTES && queue.lines.len() >= WRITE_NOW_BYTES;
        let wake = std::mem::take(&mut queue.writer_waiting) || crossed;
        drop(queue);
        if wake {
            self.wake_writer();
        }
    }
}

impl Logs {
    /// Waits until the lines logged so far are written or lost, but at most
    /// `limit`: a reader that does not read must not hold up the exit.
    pub fn finish(&self, limit: Duration) {
        let target = {
            let mut queue = self.0.queue();
            queue.finishing = true;
            queue.queued_bytes
        };
        self.0.wake_writer();
        let deadline = Instant::now() + limit;
        while self.0.done_bytes.load(Ordering::Acquire) < target && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// One line, which `tracing-subscriber` hands over with one `write_all`.
pub struct Line<'a>(&'a Shared);

impl Write for Line<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.push(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Logs {
    type Writer = Line<'a>;

    fn make_writer(&'a self) -> Line<'a> {
        Line(&self.0)
    }
}

/// Installs the process-wide logger, counting lost lines in
/// `dropped_lines`. Fails if stdout cannot be duplicated
/// (the process is out of descriptors), the writer thread cannot start, or
/// a logger is already installed.
pub fn init(
    settings: &LogSettings,
    dropped_lines: IntCounter,
) -> Result<Logs, Box<dyn std::error::Error + Send + Sync>> {
    let filter = settings
        .filter
        .env_filter()
        .add_directive(format!("{ANNOUNCE}=info").parse()?);
    // A descriptor of its own, written unbuffered, apart from std's `Stdout`.
    let stdout = File::from(std::io::stdout().as_fd().try_clone_to_owned()?);
    let logs = Logs(Arc::new(Shared {
        queue: Mutex::new(Queue {
            lines: Vec::new(),
            queued_bytes: 0,
            writer_waiting: false,
            finishing: false,
        }),
        writer: OnceLock::new(),
        done_bytes: AtomicU64::new(0),
        dropped_lines,
    }));
    let shared = Arc::clone(&logs.0);
    let writer = std::thread::Builder::new()
        .name("log-writer".into())
        .spawn(move || write_lines(&shared, stdout))?;
    let _ = logs.0.writer.set(writer.thread().clone());

    let layer = tracing_subscriber::fmt::layer().with_writer(logs.clone());
    let registry = tracing_subscriber::registry().with(filter);
    match settings.format {
        LogFormat::Text => registry.with(layer).try_init()?,
        LogFormat::Json => registry.with(layer.json().flatten_event(true)).try_init()?,
    }
    Ok(logs)
}

/// The writer thread: sleeps until a line comes, lets more gather for
/// [`GATHER`], writes them all, and counts the lines of a failed write (a
/// broken pipe after the reader left). Never spins.
fn write_lines(shared: &Shared, mut stdout: File) {
    let mut batch = Vec::new();
    loop {
        let mut queue = shared.queue();
        while queue.lines.is_empty() {
            queue.writer_waiting = true;
            drop(queue);
            std::thread::park();
            queue = shared.queue();
        }
        let gathered = Instant::now() + GATHER;
        while queue.lines.len() < WRITE_NOW_BYTES && !queue.finishing {
            let Some(left) = gathered.checked_duration_since(Instant::now()) else {
                break;
            };
            drop(queue);
            std::thread::park_timeout(left);
            queue = shared.queue();
        }
        std::mem::swap(&mut queue.lines, &mut batch);
        drop(queue);

        let mut written = 0;
        while written < batch.len() {
            match stdout.write(&batch[written..]) {
                Ok(0) => break,
                Ok(count) => written += count,
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        let lost = batch[written..]
            .iter()
            .filter(|&&byte| byte == b'\n')
            .count();
        shared.dropped_lines.inc_by(lost as u64);
        shared
            .done_bytes
            .fetch_add(batch.len() as u64, Ordering::Release);
        batch.clear();
        // A burst must not leave a large buffer for good.
        batch.shrink_to(WRITE_NOW_BYTES);
    }
}
