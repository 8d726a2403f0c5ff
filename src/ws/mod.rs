//! Websocket sessions on `/ws/<id>`: the upgrade, heartbeats, message limits,
//! the graceful close at shutdown, and the guard that keeps
//! `connected_clients` exact.
//!
//! The upgrade is done here with tokio-tungstenite rather than with
//! `warp::ws()`, because warp 0.4 offers no way to set tungstenite's read
//! buffer. That buffer defaults to 128 KiB and tungstenite zero-fills all of
//! it before its first read, so every idle client cost about 128 KiB of RSS.
//! With an explicit [`WebSocketConfig`] an idle client costs a few KiB (see
//! the README's websocket benchmark).

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message};
use warp::http::header::{self, HeaderMap, HeaderValue};
use warp::http::{Response, StatusCode};
use warp::hyper::upgrade::{OnUpgrade, Upgraded};
use warp::reply::{Reply, Response as WarpResponse};

use crate::config::WsSettings;
use crate::memory;
use crate::metrics::CONNECTED_CLIENTS;
use crate::shutdown::Shutdown;

/// Bytes tungstenite reads from the socket at a time. Its buffer is
/// allocated and zero-filled at this size for every connection, so it is
/// most of what an idle client costs (1 KiB: 3.5 KiB of RSS per client,
/// 2 KiB: 4.5 KiB). Larger messages still arrive whole, in more reads.
const READ_CHUNK_BYTES: usize = 1024;

/// Outgoing bytes that may wait for a peer that does not read. The server
/// only sends pings and close frames, so this is never reached by a healthy
/// peer; it bounds what a stalled one can pin.
const MAX_UNSENT_BYTES: usize = 64 * 1024;

type Socket = WebSocketStream<TokioIo<Upgraded>>;

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

/// Starts websocket sessions and keeps track of them, so shutdown can tell
/// them to close and wait until they have.
#[derive(Clone)]
pub struct Sessions {
    settings: WsSettings,
    stopping: Shutdown,
    shutdown_grace: Duration,
    // Never sent on, only held: every session owns a clone, and the receiver
    // in `AllClosed` sees the channel close when the last one is dropped.
    _alive: mpsc::Sender<()>,
}

/// Completes when every session has ended, once the [`Sessions`] handle
/// itself has been dropped.
pub struct AllClosed(mpsc::Receiver<()>);

impl AllClosed {
    pub async fn wait(mut self) {
        // Nothing is ever sent: `recv` returns `None` when all senders are gone.
        let _ = self.0.recv().await;
    }
}

impl Sessions {
    /// Sessions that close when `stopping` says so, giving each client up to
    /// `shutdown_grace` to answer the close.
    pub fn new(
        settings: WsSettings,
        stopping: Shutdown,
        shutdown_grace: Duration,
    ) -> (Sessions, AllClosed) {
        let (alive, all_closed) = mpsc::channel(1);
        let sessions = Sessions {
            settings,
            stopping,
            shutdown_grace,
            _alive: alive,
        };
        (sessions, AllClosed(all_closed))
    }

    /// Answers a request for `/ws/<id>`: checks that it is a websocket
    /// handshake, starts the session for when the connection is upgraded,
    /// and returns `101 Switching Protocols`. A plain GET gets
    /// `426 Upgrade Required` and counts nothing.
    pub fn upgrade(
        &self,
        id: String,
        headers: &HeaderMap,
        on_upgrade: Option<OnUpgrade>,
    ) -> WarpResponse {
        let key = match handshake_key(headers) {
            Ok(key) => key,
            Err(refusal) => return refusal.into_response(),
        };
        // hyper provides the upgrade only on HTTP/1.1 connections.
        let Some(on_upgrade) = on_upgrade else {
            return Refusal::NotHttp11.into_response();
        };

        let sessions = self.clone();
        tokio::spawn(async move {
            match on_upgrade.await {
                Ok(upgraded) => {
                    let socket = WebSocketStream::from_raw_socket(
                        TokioIo::new(upgraded),
                        Role::Server,
                        Some(sessions.socket_config()),
                    )
                    .await;
                    sessions.run(socket, id).await;
                }
                Err(err) => eprintln!("websocket upgrade for {id:?} failed: {err}"),
            }
        });

        Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header(header::CONNECTION, "upgrade")
            .header(header::UPGRADE, "websocket")
            .header(
                header::SEC_WEBSOCKET_ACCEPT,
                derive_accept_key(key.as_bytes()),
            )
            .body(Default::default())
            .expect("static response parts are valid")
    }

    fn socket_config(&self) -> WebSocketConfig {
        WebSocketConfig::default()
            .read_buffer_size(READ_CHUNK_BYTES)
            // Write every frame at once: they are pings and close frames.
            .write_buffer_size(0)
            .max_write_buffer_size(MAX_UNSENT_BYTES)
            .max_message_size(Some(self.settings.max_message_bytes))
            // A frame's header announces its length, so a too-long frame is
            // refused before any of it is buffered.
            .max_frame_size(Some(self.settings.max_message_bytes))
    }

    /// Serves one client until it leaves, goes silent, sends too much, or the
    /// server shuts down. The id comes from the URL and is untrusted, so it
    /// is logged with `{:?}`: quotes and escapes keep it from forging lines.
    async fn run(mut self, mut socket: Socket, id: String) {
        let _client = ConnectedClient::new();
        println!("client {id:?} connected");

        let heartbeat = self.settings.heartbeat;
        // A peer is dead once nothing, not even a pong, came for two heartbeats.
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
                        if message.is_text() || message.is_binary() {
                            println!("received message from {id:?}: {message:?}");
                        }
                    }
                    Some(Err(tungstenite::Error::Capacity(err))) => break Ending::TooBig(err),
                    Some(Err(err)) if vanished(&err) => break Ending::Vanished,
                    Some(Err(err)) => break Ending::Failed(err),
                    // The close handshake is complete or the peer hung up.
                    None => break Ending::Closed,
                },
                _ = pings.tick() => {
                    let ping = socket.send(Message::Ping(Default::default()));
                    match tokio::time::timeout(silence_limit, ping).await {
                        Ok(Ok(())) => {}
                        Ok(Err(err)) => break Ending::Failed(err),
                        Err(_) => break Ending::Silent,
                    }
                }
                () = &mut silence => break Ending::Silent,
                () = self.stopping.recv() => break Ending::ShuttingDown,
            }
        };

        match ending {
            Ending::Closed => println!("client {id:?} disconnected"),
            Ending::Vanished => println!("client {id:?} disconnected without closing"),
            Ending::Failed(err) => eprintln!("websocket error from {id:?}: {err}"),
            Ending::Silent => {
                println!("client {id:?} silent for {silence_limit:?}, dropping it");
            }
            Ending::TooBig(err) => {
                println!("client {id:?} sent too much ({err}), closing");
                close(
                    &mut socket,
                    CloseCode::Size,
                    "message too big",
                    silence_limit,
                )
                .await;
            }
            Ending::ShuttingDown => {
                let patience = self.shutdown_grace;
                close(
                    &mut socket,
                    CloseCode::Away,
                    "server shutting down",
                    patience,
                )
                .await;
                println!("client {id:?} closed for shutdown");
            }
        }
    }
}

/// Why a session ended.
enum Ending {
    Closed,
    /// The peer hung up or reset the connection without a close frame: an
    /// everyday ending (a closed tab, a lost network), not a server error.
    Vanished,
    Failed(tungstenite::Error),
    Silent,
    TooBig(tungstenite::error::CapacityError),
    ShuttingDown,
}

/// Whether `err` only says that the peer went away without a close frame.
fn vanished(err: &tungstenite::Error) -> bool {
    use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset};
    match err {
        tungstenite::Error::Protocol(
            tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
        ) => true,
        tungstenite::Error::Io(io) => {
            matches!(io.kind(), ConnectionReset | ConnectionAborted | BrokenPipe)
        }
        _ => false,
    }
}

/// Sends a close frame and waits, at most `patience`, for the peer to answer
/// it, so a well-behaved client sees a complete close handshake.
async fn close(socket: &mut Socket, code: CloseCode, reason: &'static str, patience: Duration) {
    let handshake = async {
        let frame = CloseFrame {
            code,
            reason: reason.into(),
        };
        if socket.close(Some(frame)).await.is_ok() {
            while let Some(Ok(_)) = socket.next().await {}
        }
    };
    let _ = tokio::time::timeout(patience, handshake).await;
}

/// Why a request to `/ws/<id>` is not a websocket handshake we can accept.
enum Refusal {
    NotAnUpgrade,
    UnsupportedVersion,
    MissingKey,
    NotHttp11,
}

impl Refusal {
    fn into_response(self) -> WarpResponse {
        let (status, why, hint) = match self {
            Refusal::NotAnUpgrade => (
                StatusCode::UPGRADE_REQUIRED,
                "this is a websocket endpoint",
                Some((header::UPGRADE, "websocket")),
            ),
            Refusal::UnsupportedVersion => (
                StatusCode::UPGRADE_REQUIRED,
                "websocket version 13 required",
                Some((header::SEC_WEBSOCKET_VERSION, "13")),
            ),
            Refusal::MissingKey => (StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key", None),
            Refusal::NotHttp11 => (
                StatusCode::BAD_REQUEST,
                "websocket upgrade needs HTTP/1.1",
                None,
            ),
        };
        let mut response = warp::reply::with_status(why, status).into_response();
        if let Some((name, value)) = hint {
            response
                .headers_mut()
                .insert(name, HeaderValue::from_static(value));
        }
        response
    }
}

/// The `Sec-WebSocket-Key` of a valid websocket handshake.
fn handshake_key(headers: &HeaderMap) -> Result<&HeaderValue, Refusal> {
    let has_token = |name, token: &str| {
        headers.get_all(name).iter().any(|value| {
            value.to_str().is_ok_and(|value| {
                value
                    .split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case(token))
            })
        })
    };
    if !has_token(header::CONNECTION, "upgrade") || !has_token(header::UPGRADE, "websocket") {
        return Err(Refusal::NotAnUpgrade);
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .map(HeaderValue::as_bytes)
        != Some(b"13")
    {
        return Err(Refusal::UnsupportedVersion);
    }
    headers
        .get(header::SEC_WEBSOCKET_KEY)
        .ok_or(Refusal::MissingKey)
}
