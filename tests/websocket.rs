//! Websocket clients on `/ws/<id>` and the `connected_clients` gauge, with a
//! real websocket client over a real socket: clean closes, resets, dead
//! peers, oversized messages, unfinished messages, long ids, and plain GETs.

mod common;

use std::time::Duration;

use common::{PATIENCE, TestServer, close_code};
use futures::{SinkExt, StreamExt};
use tokio::io::AsyncReadExt;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};

#[tokio::test]
async fn the_gauge_counts_clients_through_clean_close_and_abrupt_drop() {
    let server = TestServer::start();

    let mut polite = server.connect_ws("polite").await;
    let rude = server.connect_ws("rude").await;
    server.wait_for_sample("connected_clients", 2.0).await;

    polite.close(None).await.expect("send close frame");
    // Drain until the server's answering close frame ends the stream.
    while let Some(Ok(_)) = polite.next().await {}
    server.wait_for_sample("connected_clients", 1.0).await;

    // SO_LINGER 0 makes dropping the socket send a TCP reset: no close frame, no FIN.
    rude.get_ref().set_zero_linger().expect("set SO_LINGER 0");
    drop(rude);
    server.wait_for_sample("connected_clients", 0.0).await;
}

#[tokio::test]
async fn client_ids_add_no_series_while_their_sessions_are_open() {
    let server = TestServer::start_with(&[("COLLECT_INTERVAL_MS", "0")]);
    // One client and one scrape first, so that every series a session and a
    // scrape can touch exists.
    let mut first = server.connect_ws("client-id-0").await;
    first.send(Message::text("hello")).await.expect("send");
    server.wait_for_sample("connected_clients", 1.0).await;
    let before = server.metrics().await.series();

    let mut held = vec![first];
    for i in 1..=20 {
        let mut client = server.connect_ws(&format!("client-id-{i}")).await;
        client.send(Message::text("hello")).await.expect("send");
        held.push(client);
    }
    server.wait_for_sample("connected_clients", 21.0).await;
    let metrics = server.metrics().await;

    assert_eq!(metrics.series(), before, "the ids added or removed series");
    assert!(
        !metrics.0.contains("client-id-"),
        "an id leaked into a label"
    );
}

#[tokio::test]
async fn a_plain_get_is_refused_and_counts_nothing() {
    let server = TestServer::start();

    let response = server.get("/ws/curious").await;

    assert_eq!(response.status(), 426, "Upgrade Required");
    assert_eq!(response.headers()["upgrade"], "websocket");
    assert_eq!(response.headers()["connection"], "upgrade");
    assert_eq!(server.metrics().await.value("connected_clients"), Some(0.0));
}

#[tokio::test]
async fn a_live_client_is_pinged_and_kept_while_a_silent_one_is_dropped() {
    let server = TestServer::start_with(&[("WS_HEARTBEAT_SECS", "1")]);

    // A client that keeps reading answers pings (tungstenite replies with a
    // pong as it reads). The silent one is read only as raw TCP, so it never
    // answers: it stands in for a frozen process.
    let live = server.connect_ws("live").await;
    let mut silent = server.connect_ws("silent").await.into_inner();
    let (pings_tx, mut pings) = tokio::sync::mpsc::unbounded_channel();
    let reader = tokio::spawn(async move {
        let mut live = live;
        while let Some(Ok(message)) = live.next().await {
            if message.is_ping() {
                let _ = pings_tx.send(());
            }
        }
    });

    // The server hangs up on the silent client after two heartbeats: its
    // socket reaches end of stream (after the unanswered pings).
    let mut unanswered = Vec::new();
    tokio::time::timeout(PATIENCE, silent.read_to_end(&mut unanswered))
        .await
        .expect("the silent client was dropped")
        .expect("read the silent client's socket");
    // Three pings span more than the two heartbeats that condemn a silent
    // peer, and the live client is still there after them.
    for _ in 0..3 {
        tokio::time::timeout(PATIENCE, pings.recv())
            .await
            .expect("a ping within the test's patience")
            .expect("the live client is pinged");
    }

    assert!(!reader.is_finished(), "the live client is still connected");
    server.wait_for_sample("connected_clients", 1.0).await;
}

#[tokio::test]
async fn an_oversized_message_closes_with_1009() {
    let server = TestServer::start_with(&[("WS_MAX_MESSAGE_BYTES", "1024")]);
    let mut client = server.connect_ws("chatty").await;
    client
        .send(Message::text("x".repeat(1024)))
        .await
        .expect("a message at the limit");

    client
        .send(Message::text("x".repeat(1025)))
        .await
        .expect("send a message one byte over");

    assert_eq!(close_code(&mut client).await, Some(CloseCode::Size));
    server.wait_for_sample("connected_clients", 0.0).await;
}

#[tokio::test]
async fn huge_messages_cost_no_more_than_the_limit() {
    const CLIENTS: usize = 16;
    const MESSAGE_BYTES: usize = 8 << 20;
    let server = TestServer::start();
    let mut clients = Vec::new();
    for i in 0..CLIENTS {
        clients.push(server.connect_ws(&format!("flood-{i}")).await);
    }
    server
        .wait_for_sample("connected_clients", CLIENTS as f64)
        .await;
    let before = server.rss_bytes();

    let floods = clients.into_iter().map(|mut client| async move {
        // The server refuses the message from its header and stops reading
        // it, so the send itself may fail part way.
        let _ = client.send(Message::binary(vec![7u8; MESSAGE_BYTES])).await;
        close_code(&mut client).await
    });
    let codes = futures::future::join_all(floods).await;
    server.wait_for_sample("connected_clients", 0.0).await;

    assert!(
        codes.iter().all(|code| *code == Some(CloseCode::Size)),
        "every client was told 1009: {codes:?}"
    );
    let growth = server.rss_bytes().saturating_sub(before);
    // Buffering the messages would take 128 MiB; refusing them at the frame
    // header costs at most the 64 KiB limit per client.
    assert!(
        growth < 8 << 20,
        "RSS grew by {} KiB for {CLIENTS} clients sending {} MiB each",
        growth / 1024,
        MESSAGE_BYTES >> 20
    );
}

#[tokio::test]
async fn the_gauge_returns_to_zero_after_a_mix_of_endings() {
    let server =
        TestServer::start_with(&[("WS_HEARTBEAT_SECS", "1"), ("WS_MAX_MESSAGE_BYTES", "1024")]);
    let mut held = Vec::new();
    for round in 0..10 {
        let mut polite = server.connect_ws(&format!("polite-{round}")).await;
        let rude = server.connect_ws(&format!("rude-{round}")).await;
        let mut chatty = server.connect_ws(&format!("chatty-{round}")).await;
        let silent = server.connect_ws(&format!("silent-{round}")).await;

        polite.close(None).await.expect("close");
        rude.get_ref().set_zero_linger().expect("SO_LINGER 0");
        drop(rude);
        chatty
            .send(Message::binary(vec![0u8; 4096]))
            .await
            .expect("oversized message");
        held.push(polite);
        held.push(chatty);
        held.push(silent);
    }

    // The silent ones go after two heartbeats; everything else sooner.
    server.wait_for_sample("connected_clients", 0.0).await;
    // And it stays there: nothing was counted down twice.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(server.metrics().await.value("connected_clients"), Some(0.0));
}

#[tokio::test]
async fn memory_goes_back_to_the_system_after_a_burst_of_clients_leaves() {
    const CLIENTS: usize = 2_000;
    let limit = rlimit::increase_nofile_limit(u64::MAX).expect("raise the open-file limit");
    if limit < CLIENTS as u64 + 200 {
        eprintln!(
            "skipped: this test needs {} open files; the hard limit allows {limit}",
            CLIENTS + 200
        );
        return;
    }
    let server = TestServer::start_with(&[("COLLECT_INTERVAL_MS", "0")]);
    let before = server.rss_bytes();

    let mut clients = Vec::new();
    for i in 0..CLIENTS {
        clients.push(server.connect_ws(&format!("burst-{i}")).await);
    }
    server
        .wait_for_sample("connected_clients", CLIENTS as f64)
        .await;
    let loaded = server.rss_bytes();
    drop(clients);
    server.wait_for_sample("connected_clients", 0.0).await;

    // glibc keeps the freed memory until the service trims its heaps, which it
    // does within seconds of a client leaving.
    let deadline = std::time::Instant::now() + common::PATIENCE;
    let mut after = server.rss_bytes();
    while after > 2 * before {
        assert!(
            std::time::Instant::now() < deadline,
            "RSS still {} KiB after the burst (before: {} KiB, loaded: {} KiB)",
            after / 1024,
            before / 1024,
            loaded / 1024
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        after = server.rss_bytes();
    }
}

#[tokio::test]
async fn clients_beyond_the_limit_are_turned_away_with_503() {
    let server = TestServer::start_with(&[("WS_MAX_CLIENTS", "2")]);
    let _first = server.connect_ws("first").await;
    let mut second = server.connect_ws("second").await;

    let refused = tokio_tungstenite::client_async(
        format!("ws://{}/ws/third", server.addr),
        tokio::net::TcpStream::connect(server.addr).await.unwrap(),
    )
    .await;

    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 503)
        }
        other => panic!("the third client should get 503, got {other:?}"),
    }
    server.wait_for_sample("connected_clients", 2.0).await;
    // A slot that frees up can be taken again.
    second.close(None).await.unwrap();
    while let Some(Ok(_)) = second.next().await {}
    server.wait_for_sample("connected_clients", 1.0).await;
    let _third = server.connect_ws("third").await;
    server.wait_for_sample("connected_clients", 2.0).await;
}

#[tokio::test]
async fn a_frozen_client_process_leaves_the_gauge_within_about_two_heartbeats() {
    let server = TestServer::start_with(&[("WS_HEARTBEAT_SECS", "1"), ("LOG_FORMAT", "json")]);
    let client = common::ExampleClient::start(server.addr, "frozen-process");
    server.wait_for_sample("connected_clients", 1.0).await;
    // The client process is connected and talking.
    server
        .wait_for_log_event("a message from the client process", |event| {
            event["id"] == "frozen-process" && event["text"] == "hello from frozen-process"
        })
        .await;

    // Stopped, it sends no FIN and answers no ping: only the heartbeat can
    // tell the server it is gone.
    client.signal(libc::SIGSTOP);

    server.wait_for_sample("connected_clients", 0.0).await;
    server
        .wait_for_log_event("the frozen client dropped as silent", |event| {
            event["id"] == "frozen-process" && event.get("silent_for").is_some()
        })
        .await;
}

#[tokio::test]
async fn an_id_over_128_bytes_is_refused_before_the_upgrade_and_counted_nowhere() {
    // One slot: a refused client that took it would shut out the next one.
    let server = TestServer::start_with(&[("WS_MAX_CLIENTS", "1")]);
    // The limit is on the id as sent in the URL: 129 bytes percent-encoded
    // is refused even though it decodes to 43.
    for id in ["a".repeat(129), "%41".repeat(43)] {
        let refused = tokio_tungstenite::client_async(
            format!("ws://{}/ws/{id}", server.addr),
            tokio::net::TcpStream::connect(server.addr).await.unwrap(),
        )
        .await;

        match refused {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), 414, "URI Too Long for {id}");
                let body = response.body().as_deref().unwrap_or_default();
                assert_eq!(body, b"websocket id longer than 128 bytes");
            }
            other => panic!("an id of {} bytes should get 414, got {other:?}", id.len()),
        }
    }
    assert_eq!(server.metrics().await.value("connected_clients"), Some(0.0));

    let _longest = server.connect_ws(&"a".repeat(128)).await;
    server.wait_for_sample("connected_clients", 1.0).await;
}

#[tokio::test]
async fn a_message_left_unfinished_is_closed_with_1008_though_pongs_keep_coming() {
    let server = TestServer::start_with(&[("WS_HEARTBEAT_SECS", "1")]);
    let mut stalled = server.connect_ws("stalled").await;
    let idle = server.connect_ws("idle").await;
    server.wait_for_sample("connected_clients", 2.0).await;
    // Reading answers every ping with a pong, for both clients.
    let (pings_tx, mut pings) = tokio::sync::mpsc::unbounded_channel();
    let idle_reader = tokio::spawn(async move {
        let mut idle = idle;
        while let Some(Ok(message)) = idle.next().await {
            if message.is_ping() {
                let _ = pings_tx.send(());
            }
        }
    });

    let first_fragment = Frame::message("the beginning of", OpCode::Data(Data::Text), false);
    stalled
        .send(Message::Frame(first_fragment))
        .await
        .expect("send the first fragment");
    let code = tokio::time::timeout(common::PATIENCE, close_code(&mut stalled))
        .await
        .expect("the unfinished message was closed though the client answered every ping");

    assert_eq!(code, Some(CloseCode::Policy));
    server.wait_for_sample("connected_clients", 1.0).await;
    // The idle client, which only answers pings, stays for more heartbeats
    // than the two after which the unfinished message was given up.
    for _ in 0..3 {
        pings.recv().await.expect("the idle client is still pinged");
    }
    assert_eq!(server.metrics().await.value("connected_clients"), Some(1.0));
    assert!(
        !idle_reader.is_finished(),
        "the idle client is still connected"
    );
}

#[tokio::test]
async fn a_session_gives_back_the_memory_of_a_large_message() {
    const CLIENTS: usize = 200;
    // The largest message the default limit accepts.
    const MESSAGE_BYTES: usize = 64 * 1024;
    const ALLOWED_KIB_PER_CLIENT: u64 = 8;
    let server = TestServer::start_with(&[("COLLECT_INTERVAL_MS", "0")]);
    let mut clients = Vec::new();
    for i in 0..CLIENTS {
        clients.push(server.connect_ws(&format!("large-{i}")).await);
    }
    server
        .wait_for_sample("connected_clients", CLIENTS as f64)
        .await;
    let idle = server.rss_bytes();

    let senders = clients.iter_mut().map(|client| async move {
        client
            .send(Message::binary(vec![7u8; MESSAGE_BYTES]))
            .await
            .expect("a message at the limit");
        // The server reads in order: its pong means it has read the message.
        client.send(Message::Ping("read?".into())).await.unwrap();
        while let Some(Ok(message)) = client.next().await {
            if message.is_pong() {
                return;
            }
        }
        panic!("the server closed instead of answering the ping");
    });
    futures::future::join_all(senders).await;
    assert_eq!(
        server.metrics().await.value("connected_clients"),
        Some(CLIENTS as f64)
    );

    // Kept, each message would stay as a 64 KiB buffer in its session; freed,
    // the service trims the heap within seconds.
    let allowed = idle + CLIENTS as u64 * ALLOWED_KIB_PER_CLIENT * 1024;
    let deadline = std::time::Instant::now() + common::PATIENCE;
    let mut now = server.rss_bytes();
    while now > allowed {
        assert!(
            std::time::Instant::now() < deadline,
            "RSS {} KiB after the messages, {} KiB when idle: {} KiB per client",
            now / 1024,
            idle / 1024,
            (now - idle) / 1024 / CLIENTS as u64
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        now = server.rss_bytes();
    }
}
