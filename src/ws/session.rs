//! One websocket client's session: its frames read straight off the socket,
//! its messages logged, pings to see that it is alive, and an ending it
//! understands, counted in `websocket_closes_total`.
//!
//! A session owns no receive buffer. It waits for the socket to be readable,
//! then reads into [`RECEIVE_BUFFER`], one per worker thread, and hands the
//! bytes to its [`Reader`], which keeps only what a message in progress
//! needs; the rest of a large payload is read straight into its message.
//! So an idle client costs its task, its socket and one timer (about
//! 2 KiB), a 60 KB message arrives in a few reads and is copied once, and
//! the memory of a message is freed once it has been logged.
//!
//! How it ends is [`ending`](super::ending)'s part.

use std::cell::RefCell;
use std::io::ErrorKind;
use std::time::Duration;

use bytes::BufMut;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::ending::{Ending, end};
use super::frames::{ControlFrame, Reader, Received, Refusal};
use crate::config::WsSettings;
use crate::memory;
use crate::metrics::CONNECTED_CLIENTS;
use crate::shutdown::CancellationToken;

/// Bytes read from a socket at once. Each worker thread has one buffer of
/// this size, which every session it serves reads into.
const RECEIVE_BUFFER_BYTES: usize = 64 * 1024;

/// Reads of one socket before its session lets the other tasks of its
/// worker run: a client that sends without pause cannot hold the thread.
const READS_PER_TURN: usize = 16;

/// A payload at least this long still to come is read straight into its
/// message, so that a large message is copied once, from the kernel.
const DIRECT_READ_BYTES: usize = 4096;

/// How much of a text message the log shows.
const LOGGED_TEXT_CHARS: usize = 80;

/// A message at least this large has left memory worth returning to the
/// system once freed (see [`memory`]).
const LARGE_MESSAGE_BYTES: usize = 4096;

thread_local! {
    /// The receive buffer of this worker thread, borrowed only between two
    /// awaits, while one session reads.
    static RECEIVE_BUFFER: RefCell<Box<[u8]>> =
        RefCell::new(vec![0; RECEIVE_BUFFER_BYTES].into_boxed_slice());
}

/// Counts one client in `connected_clients` for its lifetime: no early
/// return, error or panic can skip the decrement in `Drop`. Its drop also
/// tells [`memory`] that there is freed memory to return.
struct ConnectedClient;

impl ConnectedClient {
    fn new() -> ConnectedClient {
        CONNECTED_CLIENTS.inc();
        ConnectedClient
    }
}

impl Drop for ConnectedClient {
    fn drop(&mut self) {
        CONNECTED_CLIENTS.dec();
        memory::release_soon();
    }
}

/// What the client's bytes brought besides messages, which are logged as
/// they complete.
#[derive(Default)]
struct Heard {
    /// The payload of the latest ping not yet answered: a pong answers the
    /// latest ping only (RFC 6455, 5.5.3), so no client can queue up more.
    ping: Option<Vec<u8>>,
    /// The client's close frame, once it has come: its code, if it had one.
    closed: Option<Option<u16>>,
}

/// Serves the client `id` on `stream`, of which hyper has already read
/// `early` (frames sent right behind the handshake), until the session ends.
/// `shutdown_grace` bounds the wait for the client's answer to a 1001.
pub async fn run(
    mut stream: TcpStream,
    early: Vec<u8>,
    id: String,
    settings: WsSettings,
    shutdown_grace: Duration,
    stopping: CancellationToken,
) {
    let _client = ConnectedClient::new();
    let id = id.as_str();
    tracing::info!(id, "client connected");

    let (heartbeat, silence_limit) = (settings.heartbeat, 2 * settings.heartbeat);
    let mut reader = Reader::new(settings.max_message_bytes);
    let mut heard = Heard::default();
    // One timer for the next ping and for the deadline of silence, set to
    // whichever comes first: each costs an idle session its room.
    let now = Instant::now();
    let (mut next_ping, mut silent_at, mut last_data) = (now + heartbeat, now + silence_limit, now);
    let timer = tokio::time::sleep_until(next_ping);
    tokio::pin!(timer);
    // Pinned once: a new one per wake-up would lock the token's waiters.
    let stopped = stopping.cancelled();
    tokio::pin!(stopped);

    let mut ending = feed(&mut reader, &early, id, &mut heard).err();
    drop(early);
    let ending = loop {
        if let Some(ending) = ending {
            break ending;
        }
        if let Some(code) = heard.closed {
            break Ending::Closed(code);
        }
        if let Some(ping) = heard.ping.take() {
            let pong = send(&mut stream, ControlFrame::pong(&ping), silent_at);
            if let Err(ending) = Box::pin(pong).await {
                break ending;
            }
        }
        let wake = next_ping.min(silent_at);
        if timer.deadline() != wake {
            timer.as_mut().reset(wake);
        }
        ending = tokio::select! {
            biased;
            () = &mut stopped => Some(Ending::ShuttingDown),
            // Rather than `readable()`, whose future is 150 bytes.
            readable = std::future::poll_fn(|cx| stream.poll_read_ready(cx)) => {
                let (data_before, was_in_message) = (reader.data_bytes(), reader.in_message());
                let received = readable
                    .map_err(|_| Ending::Vanished)
                    .and_then(|()| receive(&stream, &mut reader, id, &mut heard));
                if let Ok(true) = received {
                    let now = Instant::now();
                    // A message's time runs from its first byte, header
                    // included, not from the client's last data.
                    if reader.data_bytes() != data_before || !was_in_message {
                        last_data = now;
                    }
                    // While a message is in progress only its data counts.
                    silent_at = if reader.in_message() { last_data } else { now } + silence_limit;
                }
                received.err()
            }
            () = &mut timer => match timer.deadline() >= silent_at {
                true if reader.in_message() => Some(Ending::Refused(Refusal::new(Refusal::POLICY, "message not completed in time"))),
                true => Some(Ending::Silent),
                false => {
                    next_ping = Instant::now() + heartbeat;
                    Box::pin(send(&mut stream, ControlFrame::ping(), silent_at)).await.err()
                }
            },
        };
    };
    // Boxed: a session's future is as large as its largest await, and every
    // idle session would otherwise carry room for the closing ones.
    Box::pin(end(
        stream,
        reader,
        ending,
        id,
        silence_limit,
        shutdown_grace,
        &stopping,
    ))
    .await;
}

/// Logs a message from the client, or notes a ping or a close in `heard`.
fn handle(received: Received, id: &str, heard: &mut Heard) {
    match received {
        Received::Text(text) => {
            let end = text
                .char_indices()
                .nth(LOGGED_TEXT_CHARS)
                .map_or(text.len(), |(end, _)| end);
            tracing::info!(
                id,
                bytes = text.len(),
                text = &text[..end],
                "text message received"
            );
            if text.len() >= LARGE_MESSAGE_BYTES {
                memory::release_soon();
            }
        }
        Received::Binary(bytes) => {
            tracing::info!(id, bytes = bytes.len(), "binary message received");
            if bytes.len() >= LARGE_MESSAGE_BYTES {
                memory::release_soon();
            }
        }
        Received::Ping(payload) => heard.ping = Some(payload),
        Received::Pong => {}
        Received::Close(code) => heard.closed = Some(code),
    }
}

/// Feeds `bytes` to `reader`, handling what they bring.
fn feed(reader: &mut Reader, bytes: &[u8], id: &str, heard: &mut Heard) -> Result<(), Ending> {
    reader
        .feed(bytes, |received| handle(received, id, heard))
        .map_err(Ending::Refused)
}

/// Reads what `stream` holds, at most [`READS_PER_TURN`] times, and feeds
/// it to `reader`: into this thread's receive buffer, or, for the rest of a
/// payload of at least [`DIRECT_READ_BYTES`], straight into its message.
/// Returns whether anything arrived.
fn receive(
    stream: &TcpStream,
    reader: &mut Reader,
    id: &str,
    heard: &mut Heard,
) -> Result<bool, Ending> {
    let mut arrived = false;
    for _ in 0..READS_PER_TURN {
        let read = match reader.payload_to_come() {
            Some((message, left)) if left >= DIRECT_READ_BYTES => {
                match stream.try_read_buf(&mut message.limit(left)) {
                    Ok(count) if count > 0 => {
                        let received =
                            reader.appended(count, |received| handle(received, id, heard));
                        received.map_err(Ending::Refused)?;
                        Ok(count)
                    }
                    other => other,
                }
            }
            _ => RECEIVE_BUFFER.with_borrow_mut(|buffer| match stream.try_read(buffer) {
                Ok(count) if count > 0 => {
                    feed(reader, &buffer[..count], id, heard).map(|()| Ok(count))
                }
                other => Ok(other),
            })?,
        };
        match read {
            Ok(0) => return Err(Ending::Vanished),
            Ok(_) if heard.closed.is_some() => return Ok(true),
            Ok(_) => arrived = true,
            Err(err) if err.kind() == ErrorKind::WouldBlock => break,
            Err(err) if err.kind() == ErrorKind::Interrupted => {}
            Err(_) => return Err(Ending::Vanished),
        }
    }
    Ok(arrived)
}

/// Writes `frame` before `deadline`; a client that reads nothing can hold a
/// write up, and is then as good as silent. Boxed where it is awaited:
/// the frame and the timer would otherwise take room in every idle session.
async fn send(
    stream: &mut TcpStream,
    frame: ControlFrame,
    deadline: Instant,
) -> Result<(), Ending> {
    match tokio::time::timeout_at(deadline, stream.write_all(frame.as_bytes())).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(Ending::Vanished),
        Err(_) => Err(Ending::Silent),
    }
}
