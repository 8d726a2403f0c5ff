//! Idle websocket clients held against a server, for the memory benches:
//! opened at a bounded rate, kept reading so that pings and a server's close
//! are seen, and let go on request, nine in ten with a close handshake and
//! one in ten by TCP reset, as real clients vanish.

use std::net::SocketAddr;

use futures::{SinkExt, StreamExt, TryStreamExt, stream};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use super::PATIENCE;

/// Handshakes in flight at once. The servers listen with a backlog of 1024
/// or less; staying well below it means no SYN is dropped and retried after
/// a second, which would measure the kernel's retry timer instead of the
/// server.
pub const CONNECT_CONCURRENCY: usize = 128;

/// Idle clients connected to one server, each on a task of its own.
pub struct Clients {
    /// Dropping it tells every client to leave.
    stop: watch::Sender<()>,
    held: Vec<JoinHandle<bool>>,
}

impl Clients {
    /// Opens `n` clients to `/ws/bench-<i>` on `addr`, at most
    /// [`CONNECT_CONCURRENCY`] handshakes at a time.
    pub async fn open(addr: SocketAddr, n: usize) -> Result<Clients, String> {
        let (stop, stopping) = watch::channel(());
        let held = stream::iter(0..n)
            .map(|i| {
                let stopping = stopping.clone();
                async move {
                    let socket = connect(addr, &format!("/ws/bench-{i}")).await?;
                    Ok::<_, String>(tokio::spawn(hold(socket, stopping, i % 10 == 9)))
                }
            })
            .buffer_unordered(CONNECT_CONCURRENCY)
            .try_collect()
            .await?;
        Ok(Clients { stop, held })
    }

    /// Lets every client go and waits until each has. Returns how many the
    /// server had closed before: it should be none.
    pub async fn close(self) -> usize {
        drop(self.stop);
        let mut lost = 0;
        for client in self.held {
            if !client.await.unwrap_or(false) {
                lost += 1;
            }
        }
        lost
    }
}

/// Opens a websocket to `path` on `addr` (`/ws/<id>`). The client's own
/// read buffer is kept small: tungstenite's default of 128 KiB per socket
/// would cost this process over a gigabyte at 10,000 clients, and only the
/// server's memory is measured.
pub async fn connect(addr: SocketAddr, path: &str) -> Result<WebSocketStream<TcpStream>, String> {
    let config = WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0);
    let handshake = async {
        let stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let url = format!("ws://{addr}{path}");
        let (socket, _response) =
            tokio_tungstenite::client_async_with_config(url, stream, Some(config))
                .await
                .map_err(|e| e.to_string())?;
        Ok(socket)
    };
    tokio::time::timeout(PATIENCE, handshake)
        .await
        .map_err(|_| format!("{path}: handshake timed out"))?
        .map_err(|err: String| format!("{path}: {err}"))
}

/// Keeps one client idle but reading (so pings and a server close are seen)
/// until told to stop, then leaves: with a close handshake, or, if `abrupt`,
/// with a TCP reset. Returns false if the server hung up first.
async fn hold(
    mut socket: WebSocketStream<TcpStream>,
    mut stopping: watch::Receiver<()>,
    abrupt: bool,
) -> bool {
    loop {
        tokio::select! {
            message = socket.next() => match message {
                Some(Ok(_)) => continue,
                _ => return false,
            },
            // Errs when the sender is dropped, which also means stop.
            _ = stopping.changed() => break,
        }
    }
    if abrupt {
        // SO_LINGER 0: dropping the socket sends RST, no close frame, no FIN.
        let _ = socket.get_ref().set_zero_linger();
        return true;
    }
    if socket.close(None).await.is_ok() {
        // Drain until the server's answering close frame ends the stream.
        while let Some(Ok(_)) = socket.next().await {}
    }
    true
}

/// Waits until the server has read everything sent on `socket` so far: it
/// reads in order, so its answer to a ping sent now comes after the rest.
pub async fn wait_until_read(socket: &mut WebSocketStream<TcpStream>) -> Result<(), String> {
    socket
        .send(Message::Ping("read?".into()))
        .await
        .map_err(|e| e.to_string())?;
    loop {
        match socket.next().await {
            Some(Ok(Message::Pong(payload))) if &payload[..] == b"read?" => return Ok(()),
            Some(Ok(_)) => continue,
            other => return Err(format!("the server ended before answering: {other:?}")),
        }
    }
}
