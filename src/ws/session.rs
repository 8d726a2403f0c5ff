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

use crate::config::WsSettings;
use crate::memory;
use crate::metrics::CONNECTED_CLIENTS;
use crate::shutdown::Shutdown;

/// A websocket over the connection hyper has handed over after the upgrade.
pub type Socket = WebSocketStream<TokioIo<Upgraded>>;

/// How much of a text message the log shows.
const LOGGED_TEXT_CHARS: usize = 80;

/// How long to keep reading, and discarding, after refusing a message, so
/// that the close frame reaches the client before the connection closes (as
/// nginx's `lingering_timeout`, whose default this is).
const CLOSE_LINGER: Duration = Duration::from_secs(5);

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
        memory::client_left();
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
    TooBig(tungstenite::error::CapacityError),
    ShuttingDown,
}

/// Serves one client until it leaves, goes silent, sends too much, or the
/// server shuts down (giving it up to `shutdown_grace` to answer the close).
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
    let silence = tokio::time::sleep(silence_limit);
    tokio::pin!(silence);

    let ending = loop {
        tokio::select! {
            received = socket.next() => match received {
                Some(Ok(message)) => {
                    silence.as_mut().reset(Instant::now() + silence_limit);
                    log_received(id, &message);
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
            () = &mut silence => break Ending::Silent,
            () = stopping.recv() => break Ending::ShuttingDown,
        }
    };

    match ending {
        Ending::Closed => tracing::info!(id, "client disconnected"),
        Ending::Vanished => tracing::info!(id, "client disconnected without closing"),
        Ending::Failed(err) => tracing::warn!(id, error = %err, "websocket error"),
        Ending::Silent => {
            tracing::info!(id, silent_for = ?silence_limit, "client silent, dropping it")
        }
        Ending::TooBig(err) => {
            tracing::info!(id, error = %err, "client sent too much, closing");
            tokio::select! {
                () = refuse_and_close(&mut socket, settings.max_message_bytes) => {}
                // Shutdown does not wait for the rest of a refused message.
                () = stopping.recv() => {}
            }
        }
        Ending::ShuttingDown => {
            close(&mut socket, shutdown_grace).await;
            tracing::info!(id, "client closed for shutdown");
        }
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

/// Closes with 1009 (message too big) after tungstenite has refused a
/// message. The rest of that message may still be arriving: closing the
/// socket on unread data would make the kernel send a reset, which can
/// destroy the close frame before the client reads it. So after the close
/// frame, stop writing and read and discard what is in flight, at most
/// `discard_limit` bytes for at most [`CLOSE_LINGER`], before hanging up.
async fn refuse_and_close(socket: &mut Socket, discard_limit: usize) {
    let linger = async {
        let frame = CloseFrame {
            code: CloseCode::Size,
            reason: "message too big".into(),
        };
        // After an error the stream yields nothing more, so the peer's
        // answer cannot be awaited through it; the raw connection is read.
        if socket.close(Some(frame)).await.is_err() {
            return;
        }
        let connection = socket.get_mut();
        if connection.shutdown().await.is_err() {
            return;
        }
        let mut discarded = 0;
        // On the heap: an array here would live in the session's future, and
        // so cost every idle client its size in memory.
        let mut scratch = vec![0u8; 4096];
        while discarded < discard_limit {
            match connection.read(&mut scratch).await {
                Ok(0) | Err(_) => return,
                Ok(read) => discarded += read,
            }
        }
    };
    let _ = tokio::time::timeout(CLOSE_LINGER, linger).await;
}
