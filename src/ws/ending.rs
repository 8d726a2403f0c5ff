//! How a websocket session ends: its log line, its close frame, the
//! lingering read that lets the frame arrive, and its count.
//!
//! How a session ends, and the close code it is counted under:
//! - the client closes: the server answers with 1000 (normal closure);
//! - a protocol violation, invalid UTF-8, a message over
//!   `WS_MAX_MESSAGE_BYTES` or a failed allocation: 1002, 1007, 1009 or
//!   1011 ([`frames`](super::frames));
//! - a message not completed within `WS_MESSAGE_DEADLINE_SECS` of its
//!   first byte, pongs or not: 1008;
//! - shutdown: 1001, and the client has the grace period to answer; the
//!   messages it completes meanwhile are taken as any other;
//! - nothing at all, not even a pong, for two heartbeats, or the connection
//!   ends without a close frame: no close frame can reach it, counted as 1006.
//!
//! Every close frame the server sends is followed by shutting its side of
//! the connection down. Then, at shutdown, it reads on until the client's
//! own close frame, for at most the grace period; after refusing a client,
//! it reads and discards until the client closes its side, for at most
//! [`CLOSE_LINGER`]: closing a socket with unread data makes the kernel send
//! a reset, which can destroy the close frame before the client reads it.

use std::io::ErrorKind;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::frames::{ControlFrame, Reader, Refusal};
use super::inbox::Inbox;
use crate::metrics::WEBSOCKET_CLOSES;
use crate::shutdown::CancellationToken;

/// Why a session ended.
pub enum Ending {
    /// The client sent a close frame, with this code if it had one.
    Closed(Option<u16>),
    /// The connection ended, or failed, without a close frame.
    Vanished,
    /// Nothing, not even a pong, arrived for two heartbeats.
    Silent,
    /// The server refuses the client.
    Refused(Refusal),
    ShuttingDown,
}

/// How long to keep reading, and discarding, after a close frame, so that
/// it reaches the client before the connection closes: nginx's
/// `lingering_timeout` default.
const CLOSE_LINGER: Duration = Duration::from_secs(5);

/// Ends the session as `ending` says: logs it, closes with the code it
/// calls for, and counts it.
pub async fn end(
    mut stream: TcpStream,
    mut reader: Reader,
    mut inbox: Inbox<'_>,
    ending: Ending,
    silence_limit: Duration,
    shutdown_grace: Duration,
    stopping: &CancellationToken,
) {
    let id = inbox.id();
    let code = match ending {
        Ending::Closed(client_code) => {
            tracing::info!(id, client_code, "client disconnected");
            // The handshake is complete once answered: nothing more may
            // come from the client, so the connection can close at once.
            let _ = tokio::time::timeout(CLOSE_LINGER, send_close(&mut stream, 1000, "")).await;
            1000
        }
        Ending::Vanished => {
            tracing::info!(id, "client disconnected without closing");
            1006
        }
        Ending::Silent => {
            tracing::info!(id, silent_for = ?silence_limit, "client silent, dropping it");
            1006
        }
        Ending::ShuttingDown => {
            // The client answers with a close frame of its own, which the
            // reader finds behind whatever it was still sending.
            let answered = async {
                send_close(&mut stream, Refusal::GOING_AWAY, "server shutting down").await?;
                read_until(&stream, |bytes| {
                    let fed = reader.feed(bytes, |received| inbox.take(received));
                    fed.is_err() || inbox.closed.is_some()
                })
                .await
            };
            let _ = tokio::time::timeout(shutdown_grace, answered).await;
            tracing::info!(id, "client closed for shutdown");
            Refusal::GOING_AWAY
        }
        Ending::Refused(refusal) => {
            if refusal.code == Refusal::INTERNAL {
                tracing::error!(
                    id,
                    code = refusal.code,
                    reason = refusal.reason,
                    "closing a websocket"
                );
            } else {
                tracing::info!(
                    id,
                    code = refusal.code,
                    reason = refusal.reason,
                    "refusing a websocket client"
                );
            }
            // The rest of a refused message may still be on its way, and
            // the frames can no longer be told apart: discard until the
            // client closes its side. Shutdown does not wait for that.
            let discarded = async {
                send_close(&mut stream, refusal.code, refusal.reason).await?;
                read_until(&stream, |_| false).await
            };
            tokio::select! {
                biased;
                _ = tokio::time::timeout(CLOSE_LINGER, discarded) => {}
                () = stopping.cancelled() => {}
            }
            refusal.code
        }
    };
    inbox.log_left_out();
    WEBSOCKET_CLOSES
        .with_label_values(&[&code.to_string()])
        .inc();
}

/// Sends a close frame with `code` and `reason`, then shuts the server's
/// side of the connection down.
async fn send_close(stream: &mut TcpStream, code: u16, reason: &str) -> std::io::Result<()> {
    stream
        .write_all(ControlFrame::close(code, reason).as_bytes())
        .await?;
    stream.shutdown().await
}

/// Bytes read at once while closing, into a buffer on the stack, and reads
/// before the closing session yields its worker thread.
const CLOSING_READ_BYTES: usize = 16 * 1024;
const CLOSING_READS_PER_TURN: usize = 16;

/// Reads from `stream` until `each` asks to stop or the client closes its
/// side; fails if the connection does.
async fn read_until(
    stream: &TcpStream,
    mut each: impl FnMut(&[u8]) -> bool,
) -> std::io::Result<()> {
    loop {
        stream.readable().await?;
        if read_ready(stream, &mut each) {
            return Ok(());
        }
        tokio::task::yield_now().await;
    }
}

/// Reads what `stream` holds, at most [`CLOSING_READS_PER_TURN`] times, passing
/// each read to `each`; returns whether the reading is over: `each` asked to
/// stop, or the connection ended.
fn read_ready(stream: &TcpStream, each: &mut impl FnMut(&[u8]) -> bool) -> bool {
    let mut buffer = [0; CLOSING_READ_BYTES];
    for _ in 0..CLOSING_READS_PER_TURN {
        match stream.try_read(&mut buffer) {
            Ok(0) => return true,
            Ok(count) if each(&buffer[..count]) => return true,
            Ok(_) => {}
            Err(err) if err.kind() == ErrorKind::WouldBlock => return false,
            Err(err) if err.kind() == ErrorKind::Interrupted => {}
            Err(_) => return true,
        }
    }
    false
}
