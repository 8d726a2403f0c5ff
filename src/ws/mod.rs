//! Websocket clients on `/ws/<id>`: the upgrade, the limits, and keeping
//! track of the sessions so that shutdown can close them and wait.
//!
//! - [`handshake`]: is the request a websocket handshake, and the refusals.
//! - [`incoming`]: the client's bytes on their way in, large frames cut into
//!   pieces so no session keeps a buffer the size of its largest message.
//! - [`session`]: one client's session: logging, heartbeats, closing, and the
//!   guard that keeps `connected_clients` exact.
//!
//! The upgrade is done here with tokio-tungstenite rather than with
//! `warp::ws()`, because warp 0.4 offers no way to set tungstenite's read
//! buffer. That buffer defaults to 128 KiB and tungstenite zero-fills all of
//! it before its first read, so every idle client cost about 130 KiB of RSS.
//! With an explicit [`WebSocketConfig`] an idle client costs a few KiB (see
//! the README's websocket benchmark).

mod handshake;
mod incoming;
mod session;

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::sync::{Semaphore, mpsc};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use warp::http::header::{self, HeaderMap};
use warp::http::{Response, StatusCode};
use warp::hyper::upgrade::OnUpgrade;
use warp::reply::Response as WarpResponse;

use crate::config::WsSettings;
use crate::shutdown::Shutdown;
use handshake::Refusal;
use incoming::Incoming;

/// Bytes tungstenite reads from the socket at a time. Its buffer is
/// allocated and zero-filled at this size for every connection, so it is
/// most of what an idle client costs (measured at 10,000 clients: 1 KiB
/// gives 3.5 KiB of RSS per client, 2 KiB gives 4.5 KiB). Larger messages still arrive whole, in more reads.
const READ_CHUNK_BYTES: usize = 1024;

/// Outgoing bytes that may wait for a peer that does not read. The server
/// only sends pings, pongs and close frames, so a healthy peer never comes
/// near this; it bounds what a stalled one can pin.
const MAX_UNSENT_BYTES: usize = 64 * 1024;

/// Starts websocket sessions and keeps track of them, so shutdown can tell
/// them to close and wait until they have.
///
/// A handle to shared state: the route tree holds one, and hyper clones the
/// tree for every request, so a clone must cost no more than one `Arc`.
#[derive(Clone)]
pub struct Sessions(Arc<Shared>);

struct Shared {
    settings: WsSettings,
    stopping: Shutdown,
    shutdown_grace: Duration,
    /// One permit per client that may connect; a session holds its own.
    slots: Arc<Semaphore>,
    // Never sent on, only held: every session task owns a `Sessions`, and
    // the receiver in `AllClosed` sees the channel close when the last one,
    // and with it this sender, is dropped.
    _alive: mpsc::Sender<()>,
}

/// Completes when every session has ended, once every [`Sessions`] handle
/// has been dropped.
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
        let sessions = Sessions(Arc::new(Shared {
            settings,
            stopping,
            shutdown_grace,
            slots: Arc::new(Semaphore::new(settings.max_clients)),
            _alive: alive,
        }));
        (sessions, AllClosed(all_closed))
    }

    /// Answers a request for `/ws/<id>`: if it is a websocket handshake and
    /// there is room, starts the session for when hyper hands over the
    /// connection and returns `101 Switching Protocols`. Otherwise it
    /// answers why not (426 for a plain GET, 503 when full or shutting down)
    /// and counts nothing.
    pub fn upgrade(
        &self,
        id: String,
        headers: &HeaderMap,
        on_upgrade: Option<OnUpgrade>,
    ) -> WarpResponse {
        self.try_upgrade(id, headers, on_upgrade)
            .unwrap_or_else(Refusal::into_response)
    }

    fn try_upgrade(
        &self,
        id: String,
        headers: &HeaderMap,
        on_upgrade: Option<OnUpgrade>,
    ) -> Result<WarpResponse, Refusal> {
        if self.0.stopping.is_stopping() {
            return Err(Refusal::ShuttingDown);
        }
        handshake::check_id(&id)?;
        let key = handshake::key(headers)?;
        // hyper provides the upgrade only on HTTP/1.1 connections.
        let on_upgrade = on_upgrade.ok_or(Refusal::NotHttp11)?;
        let slot = Arc::clone(&self.0.slots)
            .try_acquire_owned()
            .map_err(|_| Refusal::Full)?;

        let sessions = self.clone();
        tokio::spawn(async move {
            // Held until the session ends: the client's slot, and through
            // `sessions` its place among the sessions shutdown waits for.
            let _slot = slot;
            match on_upgrade.await {
                Ok(upgraded) => {
                    let max_frame_bytes = sessions.0.settings.max_message_bytes;
                    let socket = WebSocketStream::from_raw_socket(
                        Incoming::new(TokioIo::new(upgraded), max_frame_bytes),
                        Role::Server,
                        Some(sessions.0.socket_config()),
                    )
                    .await;
                    session::run(
                        socket,
                        id,
                        sessions.0.settings,
                        sessions.0.shutdown_grace,
                        sessions.0.stopping.clone(),
                    )
                    .await;
                }
                Err(err) => {
                    tracing::warn!(id = id.as_str(), error = %err, "websocket upgrade failed")
                }
            }
        });

        Ok(Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header(header::CONNECTION, "upgrade")
            .header(header::UPGRADE, "websocket")
            .header(
                header::SEC_WEBSOCKET_ACCEPT,
                derive_accept_key(key.as_bytes()),
            )
            .body(Default::default())
            .expect("static response parts are valid"))
    }
}

impl Shared {
    fn socket_config(&self) -> WebSocketConfig {
        WebSocketConfig::default()
            .read_buffer_size(READ_CHUNK_BYTES)
            // Write every frame at once: they are pings, pongs and closes.
            .write_buffer_size(0)
            .max_write_buffer_size(MAX_UNSENT_BYTES)
            .max_message_size(Some(self.settings.max_message_bytes))
            // A frame's header announces its length, so a too-long frame is
            // refused before any of it is buffered.
            .max_frame_size(Some(self.settings.max_message_bytes))
    }
}
