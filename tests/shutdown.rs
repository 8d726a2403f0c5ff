//! Graceful shutdown: on SIGTERM the server stops accepting, finishes the
//! request in flight, closes every websocket with 1001 (going away), takes
//! the messages its clients finish meanwhile, and exits 0, within its grace
//! period.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::raw_websocket::{self, close, frame};
use common::{
    PATIENCE, TestServer, close_code, connect_ws, wait_until_read_by_server, wait_until_refused,
};
use rust_web_prometheus_example::metrics::{CONNECTED_CLIENTS, WEBSOCKET_MESSAGES_RECEIVED};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

#[tokio::test]
async fn sigterm_finishes_requests_closes_websockets_and_exits_zero() {
    let mut server = TestServer::start();
    let mut first = server.connect_ws("first").await;
    let mut second = server.connect_ws("second").await;
    server.wait_for_sample("connected_clients", 2.0).await;
    // A request whose head has not fully arrived when the signal comes. A
    // connection from which the server has read nothing yet is not in
    // flight and may be closed, so wait until it has read the partial head.
    let mut in_flight = TcpStream::connect(server.addr).await.unwrap();
    in_flight
        .write_all(b"GET /some HTTP/1.1\r\nHost: test\r\n")
        .await
        .unwrap();
    wait_until_read_by_server(server.addr, &in_flight).await;

    server.signal(libc::SIGTERM);

    wait_until_refused(server.addr).await;
    assert_eq!(close_code(&mut first).await, Some(CloseCode::Away));
    assert_eq!(close_code(&mut second).await, Some(CloseCode::Away));
    in_flight.write_all(b"\r\n").await.unwrap();
    let mut response = String::new();
    in_flight.read_to_string(&mut response).await.unwrap();
    assert!(
        response.starts_with("HTTP/1.1 200"),
        "in-flight request answered: {response:?}"
    );
    assert!(response.ends_with("hello!"), "{response:?}");
    let status = server.wait_for_exit();
    assert!(status.success(), "exit status {status:?}");
}

#[tokio::test]
async fn sigint_is_a_graceful_shutdown_too() {
    let mut server = TestServer::start();
    let mut client = server.connect_ws("interrupted").await;
    server.wait_for_sample("connected_clients", 1.0).await;

    server.signal(libc::SIGINT);

    assert_eq!(close_code(&mut client).await, Some(CloseCode::Away));
    assert!(server.wait_for_exit().success());
}

#[tokio::test]
async fn connections_still_open_when_the_grace_period_ends_are_dropped() {
    let mut server = TestServer::start_with(&[("SHUTDOWN_GRACE_SECS", "1")]);
    // Neither of these would end by itself within the test's patience: a
    // websocket client that never answers the close, and a request head that
    // never completes (the idle timeout is 30 s).
    let _frozen = server.connect_ws("frozen").await;
    server.wait_for_sample("connected_clients", 1.0).await;
    let mut stalled = TcpStream::connect(server.addr).await.unwrap();
    stalled.write_all(b"GET /some HTTP/1.1\r\n").await.unwrap();
    wait_until_read_by_server(server.addr, &stalled).await;

    let signalled = Instant::now();
    server.signal(libc::SIGTERM);

    assert!(server.wait_for_exit().success());
    // The grace period is waited out, and bounds the wait: with ten times
    // the room it needs, not the 30 s idle timeout the request would get.
    let took = signalled.elapsed();
    assert!(
        took >= Duration::from_secs(1),
        "exited before the grace period: {took:?}"
    );
    assert!(
        took < Duration::from_secs(10),
        "the grace period did not bound the exit: {took:?}"
    );
    let mut rest = Vec::new();
    let _ = stalled.read_to_end(&mut rest).await;
    assert!(
        rest.is_empty(),
        "the stalled request got no answer: {rest:?}"
    );
}

#[tokio::test]
async fn a_second_signal_during_shutdown_exits_at_once_with_128_plus_its_number() {
    for (first, second) in [
        (libc::SIGTERM, libc::SIGTERM),
        (libc::SIGTERM, libc::SIGINT),
    ] {
        // An hour's grace, and a websocket client that never answers the
        // close: left alone, the shutdown would take the whole hour.
        let mut server = TestServer::start_with(&[("SHUTDOWN_GRACE_SECS", "3600")]);
        let _frozen = server.connect_ws("frozen").await;
        server.wait_for_sample("connected_clients", 1.0).await;
        server.signal(first);
        // The listener closes once shutdown has begun, so the second signal
        // comes during it (two at once could be taken for one).
        wait_until_refused(server.addr).await;

        server.signal(second);

        let status = server.wait_for_exit();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            None,
            "exited by itself, not killed: {status:?}"
        );
        assert_eq!(status.code(), Some(128 + second), "{status:?}");
    }
}

#[tokio::test]
async fn serve_returns_only_when_every_websocket_is_closed_and_uncounted() {
    let (addr, stop, server) = serve_here().await;
    let mut clients = Vec::new();
    for i in 0..3 {
        clients.push(connect_ws(addr, &format!("client-{i}")).await);
    }
    let deadline = Instant::now() + PATIENCE;
    while CONNECTED_CLIENTS.get() != 3 {
        assert!(
            Instant::now() < deadline,
            "gauge stuck at {}",
            CONNECTED_CLIENTS.get()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    stop.send(()).unwrap();
    for client in &mut clients {
        assert_eq!(close_code(client).await, Some(CloseCode::Away));
    }
    server.await.unwrap().expect("serve returns Ok");

    assert_eq!(CONNECTED_CLIENTS.get(), 0);
}

/// Reads the server's 1001 on a raw websocket, then sends a message and
/// its own close frame, as a client finishing what it was saying would, and
/// reads the rest.
async fn finish_a_message_after_the_1001(stream: &mut TcpStream) {
    let mut head = [0; 2];
    stream.read_exact(&mut head).await.expect("the close frame");
    let mut payload = vec![0; head[1] as usize];
    stream.read_exact(&mut payload).await.unwrap();
    assert_eq!((head[0], &payload[..2]), (0x88, &1001u16.to_be_bytes()[..]));
    let mut bytes = frame(0x81, GRACE_MESSAGE.as_bytes());
    bytes.extend(close(1000, b""));
    stream.write_all(&bytes).await.unwrap();
    let _ = stream.read_to_end(&mut Vec::new()).await;
}

const GRACE_MESSAGE: &str = "one more thing";

#[tokio::test]
async fn a_message_completed_during_the_shutdown_grace_is_logged() {
    let mut server = TestServer::start_with(&[("LOG_FORMAT", "json")]);
    let mut stream = raw_websocket::open(server.addr, "last-words").await;
    server.wait_for_sample("connected_clients", 1.0).await;

    server.signal(libc::SIGTERM);
    finish_a_message_after_the_1001(&mut stream).await;

    assert!(server.wait_for_exit().success());
    server
        .wait_for_log_event("the message sent after the 1001", |event| {
            event["id"] == "last-words" && event["text"] == GRACE_MESSAGE
        })
        .await;
}

#[tokio::test]
async fn a_message_completed_during_the_shutdown_grace_is_counted() {
    let (addr, stop, server) = serve_here().await;
    let mut stream = raw_websocket::open(addr, "last-words").await;
    // No other test of this binary sends a message.
    let text = WEBSOCKET_MESSAGES_RECEIVED.with_label_values(&["text"]);
    let before = text.get();

    stop.send(()).unwrap();
    finish_a_message_after_the_1001(&mut stream).await;
    server.await.unwrap().expect("serve returns Ok");

    assert_eq!(text.get(), before + 1);
}

/// Serves the service in this test's process on a port of its own: its
/// address, the sender that stops it, and its task.
async fn serve_here() -> (
    SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), rust_web_prometheus_example::app::Error>>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = common::config(&[("COLLECT_INTERVAL_MS", "0")]);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server =
        tokio::spawn(async move { common::serve_in_process(listener, &config, stopped).await });
    (addr, stop, server)
}
