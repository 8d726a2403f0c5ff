//! One websocket client's session: its frames read straight off the socket,
//! its messages taken by its [`Inbox`], pings to see that it is alive, and
//! an ending it understands, counted in `websocket_closes_total`.
//!
//! A session owns no receive buffer. It waits for the socket to be readable,
//! then reads into [`RECEIVE_BUFFER`], one per worker thread, and hands the
//! bytes to its [`Reader`], which keeps only what a message in progress
//! needs; the rest of a large payload is read straight into its message.
//! So an idle client costs its task, its socket and one timer
//! (docs/websockets.md measures it), a 60 KB message arrives in a few
//! reads, and the memory of a message is freed once it has been taken.
//!
//! A client that sends without pause gets a turn of [`READS_PER_TURN`]
//! reads or [`MESSAGES_PER_TURN`] messages, then its session yields to the
//! other tasks of its worker thread: the socket always has more, so nothing
//! else would make it wait.
//!
//! How it ends is [`ending`](super::ending)'s part.

use std::cell::RefCell;
use std::io::ErrorKind;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::ending::{Ending, end};
use super::frames::{ControlFrame, Reader, Refusal};
use super::inbox::Inbox;
use crate::config::WsSettings;
use crate::memory;
use crate::metrics::CONNECTED_CLIENTS;
use crate::shutdown::CancellationToken;

/// Bytes read from a socket at once. Each worker thread has one buffer of
/// this size, which every session it serves reads into.
const RECEIVE_BUFFER_BYTES: usize = 64 * 1024;

/// Reads of one socket, and messages begun, before its session yields its
/// worker thread: at most 1 MiB, or the read in which the 4,096th message
/// begins, about a millisecond of work either way. A yield costs a trip
/// through the scheduler, so a turn is long enough for large messages not
/// to pay it often.
const READS_PER_TURN: usize = 16;
const MESSAGES_PER_TURN: u64 = 4096;

/// A payload at least this long still to come is read straight into its
/// message, so that a large message is copied once, from the kernel.
const MIN_DIRECT_READ_BYTES: usize = 4096;

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

/// What a turn of reads found.
#[derive(PartialEq, Eq)]
enum Turn {
    /// Nothing: the socket had nothing after all.
    Nothing,
    /// Bytes, and the socket had no more.
    Arrived,
    /// Bytes, and the turn ended before the socket ran dry.
    MoreWaiting,
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
    let message_deadline = settings.message_deadline();
    let mut reader = Reader::new(settings.max_message_bytes);
    let mut inbox = Inbox::new(id, settings.log_messages_per_sec);
    // One timer for the next ping and for the deadline of silence or of
    // the message in progress, set to whichever comes first: each costs an
    // idle session its room.
    let now = Instant::now();
    let (mut next_ping, mut silent_at, mut message_began) =
        (now + heartbeat, now + silence_limit, now);
    let timer = tokio::time::sleep_until(next_ping);
    tokio::pin!(timer);
    // Pinned once: a new one per wake-up would lock the token's waiters.
    let stopped = stopping.cancelled();
    tokio::pin!(stopped);

    let mut ending = feed(&mut reader, &early, &mut inbox).err();
    drop(early);
    let mut more_waiting = false;
    let ending = loop {
        // A pong is due for every ping that came before the close
        // (RFC 6455, 5.5.2), even in the same read, or before a refusal.
        if let Some(ping) = inbox.ping.take() {
            let pong = send(&mut stream, ControlFrame::pong(&ping), silent_at);
            if let Err(ending) = Box::pin(pong).await {
                break ending;
            }
        }
        // The echo of the messages that came before the session's end.
        #[cfg(feature = "echo")]
        if !inbox.echo.is_empty() {
            let echo = std::mem::take(&mut inbox.echo);
            if stream.write_all(&echo).await.is_err() {
                break Ending::Vanished;
            }
        }
        if let Some(ending) = ending {
            break ending;
        }
        if let Some(code) = inbox.closed {
            break Ending::Closed(code);
        }
        reader.give_back_room();
        if std::mem::take(&mut more_waiting) {
            tokio::task::yield_now().await;
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
                let begun_before = reader.messages_begun();
                let turn = readable
                    .map_err(|_| Ending::Vanished)
                    .and_then(|()| receive(&stream, &mut reader, &mut inbox));
                match turn {
                    Ok(Turn::Nothing) => None,
                    Ok(turn) => {
                        more_waiting = turn == Turn::MoreWaiting;
                        let now = Instant::now();
                        inbox.tick(now);
                        // A message's time runs from the read that brought
                        // its first byte; pongs and pings do not extend it.
                        if reader.messages_begun() != begun_before {
                            message_began = now;
                        }
                        silent_at = match reader.in_message() {
                            true => message_began + message_deadline,
                            false => now + silence_limit,
                        };
                        None
                    }
                    Err(ending) => Some(ending),
                }
            }
            () = &mut timer => match timer.deadline() >= silent_at {
                true if reader.in_message() => Some(Ending::Refused(Refusal::new(Refusal::POLICY, "message not completed in time"))),
                true => Some(Ending::Silent),
                false => {
                    let now = Instant::now();
                    inbox.tick(now);
                    next_ping = now + heartbeat;
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
        inbox,
        ending,
        silence_limit,
        shutdown_grace,
        &stopping,
    ))
    .await;
}

/// Feeds `bytes` to `reader`, passing what they bring to `inbox`.
fn feed(reader: &mut Reader, bytes: &[u8], inbox: &mut Inbox) -> Result<(), Ending> {
    reader
        .feed(bytes, |received| inbox.take(received))
        .map_err(Ending::Refused)
}

/// Reads what `stream` holds, for a turn at most (see [`READS_PER_TURN`]),
/// and feeds it to `reader`: into this thread's receive buffer, or, for the
/// rest of a payload of at least [`MIN_DIRECT_READ_BYTES`], straight into
/// its message.
fn receive(stream: &TcpStream, reader: &mut Reader, inbox: &mut Inbox) -> Result<Turn, Ending> {
    let mut turn = Turn::Nothing;
    let begun_before = reader.messages_begun();
    for _ in 0..READS_PER_TURN {
        let direct = reader.read_payload(
            MIN_DIRECT_READ_BYTES,
            |room| stream.try_read_buf(room),
            |received| inbox.take(received),
        );
        let read = match direct.map_err(Ending::Refused)? {
            Some(read) => read,
            None => RECEIVE_BUFFER.with_borrow_mut(|buffer| match stream.try_read(buffer) {
                Ok(count) if count > 0 => feed(reader, &buffer[..count], inbox).map(|()| Ok(count)),
                other => Ok(other),
            })?,
        };
        match read {
            Ok(0) => return Err(Ending::Vanished),
            Ok(_) if inbox.closed.is_some() => return Ok(Turn::Arrived),
            Ok(_) if reader.messages_begun() - begun_before >= MESSAGES_PER_TURN => {
                return Ok(Turn::MoreWaiting);
            }
            Ok(_) => turn = Turn::MoreWaiting,
            Err(err) if err.kind() == ErrorKind::WouldBlock => {
                return Ok(match turn {
                    Turn::Nothing => Turn::Nothing,
                    _ => Turn::Arrived,
                });
            }
            Err(err) if err.kind() == ErrorKind::Interrupted => {}
            Err(_) => return Err(Ending::Vanished),
        }
    }
    Ok(turn)
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
