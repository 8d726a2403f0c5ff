//! One websocket client's session: what it logs, how it is pinged and timed
//! out, how it is closed, and the guard that counts it in
//! `connected_clients`.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};
use warp::hyper::upgrade::Upgraded;

use super::incoming::{Incoming, PIECE_BYTES};
use crate::config::WsSettings;
use crate::memory;
use crate::metrics::CONNECTED_CLIENTS;
use crate::shutdown::Shutdown;

/// A websocket over the connection hyper has handed over after the upgrade,
/// with the client's large frames cut into pieces on the way in.
pub type Socket = WebSocketStream<Incoming<TokioIo<Upgraded>>>;

/// How much of a text message the log shows.
const LOGGED_TEXT_CHARS: usize = 80;

/// How long to keep reading, and discarding, after refusing a message, so
/// that the close frame reaches the client before the connection closes (as
/// nginx's `lingering_timeout`, whose default this is). A time, not a byte
/// count: a client may have any amount of a refused message in flight, and
/// closing on unread data would reset the connection and lose the close.
const CLOSE_LINGER: Duration = Duration::from_secs(5);

/// Bytes read at a time while discarding during [`CLOSE_LINGER`]: the only
/// memory the discarding costs.
const DISCARD_CHUNK_BYTES: usize = 4096;

/// Counts one connected client in `connected_clients` for its lifetime: the
/// gauge goes up when it is made and down when it is dropped. Tying the
/// decrement to `Drop` means no early return, error or panic can skip it.
/// Dropping it also tells [`memory`] that there is freed memory to return.
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

/// Why a session ended.
enum Ending {
    /// The close handshake completed.
    Closed,
    /// The peer hung up or reset the connection without a close frame: an
    /// everyday ending (a closed tab, a lost network), not a server error.
    Vanished,
    Failed(tungstenite::Error),
    /// Nothing, not even a pong, arrived for two heartbeats.
    Silent,
    /// A message was begun and then no more of it arrived for two
    /// heartbeats, whatever else (pongs) did.
    Stalled,
    TooBig(tungstenite::error::CapacityError),
    ShuttingDown,
}

/// Serves one client until it leaves, goes silent, sends too much, leaves a
/// message unfinished, or the server shuts down (giving it up to
/// `shutdown_grace` to answer the close).
///
/// The id comes from the URL and is untrusted, like the messages, so both are
/// logged as string fields of their own, which the log formats quote and
/// escape: they cannot forge log lines.
pub async fn run(
    mut socket: Socket,
    id: String,
    settings: WsSettings,
    shutdown_grace: Duration,
    mut stopping: Shutdown,
) {
    let _client = ConnectedClient::new();
    let id = id.as_str();
    tracing::info!(id, "client connected");

    let heartbeat = settings.heartbeat;
    let silence_limit = 2 * heartbeat;
    let mut pings = tokio::time::interval_at(Instant::now() + heartbeat, heartbeat);
    pings.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last_heard = Instant::now();
    let silence = tokio::time::sleep(silence_limit);
    tokio::pin!(silence);

    let ending = loop {
        tokio::select! {
            received = socket.next() => match received {
                Some(Ok(message)) => {
                    last_heard = Instant::now();
                    silence.as_mut().reset(silence_deadline(&socket, last_heard, silence_limit));
                    log_received(id, &message);
                    if message.len() > PIECE_BYTES {
                        // Its buffer has just been freed: give it back.
                        memory::release_soon();
                    }
                }
                Some(Err(tungstenite::Error::Capacity(err))) => break Ending::TooBig(err),
                Some(Err(err)) => break failure(err),
                // The close handshake is complete (a peer that hangs up
                // without one arrives as an error).
                None => break Ending::Closed,
            },
            _ = pings.tick() => {
                // A peer that stopped reading can leave the send pending; it
                // must not outlive the silence deadline or delay shutdown.
                let ping = socket.send(Message::Ping(Default::default()));
                tokio::select! {
                    sent = tokio::time::timeout_at(silence.deadline(), ping) => match sent {
                        Ok(Ok(())) => {}
                        Ok(Err(err)) => break failure(err),
                        Err(_) => break Ending::Silent,
                    },
                    () = stopping.recv() => break Ending::ShuttingDown,
                }
            }
            () = &mut silence => {
                // Data of a message in progress moves the deadline without
                // waking this loop, so it is looked at again now.
                let deadline = silence_deadline(&socket, last_heard, silence_limit);
                if deadline > Instant::now() {
                    silence.as_mut().reset(deadline);
                } else if socket.get_ref().message_progress().is_some() {
                    break Ending::Stalled;
                } else {
                    break Ending::Silent;
                }
            }
            () = stopping.recv() => break Ending::ShuttingDown,
        }
    };

    // The endings that close are boxed: a session's future is as large as
    // its largest await, and every idle session would otherwise carry room
    // for the closing state (about 0.3 KiB) that few ever use.
    match ending {
        Ending::Closed => tracing::info!(id, "client disconnected"),
        Ending::Vanished => tracing::info!(id, "client disconnected without closing"),
        Ending::Failed(err) => tracing::warn!(id, error = %err, "websocket error"),
        Ending::Silent => {
            tracing::info!(id, silent_for = ?silence_limit, "client silent, dropping it")
        }
        Ending::TooBig(err) => {
            tracing::info!(id, error = %err, "client sent too much, closing");
            let reason = "message too big";
            Box::pin(refuse(&mut socket, CloseCode::Size, reason, stopping)).await;
        }
        Ending::Stalled => {
            tracing::info!(
                id,
                unfinished_for = ?silence_limit,
                "client left a message unfinished, closing"
            );
            let reason = "message not completed in time";
            Box::pin(refuse(&mut socket, CloseCode::Policy, reason, stopping)).await;
        }
        Ending::ShuttingDown => {
            Box::pin(close(&mut socket, shutdown_grace)).await;
            tracing::info!(id, "client closed for shutdown");
        }
    }
}

/// When the session gives up on a quiet client: two heartbeats after the
/// last data of a message in progress (pongs do not keep a half-sent message
/// alive), or else after the last thing heard at all.
fn silence_deadline(socket: &Socket, last_heard: Instant, limit: Duration) -> Instant {
    match socket.get_ref().message_progress() {
        Some(last_data) => last_data + limit,
        None => last_heard + limit,
    }
}

/// Classifies a receive error: a peer that went away without a close frame
/// is an ordinary ending, anything else a failure worth reporting.
fn failure(err: tungstenite::Error) -> Ending {
    use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset};
    use tungstenite::error::ProtocolError::ResetWithoutClosingHandshake;
    match &err {
        tungstenite::Error::Protocol(ResetWithoutClosingHandshake) => Ending::Vanished,
        tungstenite::Error::Io(io)
            if matches!(io.kind(), ConnectionReset | ConnectionAborted | BrokenPipe) =>
        {
            Ending::Vanished
        }
        _ => Ending::Failed(err),
    }
}

/// Logs a received message: its kind and size, and for text the beginning
/// of it. Control frames are not news.
fn log_received(id: &str, message: &Message) {
    match message {
        Message::Text(text) => {
            let shown: String = text.chars().take(LOGGED_TEXT_CHARS).collect();
            tracing::info!(
                id,
                bytes = text.len(),
                text = shown.as_str(),
                "text message received"
            );
        }
        Message::Binary(bytes) => {
            tracing::info!(id, bytes = bytes.len(), "binary message received")
        }
        Message::Ping(_) | Message::Pong(_) | Message::Close(_) | Message::Frame(_) => {}
    }
}

/// Closes with 1001 (going away) at shutdown and waits, at most `patience`,
/// for the peer's answer, so a well-behaved client sees a complete close
/// handshake.
async fn close(socket: &mut Socket, patience: Duration) {
    let handshake = async {
        let frame = CloseFrame {
            code: CloseCode::Away,
            reason: "server shutting down".into(),
        };
        if socket.close(Some(frame)).await.is_ok() {
            while let Some(Ok(_)) = socket.next().await {}
        }
    };
    let _ = tokio::time::timeout(patience, handshake).await;
}

/// Refuses the client with `code` after a message has been refused (1009,
/// too big) or given up on (1008, unfinished), all within [`CLOSE_LINGER`].
///
/// The close frame goes out first, even when shutdown has already begun, so
/// the client always learns why. The rest of that message may still be
/// arriving, any amount of it: closing the socket on unread data would make
/// the kernel send a reset, which can destroy the close frame before the
/// client reads it. So after the close frame, stop writing and read and
/// discard until the client closes its side, unless shutdown, which does not
/// wait for the rest of a refused message, comes first.
async fn refuse(socket: &mut Socket, code: CloseCode, reason: &str, mut stopping: Shutdown) {
    let deadline = Instant::now() + CLOSE_LINGER;
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    // A client that reads nothing can hold the frame's write up; the deadline
    // bounds it as it bounds the discarding.
    let sent = tokio::time::timeout_at(deadline, socket.close(Some(frame))).await;
    if !matches!(sent, Ok(Ok(()))) {
        return;
    }
    let discard = tokio::time::timeout_at(deadline, discard_until_closed(socket));
    // Discarding first: even when shutdown has come, it half-closes the
    // connection before the session lets go of it.
    tokio::select! {
        biased;
        _ = discard => {}
        () = stopping.recv() => {}
    }
}

/// Half-closes the connection and reads and discards until the client
/// closes its side. After the error that refused the message the websocket
/// stream yields nothing more, so the peer's answer cannot be awaited
/// through it; the raw connection is read.
async fn discard_until_closed(socket: &mut Socket) {
    let connection = socket.get_mut().get_mut();
    if connection.shutdown().await.is_err() {
        return;
    }
    // On the heap: an array here would live in the session's future, and
    // so cost every idle client its size in memory.
    let mut scratch = vec![0u8; DISCARD_CHUNK_BYTES];
    while let Ok(1..) = connection.read(&mut scratch).await {}
}
