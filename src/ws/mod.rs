//! Websocket clients on `/ws/<id>`: the upgrade, the limit on clients, and
//! keeping track of the sessions so that shutdown can close them and wait.
//!
//! - `handshake`: is the request a websocket handshake, and the refusals;
//! - [`frames`]: the client's frames, read as they arrive, and the server's
//!   (public for the fuzz target and the differential test);
//! - `session`: one client: reading, taking turns, pings and deadlines;
//! - `inbox`: what the client's frames bring: messages counted and logged
//!   within a budget, pings, the close;
//! - `ending`: how a session ends: its close frame, and its count.
//!
//! The service reads frames itself (`frames`) because no websocket crate
//! measured was both lean and fast: each keeps a read buffer per
//! connection, where a session here reads into one buffer per worker
//! thread; docs/websockets.md has the figures and how to rerun them.
//!
//! It uses `metrics`, `config`, `shutdown` and `memory`.

mod ending;
pub mod frames;
mod handshake;
mod inbox;
mod session;

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use headers::{HeaderMapExt, SecWebsocketAccept};
use http::header::{self, HeaderMap};
use http::{Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;
use warp::hyper::upgrade::{OnUpgrade, Upgraded};
use warp::reply::Response as WarpResponse;

use crate::config::WsSettings;
use crate::memory;
use crate::metrics::{WEBSOCKET_CLOSES, record_panic};
use crate::shutdown::CancellationToken;
use frames::{ControlFrame, Refusal};
use handshake::Refused;

/// Starts websocket sessions and keeps track of them. A handle to shared
/// state; the route tree holds one.
#[derive(Clone)]
pub struct Sessions(Arc<Shared>);

struct Shared {
    settings: WsSettings,
    stopping: CancellationToken,
    shutdown_grace: Duration,
    /// One permit per client that may connect; a session holds its own.
    slots: Arc<Semaphore>,
    /// Every session, for shutdown to wait for.
    running: TaskTracker,
}

impl Sessions {
    /// Sessions that close when `stopping` says so, giving each client up to
    /// `shutdown_grace` to answer the close.
    pub fn new(
        settings: WsSettings,
        stopping: CancellationToken,
        shutdown_grace: Duration,
    ) -> Sessions {
        Sessions(Arc::new(Shared {
            settings,
            stopping,
            shutdown_grace,
            slots: Arc::new(Semaphore::new(settings.max_clients)),
            running: TaskTracker::new(),
        }))
    }

    /// Completes when every session has ended; call it once no new one can
    /// start.
    pub async fn all_closed(&self) {
        self.0.running.close();
        self.0.running.wait().await;
    }

    /// Answers a request for `/ws/<id>`: if it is a websocket handshake and
    /// there is room, starts the session for when hyper hands the connection
    /// over and returns `101 Switching Protocols`; otherwise says why not
    /// (426 for a plain GET, 503 when full or shutting down) and counts
    /// nothing.
    pub fn upgrade(
        &self,
        id: String,
        headers: &HeaderMap,
        upgrade: Option<OnUpgrade>,
    ) -> WarpResponse {
        self.try_upgrade(id, headers, upgrade)
            .unwrap_or_else(Refused::into_response)
    }

    fn try_upgrade(
        &self,
        id: String,
        headers: &HeaderMap,
        upgrade: Option<OnUpgrade>,
    ) -> Result<WarpResponse, Refused> {
        if self.0.stopping.is_cancelled() {
            return Err(Refused::SHUTTING_DOWN);
        }
        handshake::check_id(&id)?;
        let key = handshake::key(headers)?;
        // hyper offers the upgrade only on HTTP/1.1 connections.
        let upgrade = upgrade.ok_or(Refused::NOT_HTTP11)?;
        let slot = Arc::clone(&self.0.slots)
            .try_acquire_owned()
            .map_err(|_| Refused::FULL)?;

        let sessions = self.clone();
        self.0.running.spawn(async move {
            // Held until the session ends.
            let (_slot, shared) = (slot, &sessions.0);
            let session = async {
                match upgrade.await {
                    Ok(upgraded) => shared.serve(upgraded, id).await,
                    Err(err) => tracing::warn!(id, error = %err, "websocket upgrade failed"),
                }
            };
            // The client is uncounted by its guard even then.
            if let Err(panic) = std::panic::AssertUnwindSafe(session).catch_unwind().await {
                record_panic("websocket_session", panic.as_ref());
            }
        });

        let mut response = Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header(header::CONNECTION, "upgrade")
            .header(header::UPGRADE, "websocket")
            .body(Default::default())
            .expect("static response parts are valid");
        response
            .headers_mut()
            .typed_insert(SecWebsocketAccept::from(key));
        Ok(response)
    }
}

impl Shared {
    /// Runs the session on the socket under `upgraded`, which is the
    /// `TokioIo<TcpStream>` that `http::server` serves.
    async fn serve(&self, upgraded: Upgraded, id: String) {
        match upgraded.downcast::<TokioIo<TcpStream>>() {
            Ok(parts) => {
                // Copied out and dropped: `read_buf` holds on to hyper's
                // whole 8 KiB read buffer, which would stay with the session.
                let early = parts.read_buf.to_vec();
                drop(parts.read_buf);
                let stream = parts.io.into_inner();
                // hyper has freed the connection's HTTP buffers: give them back.
                memory::release_soon();
                let (settings, grace, stopping) =
                    (self.settings, self.shutdown_grace, self.stopping.clone());
                session::run(stream, early, id, settings, grace, stopping).await;
            }
            Err(upgraded) => {
                // A server serving other connections than TCP sockets: a
                // bug of this crate, told to the client as 1011.
                tracing::error!(
                    id,
                    "websocket upgrade of a connection that is not a TCP socket"
                );
                let frame = ControlFrame::close(Refusal::INTERNAL, "internal error");
                let _ = TokioIo::new(upgraded).write_all(frame.as_bytes()).await;
                WEBSOCKET_CLOSES.with_label_values(&["1011"]).inc();
            }
        }
    }
}
