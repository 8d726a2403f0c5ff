//! A client's websocket frames (RFC 6455, section 5), read from the bytes
//! as they arrive; the server's own are in `server`.
//!
//! [`Reader`] is fed whatever a read of the socket returned, in pieces of any
//! size and split anywhere, and hands over each complete message and
//! control frame. It keeps only what a message in progress needs: the
//! message gathered so far, a frame header a read ended inside (14 bytes),
//! and a control frame's payload (125 bytes) while it arrives. Between two
//! reads a message holds room for at most twice what has arrived, never for
//! what a header claims (see [`Reader::give_back_room`]). Everything a client can do wrong is refused with the close
//! code RFC 6455 gives it: 1002 for a protocol violation, 1007 for invalid
//! UTF-8, 1009 for a message over the limit (decided from the frame header,
//! before its payload), 1011 when memory for a message cannot be had. No
//! extension is negotiated, so the reserved bits must be 0.

use bytes::BufMut;
use bytes::buf::Limit;

/// The longest frame header: 2 bytes, 8 of length, 4 of masking key.
const MAX_HEADER_BYTES: usize = 14;

/// The longest payload of a control frame.
const MAX_CONTROL_BYTES: usize = 125;

/// The least room a message is given when it needs more.
pub const MIN_ROOM_BYTES: usize = 4096;

const NO_MEMORY: Refusal = Refusal::new(Refusal::INTERNAL, "no memory for the message");

const CONTINUATION: u8 = 0x0;
const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xA;

/// What a complete frame or message from the client was.
#[derive(Debug, PartialEq, Eq)]
pub enum Received {
    Text(String),
    Binary(Vec<u8>),
    /// A ping, with the payload the pong must carry.
    Ping(Vec<u8>),
    Pong,
    /// The client's close frame, valid, with its code if it had one.
    Close(Option<u16>),
}

/// Why the server closes a connection: the code and reason of its close
/// frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub code: u16,
    pub reason: &'static str,
}

impl Refusal {
    pub const GOING_AWAY: u16 = 1001;
    pub const PROTOCOL_ERROR: u16 = 1002;
    pub const INVALID_DATA: u16 = 1007;
    pub const POLICY: u16 = 1008;
    pub const TOO_BIG: u16 = 1009;
    pub const INTERNAL: u16 = 1011;

    pub const fn new(code: u16, reason: &'static str) -> Refusal {
        Refusal { code, reason }
    }

    const fn protocol(reason: &'static str) -> Refusal {
        Refusal::new(Refusal::PROTOCOL_ERROR, reason)
    }
}

/// The frame whose payload is arriving.
struct Frame {
    opcode: u8,
    fin: bool,
    mask: [u8; 4],
    /// Payload bytes received so far, and still to come.
    done: usize,
    left: usize,
}

/// A data message being gathered across frames.
struct Message {
    text: bool,
    bytes: Vec<u8>,
}

/// The client's frames, followed through the bytes fed in. See the module
/// documentation.
pub struct Reader {
    max_message_bytes: usize,
    header: [u8; MAX_HEADER_BYTES],
    header_len: u8,
    frame: Option<Frame>,
    message: Option<Message>,
    control: Vec<u8>,
    /// Messages begun, ever, a control frame outside a message counting as
    /// one: the session times each message from the read that begins it.
    messages_begun: u64,
    /// Whether the client's close frame has come: nothing after it is read.
    closed: bool,
}

impl Reader {
    /// Reads messages of at most `max_message_bytes`.
    pub fn new(max_message_bytes: usize) -> Reader {
        Reader {
            max_message_bytes,
            header: [0; MAX_HEADER_BYTES],
            header_len: 0,
            frame: None,
            message: None,
            control: Vec::new(),
            messages_begun: 0,
            closed: false,
        }
    }

    /// Whether a message, or any frame, has begun and not ended.
    pub fn in_message(&self) -> bool {
        self.message.is_some() || self.frame.is_some() || self.header_len > 0
    }

    /// How many messages have begun so far, a control frame outside a
    /// message counting as one.
    pub fn messages_begun(&self) -> u64 {
        self.messages_begun
    }

    /// The bytes of memory the reader holds for what is in progress: the
    /// room of the message and of the control frame's payload.
    pub fn held_bytes(&self) -> usize {
        let message = self.message.as_ref().map_or(0, |m| m.bytes.capacity());
        message + self.control.capacity()
    }

    /// Follows the frames through `bytes`, the next bytes from the client,
    /// and passes each complete message and control frame to `received`.
    /// Stops after a close frame: nothing may follow it. Fails with the
    /// refusal the client has earned.
    pub fn feed(
        &mut self,
        mut bytes: &[u8],
        mut received: impl FnMut(Received),
    ) -> Result<(), Refusal> {
        while !bytes.is_empty() && !self.closed {
            let Some(frame) = &mut self.frame else {
                bytes = self.read_header(bytes)?;
                if self.payload_complete() {
                    self.end_frame(&mut received)?;
                }
                continue;
            };
            let (chunk, rest) = bytes.split_at(frame.left.min(bytes.len()));
            let limit = self.max_message_bytes;
            match (&self.frame, &mut self.message) {
                (Some(frame), Some(message)) if frame.opcode < CLOSE => {
                    make_room(&mut message.bytes, chunk.len(), limit)?;
                    message.bytes.extend_from_slice(chunk);
                }
                _ => self.control.extend_from_slice(chunk),
            }
            self.appended(chunk.len(), &mut received)?;
            bytes = rest;
        }
        Ok(())
    }

    /// For a data frame with at least `min_left` payload bytes still to
    /// come, reads the next of them straight into its message with `read`
    /// (a read of the socket, given the message's room), rather than copying
    /// them there from a read buffer, and hands `received` what they
    /// complete. `None` when no such frame is in progress; otherwise what
    /// `read` returned.
    pub fn read_payload(
        &mut self,
        min_left: usize,
        read: impl FnOnce(&mut Limit<&mut Vec<u8>>) -> std::io::Result<usize>,
        received: impl FnMut(Received),
    ) -> Result<Option<std::io::Result<usize>>, Refusal> {
        let limit = self.max_message_bytes;
        let (Some(frame), Some(message)) = (&self.frame, &mut self.message) else {
            return Ok(None);
        };
        if frame.opcode >= CLOSE || frame.left < min_left {
            return Ok(None);
        }
        let bytes = &mut message.bytes;
        make_room(bytes, 1, limit)?;
        let room = (bytes.capacity() - bytes.len()).min(frame.left);
        match read(&mut bytes.limit(room)) {
            Ok(count) if count > 0 => {
                self.appended(count, received)?;
                Ok(Some(Ok(count)))
            }
            other => Ok(Some(other)),
        }
    }

    /// Gives back the room a message in progress holds beyond what its
    /// bytes warrant: twice what has arrived, or [`MIN_ROOM_BYTES`] if more,
    /// and nothing for a header alone. The session calls it before it waits
    /// for the client, so that a client holds only what it has sent, with
    /// that much slack, whatever its headers claim.
    pub fn give_back_room(&mut self) {
        if let Some(message) = &mut self.message {
            let arrived = message.bytes.len();
            let warranted = match arrived {
                0 => 0,
                _ => (2 * arrived).max(MIN_ROOM_BYTES),
            };
            if message.bytes.capacity() > warranted {
                message.bytes.shrink_to(warranted);
            }
        }
    }

    /// Takes the last `count` bytes of the frame's payload buffer, just
    /// appended to it, as the frame's next payload bytes: unmasks them, and
    /// ends the frame once it is complete.
    fn appended(
        &mut self,
        count: usize,
        mut received: impl FnMut(Received),
    ) -> Result<(), Refusal> {
        let frame = self.frame.as_mut().expect("a frame is being read");
        let (mask, start) = (frame.mask, frame.done);
        frame.done += count;
        frame.left -= count;
        let payload = self.payload_buffer();
        let from = payload.len() - count;
        unmask(&mut payload[from..], mask, start);
        if self.payload_complete() {
            self.end_frame(&mut received)?;
        }
        Ok(())
    }

    /// Where the payload of the frame in progress goes: its message, or the
    /// control frame's buffer.
    fn payload_buffer(&mut self) -> &mut Vec<u8> {
        match (&self.frame, &mut self.message) {
            (Some(frame), Some(message)) if frame.opcode < CLOSE => &mut message.bytes,
            _ => &mut self.control,
        }
    }

    fn payload_complete(&self) -> bool {
        self.frame.as_ref().is_some_and(|frame| frame.left == 0)
    }

    /// Reads as much of a frame header as `bytes` holds, gathering it across
    /// calls; once it is whole, checks it and begins the frame. Returns the
    /// bytes after what it took.
    fn read_header<'a>(&mut self, bytes: &'a [u8]) -> Result<&'a [u8], Refusal> {
        let held = self.header_len as usize;
        if held == 0 && self.message.is_none() {
            self.messages_begun += 1;
        }
        let take = (MAX_HEADER_BYTES - held).min(bytes.len());
        self.header[held..held + take].copy_from_slice(&bytes[..take]);
        let available = held + take;
        if available < 2 {
            self.header_len = available as u8;
            return Ok(&bytes[take..]);
        }
        let [first, second] = [self.header[0], self.header[1]];
        let needed =
            2 + match second & 0x7F {
                126 => 2,
                127 => 8,
                _ => 0,
            } + if second & 0x80 != 0 { 4 } else { 0 };
        // Checked as soon as the first two bytes are in, whatever follows.
        let (fin, opcode) = (first & 0x80 != 0, first & 0x0F);
        if first & 0x70 != 0 {
            return Err(Refusal::protocol("reserved bits set"));
        }
        if !matches!(opcode, CONTINUATION | TEXT | BINARY | CLOSE | PING | PONG) {
            return Err(Refusal::protocol("reserved opcode"));
        }
        if second & 0x80 == 0 {
            return Err(Refusal::protocol("unmasked frame"));
        }
        if available < needed {
            self.header_len = available as u8;
            return Ok(&bytes[take..]);
        }
        self.header_len = 0;
        let rest = &bytes[needed - held..];
        let header = &self.header[..needed];
        let length = match second & 0x7F {
            126 => u64::from(u16::from_be_bytes([header[2], header[3]])),
            127 => u64::from_be_bytes(header[2..10].try_into().expect("8 bytes")),
            length => u64::from(length),
        };
        if length >> 63 != 0 {
            return Err(Refusal::protocol("length with its top bit set"));
        }
        let mask = header[needed - 4..].try_into().expect("4 bytes");
        if opcode >= CLOSE {
            if !fin {
                return Err(Refusal::protocol("fragmented control frame"));
            }
            if length > MAX_CONTROL_BYTES as u64 {
                return Err(Refusal::protocol("control frame over 125 bytes"));
            }
        } else {
            match (opcode, &self.message) {
                (CONTINUATION, None) => {
                    return Err(Refusal::protocol("continuation of no message"));
                }
                (TEXT | BINARY, Some(_)) => {
                    return Err(Refusal::protocol("message inside a message"));
                }
                _ => {}
            }
            let so_far = self
                .message
                .as_ref()
                .map_or(0, |message| message.bytes.len());
            if length > (self.max_message_bytes - so_far) as u64 {
                return Err(Refusal::new(Refusal::TOO_BIG, "message too big"));
            }
            let message = self.message.get_or_insert_with(|| Message {
                text: opcode == TEXT,
                bytes: Vec::new(),
            });
            // Room for the whole frame while it is read, so that its payload
            // is moved once, however many reads of a turn bring it; what has
            // not arrived when the session waits is given back
            // (`give_back_room`).
            message
                .bytes
                .try_reserve_exact(length as usize)
                .map_err(|_| NO_MEMORY)?;
        }
        self.frame = Some(Frame {
            opcode,
            fin,
            mask,
            done: 0,
            // At most the message limit or 125, checked above.
            left: length as usize,
        });
        Ok(rest)
    }

    /// Ends the frame whose payload is complete, handing `received` a
    /// control frame, or the message if the frame was its last.
    fn end_frame(&mut self, received: &mut impl FnMut(Received)) -> Result<(), Refusal> {
        let frame = self.frame.take().expect("a frame is being read");
        let control = std::mem::take(&mut self.control);
        match frame.opcode {
            PING => received(Received::Ping(control)),
            PONG => received(Received::Pong),
            CLOSE => {
                received(Received::Close(close_frame(&control)?));
                self.closed = true;
            }
            _ if frame.fin => {
                let message = self
                    .message
                    .take()
                    .expect("a data frame belongs to a message");
                let not_utf8 = |_| Refusal::new(Refusal::INVALID_DATA, "text is not UTF-8");
                received(match message.text {
                    true => Received::Text(String::from_utf8(message.bytes).map_err(not_utf8)?),
                    false => Received::Binary(message.bytes),
                });
            }
            _ => {}
        }
        Ok(())
    }
}

/// Makes room in a message's `bytes` for at least `wanted` more, within
/// `limit` bytes in all, once room given back has run out. It grows by what
/// the message holds already, or by [`MIN_ROOM_BYTES`] if that is more, so
/// that a message arriving slowly is moved a few times only and stays
/// within what [`Reader::give_back_room`] leaves. Exact sizes rather than
/// `Vec`'s own growth, which could double past the limit.
fn make_room(bytes: &mut Vec<u8>, wanted: usize, limit: usize) -> Result<(), Refusal> {
    if bytes.capacity() - bytes.len() >= wanted {
        return Ok(());
    }
    let grow = wanted.max(bytes.len()).max(MIN_ROOM_BYTES);
    bytes
        .try_reserve_exact(grow.min(limit - bytes.len()))
        .map_err(|_| NO_MEMORY)
}

/// The code of a client's close frame with `payload`, if it is a valid one
/// (RFC 6455, 5.5.1 and 7.4).
fn close_frame(payload: &[u8]) -> Result<Option<u16>, Refusal> {
    let Some((code, reason)) = payload.split_first_chunk::<2>() else {
        return match payload.is_empty() {
            true => Ok(None),
            false => Err(Refusal::protocol("close frame of one byte")),
        };
    };
    let code = u16::from_be_bytes(*code);
    // Defined by RFC 6455 or registered with IANA since, or private (4xxx)
    // and library (3xxx) codes; 1004 to 1006 and 1015 must never be sent.
    if !matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999) {
        return Err(Refusal::protocol("invalid close code"));
    }
    std::str::from_utf8(reason)
        .map_err(|_| Refusal::new(Refusal::INVALID_DATA, "close reason is not UTF-8"))?;
    Ok(Some(code))
}

/// Unmasks `payload`, which starts `offset` bytes into its frame's payload
/// (RFC 6455, 5.3): 64 bytes at a time against the key repeated, which the
/// compiler turns into vector instructions.
fn unmask(payload: &mut [u8], mask: [u8; 4], offset: usize) {
    let mut key = [0; 64];
    for (i, byte) in key.iter_mut().enumerate().take(payload.len()) {
        *byte = mask[(offset + i) % 4];
    }
    let mut blocks = payload.chunks_exact_mut(64);
    for block in &mut blocks {
        block
            .iter_mut()
            .zip(&key)
            .for_each(|(byte, key)| *byte ^= key);
    }
    let rest = blocks.into_remainder();
    rest.iter_mut()
        .zip(&key)
        .for_each(|(byte, key)| *byte ^= key);
}

mod server;

pub use server::ControlFrame;
#[cfg(feature = "echo")]
pub use server::data_frame;

#[cfg(test)]
mod differential;
#[cfg(test)]
mod tests;
