//! A second parser against this one: random client streams, valid and
//! invalid, through [`Reader`] and through tungstenite's `WebSocket` in the
//! server role, over the same bytes and with the same message limit (as
//! its largest message and frame); the two must hand over the same
//! messages and control frames, and refuse with the same kind of close
//! code (tungstenite's errors mapped: protocol errors to 1002, UTF-8 errors
//! to 1007, capacity errors to 1009). Tungstenite's
//! `accept_unmasked_frames` stays off, its default: RFC 6455 has a server
//! refuse an unmasked frame, and both do.
//!
//! The streams ([`Streams`]) are whole frames: text and binary messages,
//! fragmented, with pings and pongs between fragments, close frames with
//! valid and invalid codes and reasons, invalid UTF-8, reserved bits and
//! opcodes, unmasked frames, fragmented and long control frames,
//! continuations of nothing, messages inside messages, lengths over the
//! limit, and some streams then corrupted at random bytes.
//!
//! Every stream is followed by zeros ([`padding`]): enough to complete any
//! frame the limit allows, then unmasked empty frames that both refuse.
//! Tungstenite decides on a frame only once it has all of it, where this
//! reader decides from the header; with the padding, tungstenite always
//! gets as far as a decision, wherever a corrupted stream left off.
//!
//! Where the two may differ, and why ([`Exception`]); nothing else is let
//! through:
//! - **UTF-8 as it arrives.** Tungstenite checks a text message's UTF-8 at
//!   each fragment and refuses (1007) at the first invalid one; this
//!   reader checks a message when it is whole. RFC 6455 (8.1) allows both:
//!   the Autobahn TestSuite calls the second "non-strict". So here the
//!   stream ends otherwise (a close frame, another refusal, or the same
//!   1007 when the message ends), after the control frames in between.
//!   Let through when the reader then holds a text message that is not
//!   valid UTF-8 so far, or has refused one, and has handed over no other
//!   message since.
//! - **The length first.** Tungstenite compares a frame's length with the
//!   limit as soon as its header is in (1009), and checks the rest with
//!   the payload; this reader checks the first two bytes as they arrive
//!   (reserved bits, mask) and the frame's place in the message before its
//!   length (1002). Let through when the header this reader refused, for
//!   another reason than its opcode (which tungstenite checks in the header
//!   too), claims more than the limit.
//! - **The close code first.** Given a close frame with both an invalid
//!   code and a reason that is not UTF-8, tungstenite checks the reason
//!   (1007), this reader the code (1002).
//! - **Code 1014.** This reader accepts close code 1014 (Bad Gateway,
//!   registered with IANA since RFC 6455); tungstenite does not know it,
//!   and answers it as a protocol error.
//!
//! Tungstenite replaces a close frame's invalid code with 1002 and the
//! reason "Protocol violation", for its reply; that close counts as its
//! refusal, 1002 (no stream here sends that reason).

use std::io::{self, Cursor, Read, Write};

use rand::SeedableRng;
use rand::rngs::Xoshiro256PlusPlus;
use tungstenite::error::{Error, ProtocolError};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{Message, Role, WebSocket, WebSocketConfig};

use super::*;
use streams::Streams;

mod streams;

/// Streams compared: about a second in a debug build.
const CASES: usize = 10_000;

const SEED: u64 = 6455;

/// Message limits: the smallest the service accepts, and two that let
/// messages span several frames and reads.
const LIMITS: [usize; 3] = [128, 1000, 3000];

/// What tungstenite puts in place of a close frame's invalid code.
const TUNGSTENITE_REPLACED_REASON: &str = "Protocol violation";

#[test]
fn tungstenite_reads_random_streams_as_this_reader_does() {
    let mut streams = Streams(Xoshiro256PlusPlus::seed_from_u64(SEED));
    let mut tally = Tally::default();
    for case in 0..CASES {
        let limit = LIMITS[case % LIMITS.len()];
        let mut stream = streams.stream(limit);
        stream.extend(padding(limit));
        let (ours, reader) = read_ours(&stream, limit);
        let theirs = read_theirs(&stream, limit);
        match compare(&ours, &reader, &theirs, limit) {
            Ok(outcome) => tally.count(outcome),
            Err(what) => panic!(
                "case {case}, limit {limit}: {what}\n\
                 ours:   {ours:?}\ntheirs: {theirs:?}\nstream: {stream:02x?}"
            ),
        }
    }
    eprintln!("{tally:?}");
    tally.assert_every_kind_seen();
}

/// What a parser made of a stream: everything received, in order, and the
/// close code of its refusal, if it refused.
#[derive(Debug, PartialEq)]
struct Outcome {
    received: Vec<Received>,
    refusal: Option<Refusal>,
}

/// Tungstenite's outcome: its refusals have a kind, not a reason.
#[derive(Debug)]
struct TheirOutcome {
    received: Vec<Received>,
    code: Option<u16>,
}

/// Where the parsers differ as the module documentation says they may.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Exception {
    Utf8AsItArrives,
    LengthFirst,
    CloseCodeFirst,
    Code1014,
}

/// How a case came out: alike, ending with this reader's code (none for a
/// close frame), or an exception.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Compared {
    Alike(Option<u16>),
    Except(Exception),
}

fn read_ours(stream: &[u8], limit: usize) -> (Outcome, Reader) {
    let mut reader = Reader::new(limit);
    let mut received = Vec::new();
    let refusal = reader.feed(stream, |item| received.push(item)).err();
    (Outcome { received, refusal }, reader)
}

fn read_theirs(stream: &[u8], limit: usize) -> TheirOutcome {
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .max_message_size(Some(limit))
        .max_frame_size(Some(limit));
    let socket = Socket {
        incoming: Cursor::new(stream),
    };
    let mut websocket = WebSocket::from_raw_socket(socket, Role::Server, Some(config));
    let mut received = Vec::new();
    loop {
        let message = match websocket.read() {
            Ok(message) => message,
            Err(error) => {
                let code = Some(tungstenite_close_code(error));
                return TheirOutcome { received, code };
            }
        };
        let item = match message {
            Message::Text(text) => Received::Text(text.as_str().to_owned()),
            Message::Binary(bytes) => Received::Binary(bytes.to_vec()),
            Message::Ping(payload) => Received::Ping(payload.to_vec()),
            Message::Pong(_) => Received::Pong,
            Message::Close(Some(close))
                if close.code == CloseCode::Protocol
                    && close.reason.as_str() == TUNGSTENITE_REPLACED_REASON =>
            {
                let code = Some(Refusal::PROTOCOL_ERROR);
                return TheirOutcome { received, code };
            }
            Message::Close(close) => Received::Close(close.map(|close| close.code.into())),
            Message::Frame(_) => unreachable!("`read` hands over messages, never raw frames"),
        };
        let closed = matches!(item, Received::Close(_));
        received.push(item);
        if closed {
            return TheirOutcome {
                received,
                code: None,
            };
        }
    }
}

fn tungstenite_close_code(error: Error) -> u16 {
    match error {
        Error::Protocol(ProtocolError::ResetWithoutClosingHandshake) => {
            panic!("tungstenite read the whole stream, padding included, undecided")
        }
        Error::Protocol(_) => Refusal::PROTOCOL_ERROR,
        Error::Utf8(_) => Refusal::INVALID_DATA,
        Error::Capacity(_) => Refusal::TOO_BIG,
        other => panic!("tungstenite failed with {other}"),
    }
}

/// The client's side of the connection: the stream to read, and a sink
/// for tungstenite's pongs and close frame.
struct Socket<'a> {
    incoming: Cursor<&'a [u8]>,
}

impl Read for Socket<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.incoming.read(buf)
    }
}

impl Write for Socket<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Zeros after a stream: the longest header and payload the limit allows,
/// to complete the frame the stream left off in, then an empty unmasked
/// frame (`00 00`) both must refuse.
fn padding(limit: usize) -> Vec<u8> {
    vec![0; MAX_HEADER_BYTES + limit + 2]
}

/// Whether the outcomes agree, or differ as an [`Exception`] allows.
fn compare(
    ours: &Outcome,
    reader: &Reader,
    theirs: &TheirOutcome,
    limit: usize,
) -> Result<Compared, String> {
    let our_code = ours.refusal.map(|refusal| refusal.code);
    if ours.received == theirs.received && our_code == theirs.code {
        return Ok(Compared::Alike(our_code));
    }
    let same_received = ours.received == theirs.received;
    let reason = ours.refusal.map(|refusal| refusal.reason);
    let exception = match (our_code, theirs.code) {
        (_, Some(Refusal::INVALID_DATA)) if utf8_checked_as_it_arrives(ours, reader, theirs) => {
            Exception::Utf8AsItArrives
        }
        (Some(Refusal::PROTOCOL_ERROR), Some(Refusal::TOO_BIG))
            if same_received
                && reason != Some("reserved opcode")
                && claimed_length(&reader.header) > limit as u64 =>
        {
            Exception::LengthFirst
        }
        (Some(Refusal::PROTOCOL_ERROR), Some(Refusal::INVALID_DATA))
            if same_received && reason == Some("invalid close code") =>
        {
            Exception::CloseCodeFirst
        }
        (None, Some(Refusal::PROTOCOL_ERROR))
            if ours.received.split_last()
                == Some((&Received::Close(Some(1014)), &theirs.received)) =>
        {
            Exception::Code1014
        }
        _ => return Err("the parsers disagree".to_owned()),
    };
    Ok(Compared::Except(exception))
}

/// Whether tungstenite's 1007 is a text message's invalid UTF-8 that this
/// reader refuses only when the message is whole, or not at all because
/// the stream ends first: it handed over the same, then control frames
/// only, and holds or has refused invalid text.
fn utf8_checked_as_it_arrives(ours: &Outcome, reader: &Reader, theirs: &TheirOutcome) -> bool {
    let Some(since) = ours.received.strip_prefix(theirs.received.as_slice()) else {
        return false;
    };
    let only_control = since.iter().all(|item| {
        matches!(
            item,
            Received::Ping(_) | Received::Pong | Received::Close(_)
        )
    });
    let refused_text = ours
        .refusal
        .is_some_and(|refusal| refusal.reason == "text is not UTF-8");
    let holds_invalid_text = reader.message.as_ref().is_some_and(|message| {
        message.text
            && std::str::from_utf8(&message.bytes).is_err_and(|error| error.error_len().is_some())
    });
    only_control && (refused_text || holds_invalid_text)
}

/// The payload length a frame header claims.
fn claimed_length(header: &[u8; MAX_HEADER_BYTES]) -> u64 {
    match header[1] & 0x7F {
        126 => u64::from(u16::from_be_bytes([header[2], header[3]])),
        127 => u64::from_be_bytes(header[2..10].try_into().expect("8 bytes")),
        length => u64::from(length),
    }
}

/// How the cases came out, to show that every kind of ending was reached.
#[derive(Debug, Default)]
struct Tally {
    closed: usize,
    protocol_error: usize,
    invalid_data: usize,
    too_big: usize,
    exceptions: Vec<(Exception, usize)>,
}

impl Tally {
    fn count(&mut self, compared: Compared) {
        match compared {
            Compared::Alike(None) => self.closed += 1,
            Compared::Alike(Some(Refusal::PROTOCOL_ERROR)) => self.protocol_error += 1,
            Compared::Alike(Some(Refusal::INVALID_DATA)) => self.invalid_data += 1,
            Compared::Alike(Some(Refusal::TOO_BIG)) => self.too_big += 1,
            Compared::Alike(Some(code)) => panic!("a refusal with {code}"),
            Compared::Except(exception) => {
                match self
                    .exceptions
                    .iter_mut()
                    .find(|(seen, _)| *seen == exception)
                {
                    Some((_, count)) => *count += 1,
                    None => self.exceptions.push((exception, 1)),
                }
            }
        }
    }

    /// A generator that stopped reaching an ending would leave the
    /// comparison with nothing to compare there.
    fn assert_every_kind_seen(&self) {
        let least = CASES / 50;
        for (kind, count) in [
            ("a close frame", self.closed),
            ("1002", self.protocol_error),
            ("1007", self.invalid_data),
            ("1009", self.too_big),
        ] {
            assert!(
                count >= least,
                "{count} streams alike ending with {kind}: {self:?}"
            );
        }
    }
}
