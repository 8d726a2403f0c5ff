//! What one hostile websocket client can cost the others: a client that
//! sends tiny messages without pause leaves the probes, the other routes and
//! the other clients served, fills no log, and has every message counted;
//! a client that trickles a message is closed at the message's deadline.
//!
//! The figures (throughput and latency beside such a client) are the
//! comparison bench's (docs/comparison.md); here each test waits for events.

mod common;

use std::time::{Duration, Instant};

use common::raw_websocket::{close, close_code, frame, open};
use common::{PATIENCE, TestServer};
use futures::SinkExt;
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::Message;

/// Messages in one write of the flooding client: 1-byte text frames of 7
/// bytes, about 900 KB a write.
const FRAMES_PER_WRITE: usize = 128 * 1024;

/// How long a probe may take while a client floods: ten times what it
/// needs in a debug build on a busy machine, and the `periodSeconds` of a
/// Kubernetes probe with room to spare.
const PROBE_LIMIT: Duration = Duration::from_secs(2);

/// Message lines each client may have logged per second.
const LOG_BUDGET: u32 = 20;

#[tokio::test]
async fn one_client_flooding_tiny_messages_leaves_the_others_served_and_the_log_bounded() {
    // One worker thread, as tokio starts under a limit of one CPU: the
    // flooding client and everything else share it.
    let server = TestServer::start_with(&[
        ("TOKIO_WORKER_THREADS", "1"),
        ("METRICS_ADDR", "127.0.0.1:0"),
        ("LOG_FORMAT", "json"),
        ("COLLECT_INTERVAL_MS", "0"),
        ("WS_LOG_MESSAGES_PER_SEC", &LOG_BUDGET.to_string()),
    ]);
    let probe_url = format!("http://{}/healthz", server.metrics_addr.unwrap());

    let session_start = Instant::now();
    let mut flood = open(server.addr, "flood").await;
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let flooder = tokio::spawn(async move {
        let block = frame(0x81, b"x").repeat(FRAMES_PER_WRITE);
        let mut sent = 0;
        while stopped.try_recv().is_err() {
            flood.write_all(&block).await.expect("the flood is read");
            sent += FRAMES_PER_WRITE;
        }
        (flood, sent)
    });
    server
        .wait_for_metrics("the flood under way", |metrics| {
            let text = metrics.sample("websocket_messages_received_total", &[("type", "text")]);
            text.unwrap_or_default() >= FRAMES_PER_WRITE as f64
        })
        .await;

    // While it floods: the probes, another route and another client.
    for attempt in 0..20 {
        let probe = tokio::time::timeout(PROBE_LIMIT, reqwest::get(&probe_url)).await;
        let response = probe
            .unwrap_or_else(|_| panic!("probe {attempt} unanswered for {PROBE_LIMIT:?}"))
            .expect("GET /healthz");
        assert_eq!(response.status(), 200);
    }
    let some = tokio::time::timeout(PROBE_LIMIT, server.get("/some")).await;
    assert_eq!(some.expect("GET /some answered").status(), 200);
    let mut calm = server.connect_ws("calm").await;
    for i in 0..10 {
        let text = format!("calm {i}");
        calm.send(Message::text(text)).await.unwrap();
    }
    server
        .wait_for_log_event("the calm client's last message", |event| {
            event["text"] == "calm 9"
        })
        .await;
    assert!(!flooder.is_finished(), "the flood went on throughout");

    stop.send(()).unwrap();
    let (mut flood, sent) = flooder.await.unwrap();
    flood.write_all(&close(1000, b"")).await.unwrap();
    assert_eq!(close_code(&mut flood).await, 1000);
    let session_time = session_start.elapsed();

    let metrics = server.metrics().await;
    let text = metrics.sample("websocket_messages_received_total", &[("type", "text")]);
    assert_eq!(text, Some((sent + 10) as f64), "every message counted");
    let bytes = metrics.sample("websocket_received_bytes_total", &[("type", "text")]);
    assert_eq!(bytes, Some((sent + 10 * "calm i".len()) as f64));
    assert_eq!(metrics.value("log_lines_dropped_total"), Some(0.0));

    // Every calm message logged; of the flood's, a budget's worth a
    // second, and lines that say how many were left out, which add up.
    let events = server
        .wait_for_log_event("the flood's last lines", |event| {
            event["id"] == "flood" && event["message"] == "client disconnected"
        })
        .await;
    let calm_logged = events
        .iter()
        .filter(|event| event["id"] == "calm" && event["message"] == "text message received")
        .count();
    assert_eq!(calm_logged, 10, "every message of the calm client logged");
    let events = wait_for_flood_accounted(&server, sent).await;
    let flood_logged = events
        .iter()
        .filter(|event| event["id"] == "flood" && event["message"] == "text message received")
        .count();
    // The budget's windows of a second, from the session's start.
    let windows = session_time.as_secs() as usize + 1;
    assert!(
        flood_logged <= windows * LOG_BUDGET as usize,
        "{flood_logged} lines of the flood logged in a session of {session_time:?}"
    );
}

/// Waits until the flood's logged lines and those said to be left out add
/// up to the `sent` messages, and returns every event logged.
async fn wait_for_flood_accounted(server: &TestServer, sent: usize) -> Vec<serde_json::Value> {
    let accounted = |events: &[serde_json::Value]| {
        events
            .iter()
            .filter(|event| event["id"] == "flood")
            .map(|event| match event["message"].as_str() {
                Some("text message received") => 1,
                Some("message lines left out, over the client's budget") => {
                    event["left_out"].as_u64().expect("a count") as usize
                }
                _ => 0,
            })
            .sum::<usize>()
    };
    let deadline = Instant::now() + PATIENCE;
    loop {
        let events: Vec<serde_json::Value> = server
            .stdout()
            .iter()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect();
        let so_far = accounted(&events);
        if so_far == sent {
            return events;
        }
        assert!(
            Instant::now() < deadline,
            "the flood's lines account for {so_far} messages of {sent}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_message_trickled_a_byte_at_a_time_is_closed_at_its_deadline() {
    let server = TestServer::start_with(&[
        ("WS_HEARTBEAT_SECS", "1"),
        ("WS_MESSAGE_DEADLINE_SECS", "3"),
        ("COLLECT_INTERVAL_MS", "0"),
    ]);
    let stream = open(server.addr, "trickle").await;
    let (mut from_server, mut to_server) = stream.into_split();
    // A byte every 200 ms, far quicker than the silence limit, of a message
    // that would take minutes.
    let message = frame(0x81, &[b'x'; 1000]);
    let trickle = tokio::spawn(async move {
        for byte in message {
            if to_server.write_all(&[byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });

    assert_eq!(close_code(&mut from_server).await, 1008);
    trickle.abort();
    let metrics = server.metrics().await;
    let closed = metrics.sample("websocket_closes_total", &[("code", "1008")]);
    assert_eq!(closed, Some(1.0));
}
