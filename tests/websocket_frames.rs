//! The websocket protocol over a real socket, frame by frame: RFC 6455
//! frames written by hand, a byte per write, and the exact close code the
//! server answers each violation with (1002, 1007, 1009), a close frame
//! that arrives before the connection ends cleanly (no reset), valid
//! messages logged exactly as sent, and every ending counted in
//! `websocket_closes_total`.
//!
//! `src/ws/frames.rs` has the same cases cut at every position, in
//! process; here the bytes go through the kernel and the session's reads.

mod common;

use std::time::Duration;

use common::raw_websocket::{close, close_code, frame, open, server_frames, write_bytewise};
use common::{PATIENCE, TestServer, wait_until_read_by_server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const LIMIT: usize = 1024;

#[tokio::test]
async fn every_violation_gets_its_close_code_before_a_clean_end() {
    let server = TestServer::start_with(&[
        ("WS_MAX_MESSAGE_BYTES", &LIMIT.to_string()),
        ("COLLECT_INTERVAL_MS", "0"),
    ]);
    let fragmented = |first: &[u8], rest: &[u8]| [frame(0x01, first), frame(0x80, rest)].concat();
    let mut cases: Vec<(String, Vec<u8>, u16)> = Vec::new();
    let mut case =
        |what: &str, bytes: Vec<u8>, code: u16| cases.push((what.to_owned(), bytes, code));
    for rsv in [0x40, 0x20, 0x10] {
        case(
            &format!("reserved bit {rsv:#x}"),
            frame(0x81 | rsv, b"x"),
            1002,
        );
    }
    for opcode in (3..=7).chain(0xb..=0xf) {
        case(
            &format!("opcode {opcode:#x}"),
            frame(0x80 | opcode, b""),
            1002,
        );
    }
    case("unmasked text", vec![0x81, 0x01, b'x'], 1002);
    case("unmasked ping", vec![0x89, 0x00], 1002);
    case("continuation of nothing", frame(0x80, b"x"), 1002);
    case(
        "message inside a message",
        [frame(0x01, b"a"), frame(0x82, b"b")].concat(),
        1002,
    );
    case("fragmented ping", frame(0x09, b""), 1002);
    case("fragmented close", frame(0x08, &[3, 232]), 1002);
    case("ping over 125 bytes", frame(0x89, &[0; 126]), 1002);
    case("close of one byte", frame(0x88, &[3]), 1002);
    for code in [0, 999, 1004, 1005, 1006, 1015, 2999, 5000] {
        case(&format!("close code {code}"), close(code, b""), 1002);
    }
    case("invalid UTF-8", frame(0x81, b"caf\xc3"), 1007);
    case("overlong UTF-8", frame(0x81, b"\xc0\xaf"), 1007);
    case("a surrogate", frame(0x81, b"\xed\xa0\x80"), 1007);
    case("above U+10FFFF", frame(0x81, b"\xf4\x90\x80\x80"), 1007);
    case(
        "a character cut between fragments",
        fragmented(b"\xe2\x82", b"x"),
        1007,
    );
    case("a close reason not UTF-8", close(1000, b"\xff"), 1007);
    case(
        "one frame over the limit",
        frame(0x82, &vec![0; LIMIT + 1]),
        1009,
    );
    case(
        "over the limit and not UTF-8",
        frame(0x81, &vec![0xff; LIMIT + 1]),
        1009,
    );
    case(
        "fragments over the limit",
        fragmented(&vec![b'a'; LIMIT], b"a"),
        1009,
    );

    for (i, (what, bytes, code)) in cases.iter().enumerate() {
        let mut stream = open(server.addr, &format!("case-{i}")).await;
        write_bytewise(server.addr, &mut stream, bytes, false).await;
        assert_eq!(close_code(&mut stream).await, *code, "{what}");
    }

    // Each case ended its session once, under its code.
    let expected = |code: &str| {
        cases
            .iter()
            .filter(|case| case.2.to_string() == code)
            .count()
    };
    let metrics = server
        .wait_for_metrics("every session ended", |metrics| {
            metrics.value("connected_clients") == Some(0.0)
        })
        .await;
    for code in ["1002", "1007", "1009"] {
        let counted = metrics.sample("websocket_closes_total", &[("code", code)]);
        assert_eq!(counted, Some(expected(code) as f64), "closes with {code}");
    }
}

#[tokio::test]
async fn a_ping_just_before_the_close_gets_its_pong_first() {
    let server = TestServer::start_with(&[("COLLECT_INTERVAL_MS", "0")]);
    let mut stream = open(server.addr, "ping-then-close").await;
    let ping: Vec<u8> = (0..125).collect();
    // Both in one write, so that one read brings them.
    let mut bytes = frame(0x89, &ping);
    bytes.extend(close(1000, b"bye"));
    stream.write_all(&bytes).await.unwrap();

    let frames = server_frames(&mut stream).await;
    assert_eq!(
        frames,
        [(0x8a, ping), (0x88, 1000u16.to_be_bytes().to_vec())],
        "a pong with the ping's payload, then the close"
    );
}

#[tokio::test]
async fn a_message_begun_after_a_quiet_spell_has_its_own_two_heartbeats() {
    // Only pings, for longer than the silence limit of two heartbeats (2 s),
    // then a message whose header arrives alone: the message's time runs
    // from its header, not from the client's last data.
    let server =
        TestServer::start_with(&[("WS_HEARTBEAT_SECS", "1"), ("COLLECT_INTERVAL_MS", "0")]);
    let mut stream = open(server.addr, "quiet").await;
    for _ in 0..15 {
        stream.write_all(&frame(0x89, b"")).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let message = frame(0x81, b"hello");
    let (header, payload) = message.split_at(6);
    stream.write_all(header).await.unwrap();
    wait_until_read_by_server(server.addr, &stream).await;
    stream.write_all(payload).await.unwrap();
    stream.write_all(&close(1000, b"")).await.unwrap();

    assert_eq!(close_code(&mut stream).await, 1000);
}

#[tokio::test]
async fn messages_cut_anywhere_are_logged_exactly_as_sent() {
    let server = TestServer::start_with(&[("LOG_FORMAT", "json"), ("COLLECT_INTERVAL_MS", "0")]);
    let mut stream = open(server.addr, "bytewise").await;
    // Two-, three- and four-byte characters, cut between fragments, with a
    // ping between them, each byte its own read.
    let text = "a€𝄞é";
    let (first, rest) = text.as_bytes().split_at(2);
    let mut bytes = frame(0x81, "plain".as_bytes());
    bytes.extend(frame(0x01, first));
    bytes.extend(frame(0x89, b"hi"));
    bytes.extend(frame(0x80, rest));
    bytes.extend(frame(0x82, &[0, 0xff, 7]));
    bytes.extend(close(1000, b""));
    // A large message whose header and first kilobyte are read first, so
    // that the rest is read straight into the message: any byte unmasked
    // wrong there would make it invalid UTF-8.
    let large = "a€𝄞é".repeat(2_000);
    let large_frame = frame(0x81, large.as_bytes());
    let (large_start, large_rest) = large_frame.split_at(1_000);

    let close_at = bytes.len() - 8;
    let (before_close, close_frame) = bytes.split_at(close_at);
    write_bytewise(server.addr, &mut stream, before_close, true).await;
    for part in [large_start, large_rest] {
        stream.write_all(part).await.unwrap();
        wait_until_read_by_server(server.addr, &stream).await;
    }
    write_bytewise(server.addr, &mut stream, close_frame, true).await;

    // The ping is answered with its payload, the close with 1000.
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.expect("a clean end");
    assert_eq!(
        answer,
        [&[0x8a, 2][..], b"hi", &[0x88, 2, 0x03, 0xe8]].concat()
    );
    let events = server
        .wait_for_log_event("the disconnect", |event| {
            event["id"] == "bytewise" && event["message"] == "client disconnected"
        })
        .await;
    let received: Vec<_> = events
        .iter()
        .filter(|event| event["id"] == "bytewise" && event["bytes"].is_u64())
        .map(|event| {
            (
                event["message"].as_str().unwrap(),
                event["bytes"].as_u64().unwrap(),
                event["text"].as_str(),
            )
        })
        .collect();
    assert_eq!(
        received,
        [
            ("text message received", 5, Some("plain")),
            ("text message received", text.len() as u64, Some(text)),
            ("binary message received", 3, None),
            (
                "text message received",
                large.len() as u64,
                Some(&large[..first_80(&large)])
            ),
        ]
    );
    server
        .wait_for_metrics("the close counted", |metrics| {
            metrics.sample("websocket_closes_total", &[("code", "1000")]) == Some(1.0)
        })
        .await;
}

#[tokio::test]
async fn a_client_still_sending_a_refused_message_reads_the_close_frame() {
    // 8 MiB behind a header over the limit: the server refuses it from the
    // header and discards the rest until the client closes.
    let server = TestServer::start_with(&[("COLLECT_INTERVAL_MS", "0")]);
    let stream = open(server.addr, "flood").await;
    let (mut reading, mut writing) = stream.into_split();
    let flood = tokio::spawn(async move {
        let _ = writing.write_all(&frame(0x82, &vec![7; 8 << 20])).await;
        writing
    });
    let mut received = Vec::new();
    tokio::time::timeout(PATIENCE, reading.read_to_end(&mut received))
        .await
        .expect("the server ends the connection")
        .expect("a clean end, not a reset");
    assert_eq!(
        &received[..4],
        &[0x88, 17, 0x03, 0xf1],
        "1009: {received:02x?}"
    );
    assert_eq!(&received[4..], b"message too big");
    drop(flood.await.unwrap());
}

/// Where the first 80 characters of `text` end, as the log shows them.
fn first_80(text: &str) -> usize {
    text.char_indices()
        .nth(80)
        .map_or(text.len(), |(end, _)| end)
}
