//! What a client's frames bring, as its session takes them: every message
//! counted, in `websocket_messages_received_total` and
//! `websocket_received_bytes_total`, and logged within the client's budget
//! of lines; the latest ping, for the session to answer; the client's close.
//!
//! The tutorial logs every message, and so does this service, up to
//! `WS_LOG_MESSAGES_PER_SEC` lines a second per client. A client that sends
//! more has the rest counted, not logged, and one line a second (or at its
//! next ping, or its end) says how many were left out. So no client can
//! fill the log, or the queue it shares with every other client's lines
//! and with the error lines (`telemetry`).

use std::time::Duration;

use once_cell::sync::Lazy;
use prometheus::IntCounter;
use tokio::time::Instant;

use super::frames::Received;
use crate::memory;
use crate::metrics::{WEBSOCKET_MESSAGES_RECEIVED, WEBSOCKET_RECEIVED_BYTES};

/// How much of a text message the log shows.
const LOGGED_TEXT_CHARS: usize = 80;

/// A message at least this large has left memory worth returning to the
/// system once freed (see [`memory`]).
const LARGE_MESSAGE_BYTES: usize = 4096;

/// The span of time the log budget counts lines in.
const LOG_WINDOW: Duration = Duration::from_secs(1);

/// The counters of one kind of message, resolved once: a message costs two
/// atomic additions, not two look-ups by label.
struct Counters {
    messages: IntCounter,
    bytes: IntCounter,
}

impl Counters {
    fn of(kind: &str) -> Counters {
        Counters {
            messages: WEBSOCKET_MESSAGES_RECEIVED.with_label_values(&[kind]),
            bytes: WEBSOCKET_RECEIVED_BYTES.with_label_values(&[kind]),
        }
    }

    fn count(&self, bytes: usize) {
        self.messages.inc();
        self.bytes.inc_by(bytes as u64);
    }
}

static TEXT: Lazy<Counters> = Lazy::new(|| Counters::of("text"));
static BINARY: Lazy<Counters> = Lazy::new(|| Counters::of("binary"));

/// One client's messages, pings and close, as they come.
pub struct Inbox<'a> {
    id: &'a str,
    log: LogBudget,
    /// The payload of the latest ping not yet answered: a pong answers the
    /// latest ping only (RFC 6455, 5.5.3), so no client can queue up more.
    pub ping: Option<Vec<u8>>,
    /// The client's close frame, once it has come: its code, if it had one.
    pub closed: Option<Option<u16>>,
    /// Frames that send each message back, for the Autobahn TestSuite's
    /// conformance run only (the `echo` feature, off in every other build).
    #[cfg(feature = "echo")]
    pub echo: Vec<u8>,
}

impl<'a> Inbox<'a> {
    /// The inbox of client `id`, which may have `lines_per_window` message
    /// lines logged a second.
    pub fn new(id: &'a str, lines_per_window: u32) -> Inbox<'a> {
        Inbox {
            id,
            log: LogBudget {
                lines_per_window,
                window_start: Instant::now(),
                logged: 0,
                left_out: 0,
            },
            ping: None,
            closed: None,
            #[cfg(feature = "echo")]
            echo: Vec::new(),
        }
    }

    /// The client's id.
    pub fn id(&self) -> &'a str {
        self.id
    }

    /// Takes one complete message or control frame from the client.
    pub fn take(&mut self, received: Received) {
        match received {
            Received::Text(text) => {
                TEXT.count(text.len());
                if self.log.allows_line() {
                    let end = text
                        .char_indices()
                        .nth(LOGGED_TEXT_CHARS)
                        .map_or(text.len(), |(end, _)| end);
                    tracing::info!(
                        id = self.id,
                        bytes = text.len(),
                        text = &text[..end],
                        "text message received"
                    );
                }
                #[cfg(feature = "echo")]
                super::frames::data_frame(true, text.as_bytes(), &mut self.echo);
                release_if_large(text.len());
            }
            Received::Binary(bytes) => {
                BINARY.count(bytes.len());
                if self.log.allows_line() {
                    let id = self.id;
                    tracing::info!(id, bytes = bytes.len(), "binary message received");
                }
                #[cfg(feature = "echo")]
                super::frames::data_frame(false, &bytes, &mut self.echo);
                release_if_large(bytes.len());
            }
            Received::Ping(payload) => self.ping = Some(payload),
            Received::Pong => {}
            Received::Close(code) => self.closed = Some(code),
        }
    }

    /// Starts a new window of the log budget once the last has passed, and
    /// says how many lines the last left out. The session calls it with the
    /// time of each read and each ping.
    pub fn tick(&mut self, now: Instant) {
        if now.duration_since(self.log.window_start) >= LOG_WINDOW {
            self.log_left_out();
            self.log.window_start = now;
            self.log.logged = 0;
        }
    }

    /// Says how many lines were left out since the last time it was said.
    pub fn log_left_out(&mut self) {
        let left_out = std::mem::take(&mut self.log.left_out);
        if left_out > 0 {
            let (id, per_second) = (self.id, self.log.lines_per_window);
            tracing::info!(
                id,
                left_out,
                per_second,
                "message lines left out, over the client's budget"
            );
        }
    }
}

/// Once a message of `bytes` is freed: if it was large, has [`memory`]
/// return what it leaves.
fn release_if_large(bytes: usize) {
    if bytes >= LARGE_MESSAGE_BYTES {
        memory::release_soon();
    }
}

/// Message lines logged in the current window of [`LOG_WINDOW`], and those
/// left out.
struct LogBudget {
    lines_per_window: u32,
    window_start: Instant,
    logged: u32,
    left_out: u64,
}

impl LogBudget {
    /// Whether one more message line fits the budget; counts it either way.
    fn allows_line(&mut self) -> bool {
        if self.logged < self.lines_per_window {
            self.logged += 1;
            true
        } else {
            self.left_out += 1;
            false
        }
    }
}
