//! What a server spends on the websocket messages it receives:
//!
//! - [`cpu_per_message`]: the server CPU time (all its threads) per message
//!   of a burst of masked frames written on one connection as fast as the
//!   socket takes them, up to the pong that answers a ping sent after them:
//!   the server reads in order, so that pong says it has read them all;
//! - [`memory_per_client`]: a fresh server's RSS per idle client, and per
//!   client again after each has sent one large message.

use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

use super::PATIENCE;
use super::server::{SETTLE, SETTLE_AFTER_FREEING, Server};
use super::websocket_clients::{Clients, wait_until_read};

/// Messages of one size and kind, as the masked frames a client sends.
pub struct Burst {
    frames: Vec<u8>,
    pub messages: usize,
}

impl Burst {
    /// `messages` frames of `payload_bytes` each, text (of letters) or
    /// binary.
    pub fn new(payload_bytes: usize, text: bool, messages: usize) -> Burst {
        Burst {
            frames: masked_frames(payload_bytes, text, messages),
            messages,
        }
    }
}

/// The bytes a client sends for `messages` messages of `payload_bytes`
/// each, every frame masked as clients must, with a mask of its own.
pub fn masked_frames(payload_bytes: usize, text: bool, messages: usize) -> Vec<u8> {
    let opcode = OpCode::Data(if text { Data::Text } else { Data::Binary });
    let mut bytes = Vec::new();
    for i in 0..messages {
        let payload = vec![b'a' + (i % 26) as u8; payload_bytes];
        let mut frame = Frame::message(payload, opcode, true);
        frame.header_mut().mask = Some((i as u32).to_be_bytes());
        frame.format(&mut bytes).expect("format into a Vec");
    }
    bytes
}

/// Sends `burst` on `socket`, a client of `server`, and returns the
/// server's CPU time per message, from the first byte written to the pong
/// that says the server has read the last.
pub async fn cpu_per_message(
    server: &Server,
    socket: &mut WebSocketStream<TcpStream>,
    burst: &Burst,
) -> Result<Duration, String> {
    let exchange = async {
        // Underneath tungstenite, which would write message by message.
        socket
            .get_mut()
            .write_all(&burst.frames)
            .await
            .map_err(|err| err.to_string())?;
        wait_until_read(socket).await
    };
    let (read, _, cpu) = server.timed(tokio::time::timeout(PATIENCE, exchange)).await;
    read.map_err(|_| "the burst was not read in time".to_owned())??;
    Ok(cpu / burst.messages as u32)
}

/// RSS per client of a fresh server, in KiB over the server's own.
pub struct MemoryPerClient {
    pub fresh_kib: u64,
    /// With every client connected and idle.
    pub idle_kib: f64,
    /// Once each client has sent one large message and gone idle again,
    /// and the server has had the time to give back what it freed.
    pub after_message_kib: f64,
}

/// Holds `clients` idle clients on `server`, which must be fresh, then has
/// each send one binary message of `message_bytes`, and reads the
/// server's RSS before, in between and after.
pub async fn memory_per_client(
    server: &Server,
    clients: usize,
    message_bytes: usize,
) -> Result<MemoryPerClient, String> {
    // Polling the gauge before the first reading means that what the first
    // scrape allocates is in the baseline, as it is in the later readings.
    server.wait_for_connected_clients(0).await?;
    tokio::time::sleep(SETTLE).await;
    let fresh_kib = server.status_kib("VmRSS")?;
    let per_client = |kib: u64| (kib as f64 - fresh_kib as f64) / clients as f64;

    let mut held = Clients::open(server.addr, clients).await?;
    server.wait_for_connected_clients(clients).await?;
    // Read once the service has given back what the handshakes freed.
    tokio::time::sleep(SETTLE_AFTER_FREEING).await;
    let idle_kib = per_client(server.status_kib("VmRSS")?);

    held.send_each(Message::Binary(vec![b'x'; message_bytes].into()))
        .await?;
    tokio::time::sleep(SETTLE_AFTER_FREEING).await;
    let after_message_kib = per_client(server.status_kib("VmRSS")?);

    let lost = held.close().await;
    if lost > 0 {
        return Err(format!("the server closed {lost} idle clients"));
    }
    Ok(MemoryPerClient {
        fresh_kib,
        idle_kib,
        after_message_kib,
    })
}
