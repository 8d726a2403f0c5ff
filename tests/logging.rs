//! Logging, with the real binary and its real stdout pipe: a log reader that
//! goes away (`| head -1`) or stops reading costs log lines, counted in
//! `log_lines_dropped_total`, and nothing else; a stdout closed from the
//! start (`>&-`) costs nothing at all; `LOG_FORMAT=json` writes one
//! JSON object per line; untrusted text cannot forge a line.

mod common;

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Exposition, PATIENCE, TestServer, connect_ws};
use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

/// `log_lines_dropped_total`, which is there from the start.
fn dropped(metrics: &Exposition) -> f64 {
    metrics
        .value("log_lines_dropped_total")
        .expect("log_lines_dropped_total is exposed")
}

/// Sends `messages` text messages, then closes and checks that the server
/// answered with a close frame and the connection then ended cleanly: a
/// session that died on the way would end in an error instead.
async fn chat_and_close(mut socket: WebSocketStream<TcpStream>, messages: usize) {
    for i in 0..messages {
        socket
            .send(Message::text(format!("message {i}")))
            .await
            .expect("send a message");
    }
    socket.close(None).await.expect("send a close frame");
    let mut answered = false;
    loop {
        match tokio::time::timeout(PATIENCE, socket.next()).await {
            Ok(Some(Ok(Message::Close(_)))) => answered = true,
            Ok(Some(Ok(_))) => {}
            Ok(None) => break,
            Ok(Some(Err(err))) => panic!("the session ended abruptly: {err}"),
            Err(_) => panic!("no answer to the close frame"),
        }
    }
    assert!(answered, "the server answered the close frame");
}

/// Every endpoint a client uses still answers: `/some`, and a websocket
/// whose close handshake completes.
async fn still_serving(server: &TestServer) {
    let response = server.get("/some").await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "hello!");
    chat_and_close(server.connect_ws("latecomer").await, 3).await;
}

#[tokio::test]
async fn a_log_reader_that_goes_away_costs_only_log_lines() {
    // `| head -1`: the reader takes the first line and exits.
    let (server, stdout) = TestServer::start_with_stdout_pipe(&[]);
    drop(stdout);

    let clients = (0..20).map(|i| {
        let server = &server;
        async move { chat_and_close(server.connect_ws(&format!("client-{i}")).await, 5).await }
    });
    futures::future::join_all(clients).await;
    still_serving(&server).await;

    server.wait_for_sample("connected_clients", 0.0).await;
    server
        .wait_for_metrics("dropped log lines counted", |metrics| {
            dropped(metrics) > 0.0
        })
        .await;
    let stderr = server.stderr();
    assert!(
        !stderr.iter().any(|line| line.contains("panicked")),
        "nothing panicked: {stderr:#?}"
    );
}

#[tokio::test]
async fn a_log_reader_that_stops_reading_costs_only_log_lines() {
    const GRACE_SECS: u64 = 10;
    // The pipe is kept open and never read again: once it and the queue
    // are full, every line has to be dropped.
    // No budget of lines per client: these clients are to fill the log.
    let (mut server, _unread) = TestServer::start_with_stdout_pipe(&[
        ("SHUTDOWN_GRACE_SECS", &GRACE_SECS.to_string()),
        ("WS_LOG_MESSAGES_PER_SEC", &u32::MAX.to_string()),
    ]);

    // A few thousand lines, far more than the pipe (64 KiB) and the queue
    // (1 MiB) hold.
    let clients = (0..4).map(|i| {
        let server = &server;
        async move { chat_and_close(server.connect_ws(&format!("chatty-{i}")).await, 5_000).await }
    });
    futures::future::join_all(clients).await;
    let first = server
        .wait_for_metrics("dropped log lines counted", |metrics| {
            dropped(metrics) > 0.0
        })
        .await;
    still_serving(&server).await;
    server
        .wait_for_metrics("more dropped log lines counted", |metrics| {
            dropped(metrics) > dropped(&first)
        })
        .await;
    server.wait_for_sample("connected_clients", 0.0).await;
    // A client connected at shutdown, to be closed with 1001.
    let mut held = server.connect_ws("held").await;
    server.wait_for_sample("connected_clients", 1.0).await;

    let signalled = Instant::now();
    server.signal(libc::SIGTERM);

    assert_eq!(
        common::close_code(&mut held).await,
        Some(tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode::Away)
    );
    let status = server.wait_for_exit();
    assert!(status.success(), "exit status {status:?}");
    assert!(
        signalled.elapsed() < Duration::from_secs(GRACE_SECS),
        "shutdown took {:?}, beyond the grace period",
        signalled.elapsed()
    );
    let stderr = server.stderr();
    assert!(
        !stderr.iter().any(|line| line.contains("panicked")),
        "nothing panicked: {stderr:#?}"
    );
}

/// An id that would end a JSON string and start a field of its own if it
/// were written unescaped (the characters are all ones a URI path allows).
const HOSTILE_ID: &str = r#"evil"},{"level":"ERROR\"#;

/// Text that would start a line of its own if written unescaped.
const HOSTILE_TEXT: &str = "hi\n{\"level\":\"ERROR\",\"message\":\"forged\"}\r\n\u{1b}[31m";

/// Connects to `server` as [`HOSTILE_ID`], sends [`HOSTILE_TEXT`] and
/// closes, reading until the server has closed too, so that both the
/// message and the disconnect have been logged, or are about to be.
async fn send_hostile_text_and_leave(server: &TestServer) {
    let mut client = server.connect_ws(HOSTILE_ID).await;
    client
        .send(Message::text(HOSTILE_TEXT))
        .await
        .expect("send a message");
    client.close(None).await.expect("close");
    while let Some(Ok(_)) = client.next().await {}
}

#[tokio::test]
async fn json_logs_are_one_object_per_line_with_untrusted_text_escaped() {
    let server = TestServer::start_with(&[("LOG_FORMAT", "json")]);
    send_hostile_text_and_leave(&server).await;

    let events = server
        .wait_for_log_event("the hostile client's disconnect", |event| {
            event["id"] == HOSTILE_ID && event["message"] == "client disconnected"
        })
        .await;

    // `wait_for_log_event` parsed every line as a JSON object, the start-up
    // line that scripts wait for included.
    let stdout = server.stdout();
    assert_eq!(stdout.len(), events.len(), "{stdout:#?}");
    let port = server.addr.port();
    assert_eq!(events[0]["message"], format!("Started on port {port}"));
    assert!(events.iter().all(|event| event.is_object()
        && event["level"].is_string()
        && event["timestamp"].is_string()));
    let received: Vec<_> = events
        .iter()
        .filter(|event| event["text"].is_string())
        .collect();
    assert_eq!(received.len(), 1, "one message logged: {events:#?}");
    assert_eq!(received[0]["id"], HOSTILE_ID);
    assert_eq!(received[0]["text"], HOSTILE_TEXT);
    assert_eq!(received[0]["bytes"], HOSTILE_TEXT.len());
    assert!(
        !events.iter().any(|event| event["message"] == "forged"),
        "the message forged no line: {events:#?}"
    );
}

#[tokio::test]
async fn text_logs_write_untrusted_text_escaped_on_one_line() {
    let server = TestServer::start();
    send_hostile_text_and_leave(&server).await;

    // The message's text, as Rust's `{:?}` escapes it: on one line, quoted.
    let escaped = format!("{HOSTILE_TEXT:?}");
    let stdout = server
        .wait_for_stdout("the message logged", |line| line.contains(&escaped))
        .await;

    // Every line begins with its timestamp: none begins with text the
    // client sent.
    for line in &stdout {
        assert!(
            line.starts_with("20"),
            "a line not written by the logger: {line:?} in {stdout:#?}"
        );
        assert!(!line.contains('\u{1b}'), "a raw escape sequence: {line:?}");
    }
}

#[tokio::test]
async fn a_closed_stdout_stops_nothing_and_loses_no_line() {
    // `service >&-`: Rust's runtime opens /dev/null in place of the closed
    // descriptor, so logging starts, and its lines go nowhere without
    // failing. With nothing on stdout the port must be chosen here: one the
    // kernel just handed out and took back.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("pick a free port");
    let mut command = Command::new(env!("CARGO_BIN_EXE_rust-web-prometheus-example"));
    command
        .env("LISTEN_ADDR", addr.to_string())
        .stdin(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: between fork and exec the closure only makes one system call.
    unsafe {
        command.pre_exec(|| match libc::close(1) {
            0 => Ok(()),
            _ => Err(std::io::Error::last_os_error()),
        });
    }
    let mut server = KilledOnDrop(command.spawn().expect("start the server binary"));

    let deadline = Instant::now() + PATIENCE;
    let socket = loop {
        if let Ok(stream) = TcpStream::connect(addr).await {
            drop(stream);
            break connect_ws(addr, "no-stdout").await;
        }
        assert!(
            server.0.try_wait().expect("poll the server").is_none(),
            "the server exited with stdout closed"
        );
        assert!(Instant::now() < deadline, "the server never listened");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // A connect, messages and a disconnect: lines logged, all written.
    chat_and_close(socket, 5).await;
    let metrics = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("the exposition");
    assert_eq!(dropped(&Exposition(metrics)), 0.0);

    // SAFETY: kill only sends a signal to the child started above.
    unsafe { libc::kill(server.0.id() as libc::pid_t, libc::SIGTERM) };
    let status = server.0.wait().expect("wait for the server");
    let mut stderr = String::new();
    server
        .0
        .stderr
        .take()
        .expect("stderr is piped")
        .read_to_string(&mut stderr)
        .expect("read stderr");
    assert!(status.success(), "{status:?}");
    assert!(stderr.is_empty(), "nothing on stderr: {stderr}");
}

/// A server started by hand, killed if the test ends before it exits.
struct KilledOnDrop(Child);

impl Drop for KilledOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
