//! A websocket spoken by hand over a raw socket: the opening handshake,
//! client frames built byte by byte, and the server's frames read back.
//! For the tests that need exact control of what is sent and when.

use std::net::SocketAddr;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{PATIENCE, wait_until_read_by_server};

pub const MASK: [u8; 4] = [0xa1, 0x5b, 0x0c, 0xee];
/// A client frame with first byte `first` (FIN, RSV, opcode), masked.
pub fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
    let mut bytes = vec![first];
    match payload.len() {
        len @ 0..=125 => bytes.push(0x80 | len as u8),
        len @ 126..=65535 => {
            bytes.push(0x80 | 126);
            bytes.extend((len as u16).to_be_bytes());
        }
        len => {
            bytes.push(0x80 | 127);
            bytes.extend((len as u64).to_be_bytes());
        }
    }
    bytes.extend(MASK);
    bytes.extend(
        payload
            .iter()
            .zip(MASK.iter().cycle())
            .map(|(byte, key)| byte ^ key),
    );
    bytes
}

pub fn close(code: u16, reason: &[u8]) -> Vec<u8> {
    let payload: Vec<u8> = code.to_be_bytes().iter().chain(reason).copied().collect();
    frame(0x88, &payload)
}

/// A websocket opened by hand on `addr`, to write raw frames on.
pub async fn open(addr: SocketAddr, id: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.set_nodelay(true).unwrap();
    let handshake = format!(
        "GET /ws/{id} HTTP/1.1\r\nHost: test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    stream.write_all(handshake.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(stream.read_u8().await.expect("the handshake's answer"));
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        "the accept key: {head}"
    );
    stream
}

/// Writes `bytes` a byte per write; with `wait`, each only once the server
/// has read the one before, so each is a read of its own.
pub async fn write_bytewise(addr: SocketAddr, stream: &mut TcpStream, bytes: &[u8], wait: bool) {
    for byte in bytes {
        // The server may close as soon as it has seen enough.
        if stream.write_all(&[*byte]).await.is_err() {
            return;
        }
        if wait {
            wait_until_read_by_server(addr, stream).await;
        }
    }
}

/// Reads the server's frames until the connection ends, and returns them
/// as (first byte, payload). Fails on a reset and on a masked frame.
pub async fn server_frames(stream: &mut (impl AsyncRead + Unpin)) -> Vec<(u8, Vec<u8>)> {
    let mut received = Vec::new();
    let read = tokio::time::timeout(PATIENCE, stream.read_to_end(&mut received)).await;
    read.expect("the server ends the connection")
        .expect("a clean end, not a reset");
    let mut frames = Vec::new();
    let mut at = 0;
    while at < received.len() {
        let (first, length) = (received[at], received[at + 1] as usize);
        assert_eq!(length & 0x80, 0, "server frames are unmasked");
        assert!(length <= 125, "a control frame, not {received:02x?}");
        frames.push((first, received[at + 2..at + 2 + length].to_vec()));
        at += 2 + length;
    }
    frames
}

/// Reads the server's frames until the connection ends, and returns the
/// code of its close frame. Fails on a reset, on a data frame, and on a
/// close frame that is not the last thing sent; pings and pongs may come
/// first.
pub async fn close_code(stream: &mut (impl AsyncRead + Unpin)) -> u16 {
    let frames = server_frames(stream).await;
    let (close, before) = frames.split_last().expect("a close frame");
    for (first, _) in before {
        assert!(
            matches!(first, 0x89 | 0x8a),
            "unexpected frame {first:#04x} in {frames:02x?}"
        );
    }
    assert_eq!(close.0, 0x88, "the close frame comes last: {frames:02x?}");
    u16::from_be_bytes([close.1[0], close.1[1]])
}
