//! Idle websocket clients held against a server, for the memory benches:
//! opened at a bounded rate, kept reading so that pings and a server's close
//! are seen, made to send one message each on request, and let go on
//! request, nine in ten with a close handshake and one in ten by TCP reset,
//! as real clients vanish.

use std::net::SocketAddr;

use futures::{SinkExt, StreamExt, TryStreamExt, stream};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
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
    /// A message put in it is sent once by every client; dropping it tells
    /// every client to leave.
    orders: watch::Sender<Option<Message>>,
    /// One `()` from each client whose message the server has read.
    read: mpsc::Receiver<()>,
    held: Vec<JoinHandle<bool>>,
}

impl Clients {
    /// Opens `n` clients to `/ws/bench-<i>` on `addr`, at most
    /// [`CONNECT_CONCURRENCY`] handshakes at a time.
    pub async fn open(addr: SocketAddr, n: usize) -> Result<Clients, String> {
        let (orders, ordered) = watch::channel(None);
        // Room for every client's answer, so none ever waits to give it.
        let (was_read, read) = mpsc::channel(n.max(1));
        let held = stream::iter(0..n)
            .map(|i| {
                let ordered = ordered.clone();
                let was_read = was_read.clone();
                async move {
                    let socket = connect(addr, &format!("/ws/bench-{i}")).await?;
                    let abrupt = i % 10 == 9;
                    Ok::<_, String>(tokio::spawn(hold(socket, ordered, was_read, abrupt)))
                }
            })
            .buffer_unordered(CONNECT_CONCURRENCY)
            .try_collect()
            .await?;
        Ok(Clients { orders, read, held })
    }

    /// Has every client send `message`, all at once, and returns when the
    /// server has read each of them.
    pub async fn send_each(&mut self, message: Message) -> Result<(), String> {
        self.orders.send_replace(Some(message));
        for _ in 0..self.held.len() {
            match tokio::time::timeout(PATIENCE, self.read.recv()).await {
                Ok(Some(())) => {}
                _ => return Err("a client's message was not read".to_owned()),
            }
        }
        Ok(())
    }

    /// Lets every client go and waits until each has. Returns how many the
    /// server had closed before: it should be none.
    pub async fn close(self) -> usize {
        drop(self.orders);
        let mut lost = 0;
        for client in self.held {
            if !client.await.unwrap_or(false) {
                lost += 1;
            }
        }
        lost
    }
}

/// Opens `n` websockets to `/ws/bench-<i>` on `addr`, at most
/// [`CONNECT_CONCURRENCY`] handshakes at a time.
pub async fn connect_all(
    addr: SocketAddr,
    n: usize,
) -> Result<Vec<WebSocketStream<TcpStream>>, String> {
    stream::iter(0..n)
        .map(|i| async move { connect(addr, &format!("/ws/bench-{i}")).await })
        .buffer_unordered(CONNECT_CONCURRENCY)
        .try_collect()
        .await
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

/// Keeps one client idle but reading (so pings and a server close are seen),
/// sending each message it is ordered to and saying on `was_read` when the
/// server has read it, until told to stop; then leaves: with a close
/// handshake, or, if `abrupt`, with a TCP reset. Returns false if the
/// server hung up first.
async fn hold(
    mut socket: WebSocketStream<TcpStream>,
    mut orders: watch::Receiver<Option<Message>>,
    was_read: mpsc::Sender<()>,
    abrupt: bool,
) -> bool {
    loop {
        tokio::select! {
            message = socket.next() => match message {
                Some(Ok(_)) => continue,
                _ => return false,
            },
            ordered = orders.changed() => {
                // Errs when the sender is dropped, which means stop.
                if ordered.is_err() {
                    break;
                }
                let message = orders.borrow_and_update().clone();
                if let Some(message) = message {
                    if socket.send(message).await.is_err()
                        || wait_until_read(&mut socket).await.is_err()
                    {
                        return false;
                    }
                    // The receiver is gone only if the bench stopped waiting.
                    let _ = was_read.send(()).await;
                }
            }
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
