//! The differential test's random client streams: whole frames, most of
//! them valid, some breaking a rule of RFC 6455, some then corrupted.

use rand::RngExt;
use rand::rngs::Xoshiro256PlusPlus;

use crate::ws::frames::{BINARY, CLOSE, CONTINUATION, MAX_CONTROL_BYTES, PING, PONG, TEXT};

/// Random client streams of whole frames, most valid, some not.
pub(super) struct Streams(pub(super) Xoshiro256PlusPlus);

/// Characters of one to four bytes, for text.
const CHARACTERS: [&str; 8] = ["a", "b", " ", "\u{7f}", "é", "€", "𝄞", "\u{10FFFF}"];

/// Byte sequences that are never valid UTF-8, or not at the end of a text.
const NOT_UTF8: [&[u8]; 6] = [
    b"\xff",
    b"\xc0\xaf",
    b"\xed\xa0\x80",
    b"\xf4\x90\x80\x80",
    b"\xe2\x82",
    b"\x80",
];

const VALID_CLOSE_CODES: [u16; 9] = [1000, 1001, 1003, 1008, 1011, 1013, 1014, 3000, 4999];

const INVALID_CLOSE_CODES: [u16; 10] = [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535];

impl Streams {
    pub(super) fn stream(&mut self, limit: usize) -> Vec<u8> {
        let mut stream = Vec::new();
        for _ in 0..self.0.random_range(1..=6) {
            match self.0.random_range(0..100) {
                0..50 => self.message(limit, &mut stream),
                50..62 => self.control(&mut stream),
                62..72 => {
                    self.close(&mut stream);
                    // Whatever follows a close frame is never read.
                    if self.0.random_bool(0.5) {
                        self.message(limit, &mut stream);
                    }
                }
                _ => self.violation(limit, &mut stream),
            }
        }
        if self.0.random_bool(0.25) {
            self.corrupt(&mut stream);
        }
        stream
    }

    /// A text or binary message, valid or over the limit or not UTF-8, in
    /// fragments with control frames between them.
    fn message(&mut self, limit: usize, stream: &mut Vec<u8>) {
        let text = self.0.random_bool(0.5);
        let length = match self.0.random_range(0..10) {
            0..6 => self.0.random_range(0..=60),
            6..9 => self.0.random_range(0..=limit),
            _ => self.0.random_range(limit + 1..=limit + 40),
        };
        let mut payload = match text {
            true => self.text(length).into_bytes(),
            false => self.bytes(length),
        };
        if text && self.0.random_bool(0.15) {
            let at = self.0.random_range(0..=payload.len());
            let bad = NOT_UTF8[self.0.random_range(0..NOT_UTF8.len())];
            payload.splice(at..at, bad.iter().copied());
        }
        let fragments = self.0.random_range(1..=4);
        let mut cuts: Vec<usize> = (1..fragments)
            .map(|_| self.0.random_range(0..=payload.len()))
            .collect();
        cuts.sort_unstable();
        let mut start = 0;
        for (i, end) in cuts.into_iter().chain([payload.len()]).enumerate() {
            let opcode = match (i, text) {
                (0, true) => TEXT,
                (0, false) => BINARY,
                _ => CONTINUATION,
            };
            let fin = if end == payload.len() { 0x80 } else { 0 };
            self.frame(fin | opcode, &payload[start..end], stream);
            start = end;
            if fin == 0 && self.0.random_bool(0.3) {
                self.control(stream);
            }
        }
    }

    /// A ping or a pong.
    fn control(&mut self, stream: &mut Vec<u8>) {
        let opcode = if self.0.random_bool(0.5) { PING } else { PONG };
        let length = self.0.random_range(0..=MAX_CONTROL_BYTES);
        let payload = self.bytes(length);
        self.frame(0x80 | opcode, &payload, stream);
    }

    /// A close frame: empty, of one byte, or a valid or invalid code with a
    /// reason, UTF-8 or not.
    fn close(&mut self, stream: &mut Vec<u8>) {
        let payload = match self.0.random_range(0..10) {
            0 => Vec::new(),
            1 => vec![self.0.random()],
            kind => {
                let code = match kind {
                    2..=6 => VALID_CLOSE_CODES[self.0.random_range(0..VALID_CLOSE_CODES.len())],
                    _ => INVALID_CLOSE_CODES[self.0.random_range(0..INVALID_CLOSE_CODES.len())],
                };
                let length = self.0.random_range(0..=30);
                let mut reason = self.text(length).into_bytes();
                reason.truncate(MAX_CONTROL_BYTES - 2);
                if self.0.random_bool(0.2) {
                    reason.extend_from_slice(NOT_UTF8[self.0.random_range(0..NOT_UTF8.len())]);
                }
                [&code.to_be_bytes()[..], &reason[..]].concat()
            }
        };
        self.frame(0x80 | CLOSE, &payload, stream);
    }

    /// A frame RFC 6455 forbids a client to send here.
    fn violation(&mut self, limit: usize, stream: &mut Vec<u8>) {
        let length = self.0.random_range(0..=20);
        let payload = self.bytes(length);
        match self.0.random_range(0..9) {
            0 => {
                let reserved_bit = [0x40, 0x20, 0x10][self.0.random_range(0..3)];
                self.frame(0x80 | reserved_bit | TEXT, b"x", stream);
            }
            1 => {
                let opcode = [3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF][self.0.random_range(0..10)];
                self.frame(0x80 | opcode, &payload, stream);
            }
            2 => {
                let first = [0x80 | TEXT, BINARY, 0x80 | PING][self.0.random_range(0..3)];
                unmasked_frame(first, &payload, stream);
            }
            3 => {
                let opcode = [PING, PONG, CLOSE][self.0.random_range(0..3)];
                self.frame(opcode, &[], stream);
            }
            4 => {
                let length = self.0.random_range(MAX_CONTROL_BYTES + 1..=limit + 10);
                let long = self.bytes(length);
                self.frame(0x80 | PING, &long, stream);
            }
            5 => {
                let fin = self.0.random_range(0..2) << 7;
                self.frame(fin | CONTINUATION, &payload, stream);
            }
            6 => {
                self.frame(TEXT, &payload, stream);
                self.frame(0x80 | BINARY, &payload, stream);
            }
            7 => {
                // A length over the limit, or with its top bit set, and no
                // payload after it.
                let length = match self.0.random_bool(0.5) {
                    true => self.0.random_range(limit as u64 + 1..=u64::MAX >> 1),
                    false => self.0.random_range(1 << 63..=u64::MAX),
                };
                stream.extend([0x80 | BINARY, 0x80 | 127]);
                stream.extend(length.to_be_bytes());
                stream.extend(self.mask());
            }
            _ => {
                let opcode = [TEXT, BINARY, CONTINUATION][self.0.random_range(0..3)];
                let fin = self.0.random_range(0..2) << 7;
                let over = self.bytes(limit + 1);
                self.frame(fin | opcode, &over, stream);
            }
        }
    }

    /// Changes, removes, inserts a byte, or cuts the stream short, one to
    /// three times.
    fn corrupt(&mut self, stream: &mut Vec<u8>) {
        for _ in 0..self.0.random_range(1..=3) {
            if stream.is_empty() {
                return;
            }
            let at = self.0.random_range(0..stream.len());
            match self.0.random_range(0..4) {
                0 => stream[at] = self.0.random(),
                1 => {
                    stream.remove(at);
                }
                2 => stream.insert(at, self.0.random()),
                _ => stream.truncate(at),
            }
        }
    }

    /// A masked client frame, its length minimally encoded or, now and
    /// then, in a longer form (which RFC 6455 forbids, but neither parser
    /// checks).
    fn frame(&mut self, first: u8, payload: &[u8], stream: &mut Vec<u8>) {
        let length = payload.len();
        stream.push(first);
        match (length, self.0.random_range(0..10)) {
            (0..=125, 0..8) => stream.push(0x80 | length as u8),
            (0..=65535, 0..9) => {
                stream.push(0x80 | 126);
                stream.extend((length as u16).to_be_bytes());
            }
            _ => {
                stream.push(0x80 | 127);
                stream.extend((length as u64).to_be_bytes());
            }
        }
        let mask = self.mask();
        stream.extend(mask);
        stream.extend(
            payload
                .iter()
                .zip(mask.iter().cycle())
                .map(|(byte, key)| byte ^ key),
        );
    }

    /// A masking key, all zeros now and then.
    fn mask(&mut self) -> [u8; 4] {
        match self.0.random_bool(0.1) {
            true => [0; 4],
            false => self.0.random(),
        }
    }

    fn text(&mut self, length: usize) -> String {
        let mut text = String::new();
        while text.len() < length {
            text.push_str(CHARACTERS[self.0.random_range(0..CHARACTERS.len())]);
        }
        text
    }

    fn bytes(&mut self, length: usize) -> Vec<u8> {
        let mut bytes = vec![0; length];
        self.0.fill(&mut bytes[..]);
        bytes
    }
}

/// A frame without a masking key, as only a server may send.
fn unmasked_frame(first: u8, payload: &[u8], stream: &mut Vec<u8>) {
    stream.extend([first, payload.len() as u8]);
    stream.extend(payload);
}
