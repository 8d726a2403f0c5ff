//! Fuzzes the websocket frame reader (`ws::frames::Reader`): arbitrary
//! client bytes, split at arbitrary points, read as the session reads them.
//!
//! Run from the repository's top level (nightly, and `cargo install
//! cargo-fuzz`); the script writes a handful of valid streams to start from:
//!
//! ```text
//! python3 fuzz/seeds.py fuzz/corpus/frames
//! cargo +nightly fuzz run frames -- -max_total_time=1800 -rss_limit_mb=2048 -max_len=32768
//! ```
//!
//! An input is two bytes of settings, the cut points, then the stream:
//! - byte 0: the message limit (bits 0-1, see [`LIMITS`]), the least
//!   payload left for a read straight into the message (bits 2-3,
//!   [`MIN_LEFT`]), the size of the receive buffer (bits 4-5, [`BUFFERS`]);
//! - byte 1: how many cut points follow, each two bytes (big-endian,
//!   modulo the stream's length + 1): where a piece of the stream ends, as
//!   if it arrived in that many reads of the socket.
//!
//! The stream goes through three readers: in one piece; in the pieces; and
//! as the session reads a socket that has received the pieces, each read
//! taking at most the receive buffer, or for a data frame with enough
//! payload left, going straight into its message (`read_payload`).
//! Asserted: nothing panics; after every step, once it has given back the
//! room it holds beyond its bytes (`give_back_room`, which the session calls
//! before it waits), each reader holds no more than the memory contract
//! allows ([`Shadow::room_allowed`])
//! and says whether a message is in progress and how many have begun as the
//! frames it took do ([`Shadow`]); every message handed over has no more
//! room than the contract allows either; the three give the same messages
//! and control frames, and the same refusal or none.

#![no_main]

use bytes::BufMut;
use libfuzzer_sys::fuzz_target;
use rust_web_prometheus_example::ws::frames::{MIN_ROOM_BYTES, Reader, Received, Refusal};

/// Message limits: the smallest the service accepts, below and above
/// [`MIN_ROOM_BYTES`], and one that needs several growths of a message.
const LIMITS: [usize; 4] = [128, 1000, 5000, 20_000];

/// The payload a data frame must still have for a read straight into its
/// message; the session's is 4096.
const MIN_LEFT: [usize; 4] = [1, 100, 4096, 4096];

/// The receive buffer's size; the session's is 64 KiB.
const BUFFERS: [usize; 4] = [1, 7, 4096, 65_536];

/// The longest payload of a control frame.
const MAX_CONTROL_BYTES: usize = 125;

/// The capacity a control frame's payload may have: `Vec`'s growth, by
/// doubling, may take it to under twice its length.
const MAX_CONTROL_CAPACITY: usize = 2 * MAX_CONTROL_BYTES;

fuzz_target!(|input: &[u8]| {
    let Some(case) = Case::parse(input) else {
        return;
    };
    let whole = case.read_in_pieces(&[case.stream.len()]);
    let in_pieces = case.read_in_pieces(&case.ends);
    assert_eq!(in_pieces, whole, "in pieces ending at {:?}", case.ends);
    let as_the_session = case.read_as_the_session();
    assert_eq!(
        as_the_session, whole,
        "as the session reads, pieces ending at {:?}",
        case.ends
    );
});

/// What a reader made of a stream: everything received, and its refusal.
#[derive(Debug, Default, PartialEq)]
struct Outcome {
    received: Vec<Received>,
    refusal: Option<Refusal>,
}

impl Outcome {
    fn closed(&self) -> bool {
        matches!(self.received.last(), Some(Received::Close(_)))
    }

    /// Takes `received` after checking that a message or ping handed over
    /// holds no more room than it was allowed.
    fn take(&mut self, received: Received, limit: usize) {
        let (len, capacity) = match &received {
            Received::Text(text) => (text.len(), text.capacity()),
            Received::Binary(bytes) => (bytes.len(), bytes.capacity()),
            Received::Ping(payload) => {
                assert!(
                    payload.capacity() <= MAX_CONTROL_CAPACITY,
                    "ping of {payload:?}"
                );
                (0, 0)
            }
            Received::Pong | Received::Close(_) => (0, 0),
        };
        let allowed = message_room_allowed(len, limit);
        assert!(
            capacity <= allowed,
            "a message of {len} bytes with room for {capacity}"
        );
        self.received.push(received);
    }
}

/// One input: the reader's settings, where the pieces end, the stream.
struct Case<'a> {
    limit: usize,
    min_left: usize,
    buffer: usize,
    /// Where the pieces end, in order, the stream's own end last.
    ends: Vec<usize>,
    stream: &'a [u8],
}

impl Case<'_> {
    fn parse(input: &[u8]) -> Option<Case<'_>> {
        let (&[settings, cut_count], rest) = input.split_first_chunk::<2>()?;
        let (cuts, stream) = rest.split_at_checked(2 * usize::from(cut_count))?;
        let mut ends: Vec<usize> = cuts
            .chunks_exact(2)
            .map(|cut| usize::from(u16::from_be_bytes([cut[0], cut[1]])) % (stream.len() + 1))
            .chain([stream.len()])
            .collect();
        ends.sort_unstable();
        let setting = |shift: u8| usize::from(settings >> shift) & 3;
        Some(Case {
            limit: LIMITS[setting(0)],
            min_left: MIN_LEFT[setting(2)],
            buffer: BUFFERS[setting(4)],
            ends,
            stream,
        })
    }

    /// Feeds the stream to a reader in pieces ending at each of `ends`.
    fn read_in_pieces(&self, ends: &[usize]) -> Outcome {
        let mut reader = Reader::new(self.limit);
        let mut shadow = Shadow::default();
        let mut outcome = Outcome::default();
        let mut start = 0;
        for &end in ends {
            let piece = &self.stream[start..end];
            let fed = reader.feed(piece, |received| outcome.take(received, self.limit));
            shadow.consume(piece);
            if let Err(refusal) = fed {
                outcome.refusal = Some(refusal);
                return outcome;
            }
            // As the session does before it waits for the next read.
            reader.give_back_room();
            shadow.check(&reader, self.limit);
            start = end;
        }
        outcome
    }

    /// Reads the stream as `session::receive` reads a socket: the pieces
    /// arrive one after the other, and each read takes what has arrived, up
    /// to the receive buffer's size or the room the reader offers.
    fn read_as_the_session(&self) -> Outcome {
        let mut reader = Reader::new(self.limit);
        let mut shadow = Shadow::default();
        let mut outcome = Outcome::default();
        let mut start = 0;
        for &arrived in &self.ends {
            while start < arrived && !outcome.closed() {
                let waiting = &self.stream[start..arrived];
                let direct = reader.read_payload(
                    self.min_left,
                    |room| {
                        assert!(
                            room.remaining_mut() > 0,
                            "room for no byte ends the session"
                        );
                        let count = room.remaining_mut().min(waiting.len());
                        room.put_slice(&waiting[..count]);
                        Ok(count)
                    },
                    |received| outcome.take(received, self.limit),
                );
                let read = match direct {
                    Ok(Some(read)) => Ok(read.expect("the read above never fails")),
                    Ok(None) => {
                        let count = self.buffer.min(waiting.len());
                        let fed = reader.feed(&waiting[..count], |received| {
                            outcome.take(received, self.limit)
                        });
                        fed.map(|()| count)
                    }
                    Err(refusal) => Err(refusal),
                };
                match read {
                    Ok(count) => {
                        shadow.consume(&waiting[..count]);
                        // Each read may be the last before the session waits.
                        reader.give_back_room();
                        shadow.check(&reader, self.limit);
                        start += count;
                    }
                    Err(refusal) => {
                        outcome.refusal = Some(refusal);
                        return outcome;
                    }
                }
            }
        }
        outcome
    }
}

/// The room a message of `len` bytes may have: twice its length, or
/// [`MIN_ROOM_BYTES`], and never more than the limit.
fn message_room_allowed(len: usize, limit: usize) -> usize {
    (2 * len).max(MIN_ROOM_BYTES).min(limit)
}

/// Follows the frames of the bytes a reader has taken, as far as the
/// checks need: how much payload the message in progress has received,
/// whether a control frame's payload is arriving, whether a message or
/// frame is in progress and how many have begun (what the session times
/// messages by). It validates nothing: the reader refuses what is invalid,
/// and is then done with.
#[derive(Default)]
struct Shadow {
    header: Vec<u8>,
    /// The frame whose payload is arriving: its first byte and the payload
    /// still to come.
    frame: Option<(u8, u64)>,
    /// Whether a data frame has begun a message that has not ended.
    in_message: bool,
    message_payload: usize,
    /// Messages begun, a control frame outside a message counting as one.
    messages_begun: u64,
    /// Whether a close frame has ended: the reader takes nothing after it.
    closed: bool,
}

impl Shadow {
    fn consume(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            if self.closed {
                return;
            }
            match &mut self.frame {
                None => self.header_byte(byte),
                Some((first, left)) => {
                    *left -= 1;
                    if *first & 0x08 == 0 {
                        self.message_payload += 1;
                    }
                }
            }
            self.end_frame_if_complete();
        }
    }

    fn header_byte(&mut self, byte: u8) {
        if self.header.is_empty() && !self.in_message {
            self.messages_begun += 1;
        }
        self.header.push(byte);
        let Some(&second) = self.header.get(1) else {
            return;
        };
        let extended = match second & 0x7F {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let mask = if second & 0x80 != 0 { 4 } else { 0 };
        if self.header.len() < 2 + extended + mask {
            return;
        }
        let length = match extended {
            0 => u64::from(second & 0x7F),
            _ => self.header[2..2 + extended]
                .iter()
                .fold(0, |length, &byte| length << 8 | u64::from(byte)),
        };
        self.frame = Some((self.header[0], length));
        self.in_message |= self.header[0] & 0x08 == 0;
        self.header.clear();
    }

    fn end_frame_if_complete(&mut self) {
        if let Some((first, 0)) = self.frame {
            self.frame = None;
            let (fin, opcode) = (first & 0x80 != 0, first & 0x0F);
            match opcode {
                0x8 => self.closed = true,
                0x0..=0x2 if fin => {
                    self.in_message = false;
                    self.message_payload = 0;
                }
                _ => {}
            }
        }
    }

    /// The memory contract: a message's room is at most twice the payload
    /// it has received, or [`MIN_ROOM_BYTES`], and never over the limit; a
    /// control frame's payload takes room only while it arrives.
    fn room_allowed(&self, limit: usize) -> usize {
        let in_control = matches!(self.frame, Some((first, _)) if first & 0x08 != 0);
        message_room_allowed(self.message_payload, limit)
            + if in_control { MAX_CONTROL_CAPACITY } else { 0 }
    }

    fn check(&self, reader: &Reader, limit: usize) {
        let (held, allowed) = (reader.held_bytes(), self.room_allowed(limit));
        assert!(held <= allowed, "{held} bytes held, {allowed} allowed");
        let in_progress = self.in_message || self.frame.is_some() || !self.header.is_empty();
        assert_eq!(
            reader.in_message(),
            in_progress,
            "a message or frame in progress"
        );
        assert_eq!(
            reader.messages_begun(),
            self.messages_begun,
            "messages begun"
        );
    }
}
