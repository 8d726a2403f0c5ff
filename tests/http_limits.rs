//! What one HTTP connection may cost, over real sockets: a request head
//! larger than the read buffer gets 431, and the idle check closes a silent
//! connection but not one whose response is still flowing to a slow reader.

mod common;

use std::time::{Duration, Instant};

use common::TestServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Reads until the server closes the connection, returning what it sent.
async fn read_to_close(stream: &mut TcpStream) -> String {
    let mut response = Vec::new();
    tokio::time::timeout(common::PATIENCE, stream.read_to_end(&mut response))
        .await
        .expect("the server answered and closed")
        .expect("read the response");
    String::from_utf8_lossy(&response).into_owned()
}

/// A request for `/some` whose head is about `head_bytes` long, padded with
/// one long header.
fn request_with_head_of(head_bytes: usize) -> String {
    let start = "GET /some HTTP/1.1\r\nHost: test\r\nConnection: close\r\nX-Padding: ";
    let end = "\r\n\r\n";
    let padding = "a".repeat(head_bytes - start.len() - end.len());
    format!("{start}{padding}{end}")
}

#[tokio::test]
async fn a_request_head_larger_than_the_read_buffer_gets_431() {
    let server = TestServer::start();

    // Well inside the limit: served as usual.
    let mut fitting = TcpStream::connect(server.addr).await.unwrap();
    fitting
        .write_all(request_with_head_of(8 * 1024).as_bytes())
        .await
        .unwrap();
    let response = read_to_close(&mut fitting).await;
    assert!(response.starts_with("HTTP/1.1 200 "), "{response:?}");

    // Twice the limit: refused once the buffer is full, without waiting for
    // the rest. The server stops reading, so the client's write of the rest
    // may fail; the answer is already on its way.
    let mut oversized = TcpStream::connect(server.addr).await.unwrap();
    let _ = oversized
        .write_all(request_with_head_of(32 * 1024).as_bytes())
        .await;
    let response = read_to_close(&mut oversized).await;
    assert!(
        response.starts_with("HTTP/1.1 431 "),
        "a 32 KiB head is refused with 431: {response:?}"
    );
}

#[tokio::test]
async fn a_slow_reader_keeps_its_connection_while_the_body_moves_and_a_silent_one_does_not() {
    let server = TestServer::start_with(&[
        ("HTTP_IDLE_TIMEOUT_SECS", "1"),
        ("COLLECT_INTERVAL_MS", "1"),
    ]);
    // The collector fills `response_code` with up to ~1,000 series.
    server
        .wait_for_metrics("a /metrics body over 48 KiB", |metrics| {
            metrics.0.len() > 48 * 1024
        })
        .await;
    let mut silent = TcpStream::connect(server.addr).await.unwrap();

    let socket = TcpSocket::new_v4().unwrap();
    // The kernel raises this to its minimum, a couple of KiB: the body waits
    // in the server's send buffer and moves only as the client reads.
    socket.set_recv_buffer_size(1024).unwrap();
    let mut slow = socket.connect(server.addr).await.unwrap();
    slow.write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .unwrap();
    // 1 KiB every 100 ms: bytes move ten times per idle period, and the
    // whole body takes several periods.
    let started = Instant::now();
    let mut response = Vec::new();
    let mut chunk = [0u8; 1024];
    let length = loop {
        let read = slow.read(&mut chunk).await.expect("read the body");
        assert_ne!(read, 0, "closed after {} bytes", response.len());
        response.extend_from_slice(&chunk[..read]);
        if let Some(length) = whole_response_length(&response) {
            break length;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(response.len(), length);
    let reading_took = started.elapsed();

    // The connection is still open and serves the next request.
    slow.write_all(b"GET /some HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let next = read_to_close(&mut slow).await;
    assert!(
        next.starts_with("HTTP/1.1 200 ") && next.ends_with("hello!"),
        "after {reading_took:?} of slow reading, the next request was served: {next:?}"
    );

    // Meanwhile the connection that never sent anything was closed, with
    // no answer, by the same idle check.
    let mut rest = Vec::new();
    tokio::time::timeout(common::PATIENCE, silent.read_to_end(&mut rest))
        .await
        .expect("the silent connection was closed")
        .unwrap();
    assert!(rest.is_empty(), "and got no answer: {rest:?}");
}

/// The length of the response at the start of `received` once all of it
/// has arrived, from its `content-length`.
fn whole_response_length(received: &[u8]) -> Option<usize> {
    let head_end = received
        .windows(4)
        .position(|window| window == b"\r\n\r\n")?
        + 4;
    let head = String::from_utf8_lossy(&received[..head_end]);
    let length: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length: "))
        .expect("a content-length")
        .parse()
        .unwrap();
    (received.len() >= head_end + length).then_some(head_end + length)
}
