//! The reader's cases, cut at every position: every byte boundary a
//! message, a violation or a control frame can arrive split at.

use super::*;

const LIMIT: usize = 65536;
const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// A client frame: `first` is the first byte (FIN, RSV, opcode), the
/// payload is masked with `MASK` and its length minimally encoded.
fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
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

fn text(payload: &[u8]) -> Vec<u8> {
    frame(0x80 | TEXT, payload)
}

fn close(code: u16, reason: &[u8]) -> Vec<u8> {
    let payload: Vec<u8> = code.to_be_bytes().iter().chain(reason).copied().collect();
    frame(0x80 | CLOSE, &payload)
}

/// Feeds `bytes` in pieces that end at each of `cuts`, and returns what
/// came out: everything received, and the refusal if any.
fn feed_cut(bytes: &[u8], cuts: &[usize]) -> (Vec<Received>, Option<Refusal>) {
    let mut reader = Reader::new(LIMIT);
    let mut received = Vec::new();
    let mut start = 0;
    for &end in cuts.iter().chain([&bytes.len()]) {
        if let Err(refusal) = reader.feed(&bytes[start..end], |item| received.push(item)) {
            return (received, Some(refusal));
        }
        start = end;
    }
    (received, None)
}

/// Checks that `bytes` come out as `expected`, whole, cut in two at
/// every position, and a byte at a time.
fn assert_reads(bytes: &[u8], expected: &(Vec<Received>, Option<Refusal>)) {
    assert_eq!(&feed_cut(bytes, &[]), expected, "whole");
    for cut in 0..=bytes.len() {
        assert_eq!(&feed_cut(bytes, &[cut]), expected, "cut at {cut}");
    }
    let every: Vec<usize> = (0..bytes.len()).collect();
    assert_eq!(&feed_cut(bytes, &every), expected, "a byte at a time");
}

fn refused(code: u16) -> impl Fn(&[u8]) {
    move |bytes| {
        let (_, refusal) = feed_cut(bytes, &[]);
        assert_eq!(
            refusal.map(|refusal| refusal.code),
            Some(code),
            "{bytes:02x?}"
        );
        let every: Vec<usize> = (0..bytes.len()).collect();
        let (_, refusal) = feed_cut(bytes, &every);
        assert_eq!(
            refusal.map(|refusal| refusal.code),
            Some(code),
            "a byte at a time"
        );
    }
}

#[test]
fn valid_messages_arrive_whole_however_the_bytes_are_cut() {
    // Two-, three- and four-byte characters, cut between fragments.
    let euro = "a€𝄞é".as_bytes();
    let mut bytes = text(b"hello");
    bytes.extend(frame(BINARY, &[0, 1, 2]));
    bytes.extend(frame(0x80 | PING, b"ping"));
    bytes.extend(frame(CONTINUATION, &[3]));
    bytes.extend(frame(0x80 | PONG, b""));
    bytes.extend(frame(0x80 | CONTINUATION, &[]));
    bytes.extend(frame(TEXT, &euro[..3]));
    bytes.extend(frame(CONTINUATION, &euro[3..6]));
    bytes.extend(frame(0x80 | CONTINUATION, &euro[6..]));
    bytes.extend(text(b""));
    bytes.extend(close(1000, "bye".as_bytes()));
    // Nothing after a close frame is read.
    bytes.extend(text(b"ignored"));

    let expected = vec![
        Received::Text("hello".into()),
        Received::Ping(b"ping".to_vec()),
        Received::Pong,
        Received::Binary(vec![0, 1, 2, 3]),
        Received::Text("a€𝄞é".into()),
        Received::Text(String::new()),
        Received::Close(Some(1000)),
    ];
    assert_reads(&bytes, &(expected, None));
}

#[test]
fn every_byte_of_messages_up_to_the_limit_is_kept() {
    for len in [125, 126, 127, 1023, 1024, 4097, 65535, LIMIT] {
        let payload: Vec<u8> = (0..len).map(|i| (i * 7 + i / 251) as u8).collect();
        let bytes = frame(0x80 | BINARY, &payload);
        let expected = (vec![Received::Binary(payload.clone())], None);
        // Cut at the header's end, a mask period, and around the
        // receive buffer's size (header included).
        for cut in [
            1,
            2,
            3,
            4,
            8,
            9,
            13,
            14,
            15,
            len / 2,
            len - 1,
            65536 - 14,
            65536,
        ] {
            if cut <= bytes.len() {
                assert_eq!(
                    feed_cut(&bytes, &[cut]),
                    expected,
                    "len {len}, cut at {cut}"
                );
            }
        }
        let halves = payload.split_at(len / 3);
        let mut fragmented = frame(BINARY, halves.0);
        fragmented.extend(frame(0x80 | PING, b""));
        fragmented.extend(frame(0x80 | CONTINUATION, halves.1));
        let (received, refusal) = feed_cut(&fragmented, &[fragmented.len() / 2]);
        assert_eq!(refusal, None);
        assert_eq!(received.last(), Some(&Received::Binary(payload)));
    }
}

#[test]
fn a_payload_read_straight_into_its_message_arrives_whole() {
    let payload: Vec<u8> = (0..LIMIT).map(|i| (i % 251) as u8).collect();
    let bytes = frame(0x80 | BINARY, &payload);
    let mut reader = Reader::new(LIMIT);
    let mut received = Vec::new();
    reader
        .feed(&bytes[..1000], |item| received.push(item))
        .unwrap();
    // The rest in reads of odd sizes, as a socket gives them.
    let mut rest = &bytes[1000..];
    while let Some((message, room)) = reader.payload_room(1).unwrap() {
        let count = room.min(rest.len()).min(7919);
        message.extend_from_slice(&rest[..count]);
        rest = &rest[count..];
        reader.appended(count, |item| received.push(item)).unwrap();
    }
    assert_eq!(received, [Received::Binary(payload)]);
}

#[test]
fn a_message_holds_memory_by_what_has_arrived_not_by_what_its_header_claims() {
    let payload = vec![7; LIMIT - 1];
    // Two frames: all but one byte, then a continuation of one.
    let mut bytes = frame(BINARY, &payload);
    bytes.extend(frame(0x80 | CONTINUATION, b"x"));
    let mut reader = Reader::new(LIMIT);
    let mut received = Vec::new();
    let header = 4 + 4;
    reader
        .feed(&bytes[..header], |item| received.push(item))
        .unwrap();
    assert_eq!(reader.held_bytes(), 0, "a header alone claims nothing");
    let mut fed = header;
    for step in [1, 100, 5000, 20_000, 40_000, 500, 100] {
        let end = (fed + step).min(bytes.len());
        reader
            .feed(&bytes[fed..end], |item| received.push(item))
            .unwrap();
        let arrived = end - header;
        let held = reader.held_bytes();
        assert!(
            held <= (2 * arrived).clamp(MIN_ROOM_BYTES, LIMIT),
            "{held} bytes held after {arrived} arrived"
        );
        fed = end;
    }
    assert_eq!(
        received,
        [Received::Binary([payload, b"x".to_vec()].concat())]
    );
}

#[test]
fn room_for_a_direct_read_grows_with_what_has_arrived() {
    let bytes = frame(0x80 | BINARY, &vec![1; LIMIT]);
    let mut reader = Reader::new(LIMIT);
    reader.feed(&bytes[..14], |_| {}).unwrap();
    let (message, room) = reader.payload_room(1).unwrap().unwrap();
    assert_eq!((message.len(), room), (0, MIN_ROOM_BYTES));
    message.extend_from_slice(&bytes[14..14 + room]);
    reader.appended(MIN_ROOM_BYTES, |_| {}).unwrap();
    let (message, room) = reader.payload_room(1).unwrap().unwrap();
    assert_eq!((message.len(), room), (MIN_ROOM_BYTES, MIN_ROOM_BYTES));
}

/// Found by the fuzz target (`fuzz/`, its seed of a 12,000-byte message
/// in two fragments, arriving as 100 bytes then the rest): a read of a
/// frame's header and 92 bytes of its payload, then room for a read
/// straight into the message. The room was topped up to 4096 free bytes,
/// 4188 in all, past the most a message of 92 bytes may hold (4096).
#[test]
fn room_for_a_direct_read_stays_within_what_has_arrived() {
    let payload: Vec<u8> = (0..7000).map(|i| (i * 7 % 251) as u8).collect();
    let bytes = frame(BINARY, &payload);
    let mut reader = Reader::new(20_000);
    reader.feed(&bytes[..100], |_| {}).unwrap();
    let (message, room) = reader.payload_room(MIN_ROOM_BYTES).unwrap().unwrap();
    assert_eq!(message.len(), 100 - 8);
    assert_eq!(
        message.capacity(),
        MIN_ROOM_BYTES,
        "the most 92 bytes may hold"
    );
    assert_eq!(room, MIN_ROOM_BYTES - 92);
    // Once that room is full, it grows by what the message holds.
    message.extend_from_slice(&bytes[100..100 + room]);
    reader.appended(room, |_| {}).unwrap();
    let (message, room) = reader.payload_room(1).unwrap().unwrap();
    assert_eq!(
        (message.len(), room),
        (MIN_ROOM_BYTES, 7000 - MIN_ROOM_BYTES)
    );
    assert_eq!(message.capacity(), 2 * MIN_ROOM_BYTES);
}

#[test]
fn protocol_violations_are_refused_with_1002() {
    let protocol_error = refused(Refusal::PROTOCOL_ERROR);
    for rsv in [0x40, 0x20, 0x10] {
        protocol_error(&frame(0x80 | rsv | TEXT, b"x"));
    }
    for opcode in (3..=7).chain(0xB..=0xF) {
        protocol_error(&frame(0x80 | opcode, b""));
    }
    // Unmasked.
    protocol_error(&[0x81, 0x01, b'x']);
    protocol_error(&[0x89, 0x00]);
    protocol_error(&frame(0x80 | CONTINUATION, b"x"));
    let mut nested = frame(TEXT, b"a");
    nested.extend(frame(0x80 | BINARY, b"b"));
    protocol_error(&nested);
    protocol_error(&frame(PING, b""));
    protocol_error(&frame(CLOSE, b""));
    protocol_error(&frame(0x80 | PING, &[0; 126]));
    protocol_error(&frame(0x80 | CLOSE, &[3]));
    for code in [
        0,
        999,
        1004,
        1005,
        1006,
        1015,
        1016,
        1100,
        2000,
        2999,
        5000,
        u16::MAX,
    ] {
        protocol_error(&close(code, b""));
    }
    let mut huge = vec![0x82, 0x80 | 127];
    huge.extend((1u64 << 63).to_be_bytes());
    huge.extend(MASK);
    protocol_error(&huge);
}

#[test]
fn invalid_utf8_is_refused_with_1007() {
    let invalid_data = refused(Refusal::INVALID_DATA);
    for bad in [
        &b"\xff"[..],
        b"overlong \xc0\xaf",
        b"surrogate \xed\xa0\x80",
        b"above U+10FFFF \xf4\x90\x80\x80",
        b"cut short \xe2\x82",
    ] {
        invalid_data(&text(bad));
        let mut fragmented = frame(TEXT, &bad[..bad.len() / 2]);
        fragmented.extend(frame(0x80 | CONTINUATION, &bad[bad.len() / 2..]));
        invalid_data(&fragmented);
    }
    // Around the receive buffer's size.
    for at in [65536 - 15, 65536 - 14, 65536 - 13, LIMIT - 1] {
        let mut long = vec![b'a'; LIMIT];
        long[at] = 0xff;
        assert_eq!(
            feed_cut(&text(&long), &[65536]).1.map(|r| r.code),
            Some(1007),
            "at {at}"
        );
    }
    invalid_data(&close(1000, b"\xff"));
}

#[test]
fn a_message_over_the_limit_is_refused_with_1009_from_its_header() {
    let too_big = refused(Refusal::TOO_BIG);
    let mut over = text(&vec![0xff; LIMIT + 1]);
    // Decided before the payload: not one byte of it is needed.
    over.truncate(14);
    too_big(&over);
    let mut fragments = frame(BINARY, &vec![0; LIMIT - 10]);
    fragments.extend(frame(CONTINUATION, &[0; 10]));
    fragments.extend(frame(0x80 | CONTINUATION, &[0]));
    too_big(&fragments);
}

#[test]
fn valid_close_codes_are_accepted() {
    for code in [
        1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1014, 3000, 4999,
    ] {
        let expected = (vec![Received::Close(Some(code))], None);
        assert_eq!(feed_cut(&close(code, "fine".as_bytes()), &[]), expected);
    }
    assert_eq!(
        feed_cut(&frame(0x80 | CLOSE, b""), &[]),
        (vec![Received::Close(None)], None)
    );
}

#[test]
fn unmasking_from_any_offset_matches_byte_by_byte() {
    let mask = [1, 2, 3, 4];
    for offset in 0..8 {
        for len in 0..40 {
            let mut fast: Vec<u8> = (0..len as u8).collect();
            let slow: Vec<u8> = fast
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ mask[(offset + i) % 4])
                .collect();
            unmask(&mut fast, mask, offset);
            assert_eq!(fast, slow, "offset {offset}, len {len}");
        }
    }
}
