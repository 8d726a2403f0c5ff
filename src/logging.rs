//! Log lines: `tracing` events, filtered as `RUST_LOG` says, formatted by
//! `tracing-subscriber` as human-readable text or as one JSON object per
//! line, and written to stdout by a thread of their own.
//!
//! Why a thread and a bounded queue: stdout is often a pipe to a process that
//! can be slow or gone (`| head -1`, a stalled log shipper). `println!` would
//! block the worker thread that logs, and through stdout's lock every other
//! one that logs, or panic on a broken pipe and take the websocket session
//! that logged down with it. Here a worker formats its line and hands it to
//! an in-memory queue, which never waits. When the queue already holds
//! [`MAX_QUEUED_BYTES`] the line is dropped, and so is a line the writer
//! thread fails to write (a broken pipe after the reader left); both are
//! counted in `log_lines_dropped_total`, so a lossy log says so on
//! `/metrics`. Only the writer thread ever waits on the pipe.
//!
//! Why not `tracing-appender`'s lossy `non_blocking`: it drops lines the same
//! way, but it does not count the lines lost to write errors, and exposing
//! its drop count would take a collector polling its counter. The queue
//! below is as short and counts both.
//!
//! Untrusted text (websocket ids, message text) is always a field of its own,
//! never part of the message: the text format writes string fields quoted
//! and escaped, the JSON format escapes them as JSON, so no client can forge
//! a line.

use std::io::{IsTerminal, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::{LevelFilter, ParseError};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::{LogFormat, LogSettings};
use crate::metrics::LOG_LINES_DROPPED;

/// Bytes of formatted lines that may wait for the writer thread. A log line
/// is one to a few hundred bytes (message text is cut at 80 characters), so
/// this holds thousands of lines: a burst rides it out, and a reader that
/// has stopped costs no more than this, plus a few dozen bytes of
/// bookkeeping per line.
const MAX_QUEUED_BYTES: usize = 1 << 20;

/// Parses `RUST_LOG`-style directives (`info`, `warn,hyper=debug`, ...), with
/// `info` for whatever they leave out. The one place the filter syntax is
/// read, for validating the setting and for installing it.
pub fn filter(directives: &str) -> Result<EnvFilter, ParseError> {
    EnvFilter::builder()
        .with_default_directive(LevelFilter::INFO.into())
        .parse(directives)
}

/// What the workers and the writer thread share: the way in, and how much is
/// waiting.
#[derive(Clone)]
struct Queue {
    sender: mpsc::Sender<Item>,
    queued_bytes: Arc<AtomicUsize>,
}

enum Item {
    Line(Vec<u8>),
    /// Answered once every line queued before it has been written or dropped.
    Flush(mpsc::SyncSender<()>),
}

impl Queue {
    /// Queues `line` for the writer thread, or drops and counts it if the
    /// queue is full. Never waits.
    fn push(&self, line: Vec<u8>) {
        let len = line.len();
        let before = self.queued_bytes.fetch_add(len, Ordering::Relaxed);
        if before + len > MAX_QUEUED_BYTES {
            self.queued_bytes.fetch_sub(len, Ordering::Relaxed);
            LOG_LINES_DROPPED.inc();
            return;
        }
        if self.sender.send(Item::Line(line)).is_err() {
            // The writer thread is gone; nothing will ever write this.
            self.queued_bytes.fetch_sub(len, Ordering::Relaxed);
            LOG_LINES_DROPPED.inc();
        }
    }
}

/// One line being formatted; queued whole when the formatter is done with it.
struct LineWriter<'a> {
    queue: &'a Queue,
    line: Vec<u8>,
}

impl Write for LineWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.line.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LineWriter<'_> {
    fn drop(&mut self) {
        if !self.line.is_empty() {
            self.queue.push(std::mem::take(&mut self.line));
        }
    }
}

impl<'a> MakeWriter<'a> for Queue {
    type Writer = LineWriter<'a>;

    fn make_writer(&'a self) -> LineWriter<'a> {
        LineWriter {
            queue: self,
            line: Vec::new(),
        }
    }
}

/// The installed logger, for flushing it before the process exits.
#[derive(Clone)]
pub struct Logs(Queue);

impl Logs {
    /// Waits until the lines logged so far are written or dropped, but at
    /// most `limit`: a reader that does not read must not hold up the exit.
    pub fn flush(&self, limit: Duration) {
        let (done, flushed) = mpsc::sync_channel(1);
        if self.0.sender.send(Item::Flush(done)).is_ok() {
            let _ = flushed.recv_timeout(limit);
        }
    }
}

/// Installs the process-wide logger: `settings`' filter and format, lines to
/// stdout through the queue and a writer thread. Fails if the filter does
/// not parse, the thread cannot start, or a logger is already installed.
pub fn init(settings: &LogSettings) -> Result<Logs, crate::Error> {
    let filter = filter(settings.filter.directives())?;
    let (sender, lines) = mpsc::channel();
    let queue = Queue {
        sender,
        queued_bytes: Arc::new(AtomicUsize::new(0)),
    };
    // A descriptor of our own for stdout, so that lines are written with one
    // unbuffered write each, apart from std's buffered `Stdout`. There always
    // is a stdout to copy: if the process was started with it closed
    // (`>&-`), Rust's runtime opened /dev/null in its place before `main`,
    // so the lines go nowhere and count as written. Copying fails only when
    // the process is already out of descriptors, and then it cannot serve
    // either: a start-up error.
    let stdout = std::io::stdout().as_fd().try_clone_to_owned()?;
    let queued_bytes = Arc::clone(&queue.queued_bytes);
    std::thread::Builder::new()
        .name("log-writer".into())
        .spawn(move || write_lines(lines, stdout, &queued_bytes))?;

    let layer = tracing_subscriber::fmt::layer()
        .with_writer(queue.clone())
        .with_ansi(settings.format == LogFormat::Text && std::io::stdout().is_terminal())
        // Its fallback for a failed write is `eprintln!`, which panics if
        // stderr is gone too; the queue never fails a write anyway.
        .log_internal_errors(false);
    let registry = tracing_subscriber::registry().with(filter);
    match settings.format {
        LogFormat::Text => registry.with(layer).try_init()?,
        LogFormat::Json => registry.with(layer.json().flatten_event(true)).try_init()?,
    }
    Ok(Logs(queue))
}

/// The writer thread: writes each queued line to `stdout`, counting the ones
/// that fail. Blocks on the pipe and on the queue, never spins: after a
/// broken pipe every further write fails at once and is counted.
fn write_lines(lines: mpsc::Receiver<Item>, stdout: OwnedFd, queued_bytes: &AtomicUsize) {
    let mut stdout = std::fs::File::from(stdout);
    for item in lines {
        match item {
            Item::Line(line) => {
                if stdout.write_all(&line).is_err() {
                    LOG_LINES_DROPPED.inc();
                }
                queued_bytes.fetch_sub(line.len(), Ordering::Relaxed);
            }
            Item::Flush(done) => {
                let _ = done.try_send(());
            }
        }
    }
}
