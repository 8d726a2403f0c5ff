//! The client's bytes on their way to tungstenite: every large data frame is
//! cut into small fragments, and the time of the last data byte is kept, so
//! that no client can make its session hold more than a message in progress.
//!
//! Why cut frames: tungstenite reads a frame into one buffer reserved at the
//! frame's length and keeps that buffer, at that size, for the rest of the
//! session (its `FrameCodec` splits each payload off a `BytesMut` and reuses
//! the allocation). So one 64 KiB message left 64 KiB behind in an idle
//! session. A fragmented message is different: tungstenite gathers its
//! fragments in a separate `IncompleteMessage` that it hands over whole and
//! forgets when the message completes. Cut into [`PIECE_BYTES`] fragments,
//! every message takes that second path, and the frame buffer never grows
//! past one piece. The cut is made in the masked bytes as they pass: a piece
//! that starts a multiple of four bytes into the payload keeps the frame's
//! masking key, so nothing is unmasked, copied or checked here.
//!
//! How the bytes pass: each read goes straight into tungstenite's buffer, as
//! large as tungstenite asks (up to [`MAX_READ_BYTES`]), and the frame
//! headers are then followed inside the bytes just read, so many small
//! frames cost one read, as they did without this adapter. Three things
//! change what is handed over:
//!
//! - a frame to cut: its header is rewritten in place as the first piece's
//!   header, which is never longer. A read is never longer than a cut
//!   frame's header plus one piece, so it holds no bytes past the first cut
//!   point; the pieces after the first are then read one at a time, each
//!   after its header made here.
//! - a frame (cut or not) whose payload the read holds only part of: that
//!   part is kept here and handed over as the next read, so that the read
//!   ends with the frame's header. tungstenite reserves a frame's length on
//!   top of the bytes it holds when it reads a header: with part of the
//!   payload held, a large frame's reservation outgrows its 1 KiB buffer,
//!   which then stays at twice the size for the rest of the session; with
//!   nothing held it fits. The part is at most one piece (the read cap),
//!   and allocated only until the next read hands it over.
//! - a header that the read ends in the middle of: its bytes are held back
//!   here (a header is at most 14 bytes), because whether it is cut is not
//!   known until it is whole, and put at the start of the next read's
//!   bytes, to be followed with them. (Only a caller's buffer too small for
//!   more than them makes the rest of the header be read exactly.)
//!
//! Frames that are not cut: control frames (at most 125 bytes), frames of at
//! most one piece, unmasked frames (which tungstenite refuses) and frames
//! longer than the limit, which tungstenite then refuses from their header,
//! before buffering any of them.

use std::io::{self, Cursor};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::frame::FrameHeader;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

/// Payload bytes per piece. A multiple of four, so that each piece starts
/// at the same point of the four-byte masking key as the frame did.
pub const PIECE_BYTES: usize = 1024;
const _: () = assert!(PIECE_BYTES.is_multiple_of(4));

/// The longest frame header: two bytes, eight of length, four of mask.
const MAX_HEADER_BYTES: usize = 14;

/// The shortest header of a frame that is cut: it is masked and longer than
/// 125 bytes, so two bytes, two of length, four of mask.
const MIN_CUT_HEADER_BYTES: usize = 8;

/// The most read at once. A read that holds the start of a frame to cut then
/// ends at or before the frame's first cut point, so the part of its
/// payload kept for the next read is all in the first piece, and no piece
/// header has to be put in the middle of it. tungstenite asks for at most
/// its read chunk (1 KiB, `src/ws/mod.rs`) anyway.
const MAX_READ_BYTES: usize = MIN_CUT_HEADER_BYTES + PIECE_BYTES;

/// A client's connection as tungstenite reads it: large data frames cut
/// into pieces, and a record of whether a message is arriving.
pub struct Incoming<S> {
    inner: S,
    /// Frames longer than this are passed on whole, for tungstenite to refuse.
    max_frame_bytes: u64,
    /// A header the last read ended in the middle of, held back until whole.
    header: [u8; MAX_HEADER_BYTES],
    header_read: u8,
    /// Header bytes made here (or held back) and not yet handed over.
    made: [u8; MAX_HEADER_BYTES],
    made_range: (u8, u8),
    /// Payload bytes read after a header that ends a read, handed over by
    /// the next; empty, and unallocated, in between.
    carry: Vec<u8>,
    /// The frame whose payload is passing through.
    frame: Option<Frame>,
    /// When the message in progress last received data; `None` between
    /// messages.
    message_progress: Option<Instant>,
}

/// A data or control frame being passed on.
struct Frame {
    /// For a frame being cut, the header the next piece's is made from.
    cut: Option<FrameHeader>,
    payload_left: u64,
    /// For a frame being cut, payload bytes left in the current piece.
    piece_left: u64,
    /// Whether this is a data frame, whose bytes count as progress.
    data: bool,
    /// Whether its end ends a message (a final data frame).
    ends_message: bool,
}

/// The bytes of a frame header made here.
struct MadeHeader {
    bytes: [u8; MAX_HEADER_BYTES],
    len: usize,
}

impl<S> Incoming<S> {
    /// Passes `inner`'s frames on, cutting data frames of up to
    /// `max_frame_bytes` into pieces.
    pub fn new(inner: S, max_frame_bytes: usize) -> Incoming<S> {
        Incoming {
            inner,
            max_frame_bytes: max_frame_bytes as u64,
            header: [0; MAX_HEADER_BYTES],
            header_read: 0,
            made: [0; MAX_HEADER_BYTES],
            made_range: (0, 0),
            carry: Vec::new(),
            frame: None,
            message_progress: None,
        }
    }

    /// When the message the client has begun and not finished last received
    /// a byte of data, or `None` if no message is in progress. Control
    /// frames (pongs) in between do not count.
    pub fn message_progress(&self) -> Option<Instant> {
        self.message_progress
    }

    /// The connection underneath, for reading past tungstenite once it has
    /// given up on the client.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Notes that data arrived for the message in progress. `now` is read
    /// once per read, however many frames it holds.
    fn data_arrived(&mut self, now: &mut Option<Instant>) {
        self.message_progress = Some(*now.get_or_insert_with(Instant::now));
    }

    /// Starts passing on the frame whose whole header is `raw`. Returns the
    /// header of its first piece if it is to be cut, to hand over in
    /// place of `raw`.
    fn begin_frame(&mut self, raw: &[u8], now: &mut Option<Instant>) -> Option<MadeHeader> {
        let parsed = FrameHeader::parse(&mut Cursor::new(raw));
        let Ok(Some((header, length))) = parsed else {
            // Unreadable: passed on for tungstenite to say what is wrong.
            self.frame = None;
            return None;
        };
        let data = matches!(header.opcode, OpCode::Data(_));
        if data {
            self.data_arrived(now);
        }
        let cut = data
            && header.mask.is_some()
            && length > PIECE_BYTES as u64
            && length <= self.max_frame_bytes;
        self.frame = Some(Frame {
            ends_message: data && header.is_final,
            cut: cut.then(|| header.clone()),
            payload_left: length,
            piece_left: 0,
            data,
        });
        if cut {
            Some(self.begin_piece())
        } else {
            self.finish_frame_if_done();
            None
        }
    }

    /// Makes the header of the next piece of the frame being cut.
    fn begin_piece(&mut self) -> MadeHeader {
        let frame = self.frame.as_mut().expect("a frame is being cut");
        let cut = frame.cut.as_mut().expect("a frame is being cut");
        let length = frame.payload_left.min(PIECE_BYTES as u64);
        let last = length == frame.payload_left;
        let header = FrameHeader {
            is_final: last && cut.is_final,
            ..cut.clone()
        };
        // Pieces after the first continue the message.
        cut.opcode = OpCode::Data(Data::Continue);
        frame.piece_left = length;
        let mut made = Cursor::new([0u8; MAX_HEADER_BYTES]);
        header
            .format(length, &mut made)
            .expect("a frame header fits in 14 bytes");
        let len = made.position() as usize;
        MadeHeader {
            bytes: made.into_inner(),
            len,
        }
    }

    fn hand_over(&mut self, header: &[u8]) {
        self.made[..header.len()].copy_from_slice(header);
        self.made_range = (0, header.len() as u8);
    }

    /// Counts `count` payload bytes of the current frame as passed on, and
    /// forgets the frame once all of it has, and the message with it if the
    /// frame was its last.
    fn payload_passed(&mut self, count: u64, now: &mut Option<Instant>) {
        let frame = self.frame.as_mut().expect("payload belongs to a frame");
        frame.payload_left -= count;
        if frame.cut.is_some() {
            frame.piece_left -= count;
        }
        if frame.data && count > 0 {
            self.data_arrived(now);
        }
        self.finish_frame_if_done();
    }

    fn finish_frame_if_done(&mut self) {
        if let Some(frame) = &self.frame
            && frame.payload_left == 0
        {
            if frame.ends_message {
                self.message_progress = None;
            }
            self.frame = None;
        }
    }

    /// Follows the frames through `read`, bytes just read into the caller's
    /// buffer while no frame was being cut. Rewrites the header of a frame
    /// to cut in place, holds back a header that `read` ends inside, and
    /// keeps the part of a payload that `read` ends inside; returns how
    /// many of its bytes (from the start) to hand over.
    fn follow(&mut self, read: &mut [u8], now: &mut Option<Instant>) -> usize {
        let mut at = 0;
        while at < read.len() {
            if let Some(frame) = &self.frame {
                let count = frame.payload_left.min((read.len() - at) as u64);
                at += count as usize;
                self.payload_passed(count, now);
                continue;
            }
            let available = read.len() - at;
            let needed = header_bytes_needed(&read[at..]);
            if available < needed {
                self.header[..available].copy_from_slice(&read[at..]);
                self.header_read = available as u8;
                return at;
            }
            let Some(piece) = self.begin_frame(&read[at..at + needed], now) else {
                at += needed;
                if let Some(frame) = &self.frame
                    && at < read.len()
                    && frame.payload_left > (read.len() - at) as u64
                {
                    // Part of the payload: kept for the next read, so
                    // that this one ends with the header.
                    self.carry = read[at..].to_vec();
                    return at;
                }
                continue;
            };
            // The first piece's header is never longer than the frame's
            // (both are masked; its length fits in two bytes).
            read[at..at + piece.len].copy_from_slice(&piece.bytes[..piece.len]);
            let payload = &read[at + needed..];
            // What `MAX_READ_BYTES` is chosen for: nothing past the cut.
            debug_assert!(payload.len() <= PIECE_BYTES);
            if !payload.is_empty() {
                self.carry = payload.to_vec();
            }
            return at + piece.len;
        }
        read.len()
    }
}

/// The length of the header that starts `bytes`, as far as its first two
/// bytes tell.
fn header_bytes_needed(bytes: &[u8]) -> usize {
    let Some(&second) = bytes.get(1) else {
        return 2;
    };
    let length_bytes = match second & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let mask_bytes = if second & 0x80 != 0 { 4 } else { 0 };
    2 + length_bytes + mask_bytes
}

/// Reads from `inner` into at most `limit` bytes of `buf`'s unfilled part;
/// returns how many were read.
fn read_into<S: AsyncRead + Unpin>(
    inner: &mut S,
    cx: &mut Context<'_>,
    buf: &mut ReadBuf<'_>,
    limit: usize,
) -> Poll<io::Result<usize>> {
    let mut window = buf.take(limit);
    let start = window.filled().as_ptr();
    ready!(Pin::new(inner).poll_read(cx, &mut window))?;
    // As tokio's own `Take` checks: the reader filled this window.
    assert_eq!(window.filled().as_ptr(), start, "reader swapped the buffer");
    let read = window.filled().len();
    // SAFETY: `window` is a view of `buf`'s unfilled part (the same one,
    // checked above), and the inner reader has just initialised `read`
    // bytes of it.
    unsafe { buf.assume_init(read) };
    buf.advance(read);
    Poll::Ready(Ok(read))
}

impl<S: AsyncRead + Unpin> AsyncRead for Incoming<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let filled_before = buf.filled().len();
        let mut now = None;
        // A read that found nothing yet is pending only if nothing was
        // handed over in this call.
        let waiting = |buf: &ReadBuf<'_>| {
            if buf.filled().len() > filled_before {
                Poll::Ready(Ok(()))
            } else {
                Poll::Pending
            }
        };
        loop {
            if buf.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            let (start, end) = (this.made_range.0 as usize, this.made_range.1 as usize);
            if start < end {
                let count = (end - start).min(buf.remaining());
                buf.put_slice(&this.made[start..start + count]);
                this.made_range.0 += count as u8;
                // Alone, like a header that ends a read (see `carry`).
                return Poll::Ready(Ok(()));
            }
            if !this.carry.is_empty() {
                let count = this.carry.len().min(buf.remaining());
                buf.put_slice(&this.carry[..count]);
                this.carry.drain(..count);
                if this.carry.is_empty() {
                    this.carry = Vec::new();
                }
                this.payload_passed(count as u64, &mut now);
                return Poll::Ready(Ok(()));
            }
            if let Some(frame) = &this.frame
                && frame.cut.is_some()
            {
                if frame.piece_left == 0 {
                    let piece = this.begin_piece();
                    this.hand_over(&piece.bytes[..piece.len]);
                    continue;
                }
                let limit = frame.piece_left.min(buf.remaining() as u64) as usize;
                let Poll::Ready(read) = read_into(&mut this.inner, cx, buf, limit)? else {
                    return waiting(buf);
                };
                // Zero bytes read is the end of the connection, passed on.
                this.payload_passed(read as u64, &mut now);
                return Poll::Ready(Ok(()));
            }
            let held = this.header_read as usize;
            if held > 0 && buf.remaining() <= held {
                // A buffer too small to take the start of the header the
                // last read ended inside and more: the rest of the header
                // is read exactly, and handed over once whole.
                let needed = header_bytes_needed(&this.header[..held]);
                if held < needed {
                    let mut rest = ReadBuf::new(&mut this.header[held..needed]);
                    let Poll::Ready(()) = Pin::new(&mut this.inner).poll_read(cx, &mut rest)?
                    else {
                        return waiting(buf);
                    };
                    let read = rest.filled().len();
                    if read == 0 {
                        // The connection ended mid-header: tungstenite
                        // sees the end and says how it ended.
                        return Poll::Ready(Ok(()));
                    }
                    this.header_read += read as u8;
                    continue;
                }
                this.header_read = 0;
                let raw = this.header;
                match this.begin_frame(&raw[..held], &mut now) {
                    Some(piece) => this.hand_over(&piece.bytes[..piece.len]),
                    None => this.hand_over(&raw[..held]),
                }
                continue;
            }
            // A read like any other, behind the start of the header the
            // last read ended inside, if any, so that the header is
            // followed whole. Together they stay within `MAX_READ_BYTES`.
            let start = buf.filled().len();
            buf.put_slice(&this.header[..held]);
            this.header_read = 0;
            let limit = buf.remaining().min(MAX_READ_BYTES - held);
            let read = match read_into(&mut this.inner, cx, buf, limit) {
                Poll::Ready(Ok(read)) if read > 0 => read,
                outcome => {
                    // Nothing new: the header's start stays held back.
                    this.header_read = held as u8;
                    buf.set_filled(start);
                    return match outcome {
                        Poll::Pending => waiting(buf),
                        // The end of the connection (mid-header, if any
                        // is held), or an error: passed on.
                        Poll::Ready(result) => Poll::Ready(result.map(drop)),
                    };
                }
            };
            let kept = this.follow(&mut buf.filled_mut()[start..start + held + read], &mut now);
            buf.set_filled(start + kept);
            if buf.filled().len() > filled_before {
                return Poll::Ready(Ok(()));
            }
            // All of it was the start of a header, now held back.
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Incoming<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::protocol::frame::{Frame, FrameSocket};
    use tokio_tungstenite::tungstenite::protocol::{Role, WebSocket};

    const LIMIT: usize = 64 * 1024;

    /// The bytes a client sends for `frame`, masked as clients must.
    fn sent(mut frame: Frame, mask: [u8; 4]) -> Vec<u8> {
        frame.header_mut().mask = Some(mask);
        let mut bytes = Vec::new();
        frame.format(&mut bytes).unwrap();
        bytes
    }

    /// A connection that delivers one byte per read, so that headers and
    /// pieces arrive split at every possible point.
    struct Trickle<'a>(&'a [u8]);

    impl AsyncRead for Trickle<'_> {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            if let Some((first, rest)) = self.0.split_first() {
                buf.put_slice(&[*first]);
                self.0 = rest;
            }
            Poll::Ready(Ok(()))
        }
    }

    /// What `Incoming` hands on after reading all of `input`, and whether it
    /// then says a message is in progress. Read twice, at once and a byte at
    /// a time with tungstenite reading three bytes at a time: both agree.
    async fn passed_on(input: &[u8]) -> (Vec<u8>, bool) {
        let mut incoming = Incoming::new(input, LIMIT);
        let mut output = Vec::new();
        incoming.read_to_end(&mut output).await.unwrap();

        let mut trickled = Incoming::new(Trickle(input), LIMIT);
        let mut output_in_bits = Vec::new();
        let mut bit = [0u8; 3];
        loop {
            match trickled.read(&mut bit).await.unwrap() {
                0 => break,
                read => output_in_bits.extend_from_slice(&bit[..read]),
            }
        }
        assert_eq!(output, output_in_bits, "the same, however it arrives");
        let in_progress = incoming.message_progress().is_some();
        assert_eq!(in_progress, trickled.message_progress().is_some());
        (output, in_progress)
    }

    /// A connection that delivers `input` in the given chunks, one per read,
    /// with a moment of nothing (`Pending`) before each unless told not to,
    /// and counts the reads that delivered something.
    struct Chunks {
        input: Vec<u8>,
        ends: Vec<usize>,
        delivered: usize,
        waits: bool,
        waited: bool,
        reads: usize,
    }

    impl Chunks {
        fn new(input: &[u8], ends: Vec<usize>) -> Chunks {
            Chunks {
                input: input.to_vec(),
                ends,
                delivered: 0,
                waits: true,
                waited: false,
                reads: 0,
            }
        }

        /// Never `Pending`: always something to read until the end.
        fn never_waiting(input: &[u8]) -> Chunks {
            Chunks {
                waits: false,
                ..Chunks::new(input, vec![])
            }
        }
    }

    impl AsyncRead for Chunks {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let this = &mut *self;
            if this.delivered == this.input.len() {
                return Poll::Ready(Ok(()));
            }
            if this.waits && !this.waited {
                this.waited = true;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            let chunk_end = this
                .ends
                .iter()
                .copied()
                .find(|end| *end > this.delivered)
                .unwrap_or(this.input.len());
            let count = (chunk_end - this.delivered).min(buf.remaining());
            buf.put_slice(&this.input[this.delivered..this.delivered + count]);
            this.delivered += count;
            this.waited = false;
            this.reads += 1;
            Poll::Ready(Ok(()))
        }
    }

    /// What `Incoming` hands on to a reader asking for `asked` bytes at a
    /// time (tungstenite asks for 1 KiB) from `chunks`; and how many reads
    /// it made of them.
    async fn passed_on_asking(asked: usize, mut chunks: Chunks) -> (Vec<u8>, usize) {
        let mut incoming = Incoming::new(&mut chunks, LIMIT);
        let mut output = Vec::new();
        let mut wanted = vec![0u8; asked];
        loop {
            match incoming.read(&mut wanted).await.unwrap() {
                0 => break,
                read => output.extend_from_slice(&wanted[..read]),
            }
        }
        (output, chunks.reads)
    }

    /// The frames in `bytes`, their payloads unmasked.
    fn frames(bytes: &[u8]) -> Vec<Frame> {
        let mut socket = FrameSocket::new(Cursor::new(bytes));
        let mut frames = Vec::new();
        while let Some(mut frame) = socket.read(None).unwrap() {
            let mask = frame.header_mut().mask.take().expect("still masked");
            let mut payload = frame.payload().to_vec();
            for (i, byte) in payload.iter_mut().enumerate() {
                *byte ^= mask[i % 4];
            }
            frames.push(Frame::from_payload(frame.header().clone(), payload.into()));
        }
        frames
    }

    /// The messages tungstenite reads from `bytes`, as the server.
    fn messages(bytes: Vec<u8>) -> Vec<Message> {
        struct ReadOnly(Cursor<Vec<u8>>);
        impl std::io::Read for ReadOnly {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                std::io::Read::read(&mut self.0, buf)
            }
        }
        impl std::io::Write for ReadOnly {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                Ok(buf.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut socket =
            WebSocket::from_raw_socket(ReadOnly(Cursor::new(bytes)), Role::Server, None);
        let mut messages = Vec::new();
        while let Ok(message) = socket.read() {
            messages.push(message);
        }
        messages
    }

    #[tokio::test]
    async fn a_large_frame_becomes_pieces_of_the_same_message() {
        let text: String = (0..5000)
            .map(|i| char::from(b'a' + (i % 26) as u8))
            .collect();
        let frame = Frame::message(text.clone(), OpCode::Data(Data::Text), true);

        let (output, in_progress) = passed_on(&sent(frame, [1, 2, 3, 4])).await;

        let pieces = frames(&output);
        let lengths: Vec<usize> = pieces.iter().map(|piece| piece.payload().len()).collect();
        assert_eq!(lengths, [1024, 1024, 1024, 1024, 904]);
        let opcodes: Vec<OpCode> = pieces.iter().map(|piece| piece.header().opcode).collect();
        assert_eq!(opcodes[0], OpCode::Data(Data::Text));
        assert!(
            opcodes[1..]
                .iter()
                .all(|op| *op == OpCode::Data(Data::Continue))
        );
        let finals: Vec<bool> = pieces.iter().map(|piece| piece.header().is_final).collect();
        assert_eq!(finals, [false, false, false, false, true]);
        assert_eq!(messages(output), [Message::text(text)]);
        assert!(!in_progress, "the message is complete");
    }

    #[tokio::test]
    async fn fragments_and_control_frames_in_between_keep_their_order() {
        let mut input = sent(
            Frame::message(vec![7u8; 3000], OpCode::Data(Data::Binary), false),
            [9, 8, 7, 6],
        );
        input.extend(sent(Frame::ping(&b"hi"[..]), [5, 5, 5, 5]));
        input.extend(sent(
            Frame::message(vec![8u8; 10], OpCode::Data(Data::Continue), true),
            [1, 1, 2, 2],
        ));

        let (output, in_progress) = passed_on(&input).await;

        let mut expected = vec![7u8; 3000];
        expected.extend([8u8; 10]);
        assert_eq!(
            messages(output),
            [Message::Ping(b"hi"[..].into()), Message::binary(expected)]
        );
        assert!(!in_progress, "the message is complete");
    }

    #[tokio::test]
    async fn an_unfinished_message_is_in_progress_and_pongs_do_not_finish_it() {
        let mut input = sent(
            Frame::message(vec![1u8; 100], OpCode::Data(Data::Text), false),
            [1, 2, 3, 4],
        );
        input.extend(sent(Frame::pong(&b""[..]), [4, 3, 2, 1]));

        let (_, in_progress) = passed_on(&input).await;

        assert!(in_progress);
    }

    #[tokio::test]
    async fn a_frame_over_the_limit_passes_whole_for_tungstenite_to_refuse() {
        let frame = Frame::message(vec![0u8; LIMIT + 1], OpCode::Data(Data::Binary), true);
        let input = sent(frame, [1, 2, 3, 4]);

        let (output, _) = passed_on(&input).await;

        assert_eq!(output, input);
    }

    #[tokio::test]
    async fn a_frame_with_an_eight_byte_length_is_cut() {
        let payload: Vec<u8> = (0..LIMIT).map(|i| (i % 251) as u8).collect();
        let frame = Frame::message(payload.clone(), OpCode::Data(Data::Binary), true);
        let input = sent(frame, [4, 3, 2, 1]);
        assert_eq!(input[1] & 0x7f, 127, "the 8-byte length encoding");

        let (output, in_progress) = passed_on(&input).await;

        let lengths: Vec<usize> = frames(&output)
            .iter()
            .map(|piece| piece.payload().len())
            .collect();
        assert_eq!(lengths, vec![PIECE_BYTES; LIMIT / PIECE_BYTES]);
        assert_eq!(messages(output), [Message::binary(payload)]);
        assert!(!in_progress);
    }

    /// A masked final frame (binary, or a continuation) with its length in
    /// `length_bytes` bytes, whatever the length (RFC 6455 asks for the
    /// shortest; tungstenite accepts any).
    fn sent_with_length_in(
        payload: &[u8],
        opcode: Data,
        length_bytes: usize,
        mask: [u8; 4],
    ) -> Vec<u8> {
        let mut bytes = vec![0x80 | u8::from(OpCode::Data(opcode))];
        match length_bytes {
            2 => {
                bytes.push(0x80 | 126);
                bytes.extend((payload.len() as u16).to_be_bytes());
            }
            8 => {
                bytes.push(0x80 | 127);
                bytes.extend((payload.len() as u64).to_be_bytes());
            }
            _ => unreachable!("lengths are in 2 or 8 bytes"),
        }
        bytes.extend(mask);
        bytes.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        bytes
    }

    #[tokio::test]
    async fn frames_with_longer_length_encodings_than_needed_pass_and_are_cut() {
        let small = vec![5u8; 100];
        let large: Vec<u8> = (0..2000).map(|i| (i % 7) as u8).collect();
        let mut input = sent_with_length_in(&small, Data::Binary, 2, [1, 2, 3, 4]);
        input.extend(sent_with_length_in(&small, Data::Binary, 8, [5, 6, 7, 8]));
        input.extend(sent_with_length_in(&large, Data::Binary, 8, [9, 9, 9, 9]));

        let (output, _) = passed_on(&input).await;

        let lengths: Vec<usize> = frames(&output)
            .iter()
            .map(|piece| piece.payload().len())
            .collect();
        assert_eq!(lengths, [100, 100, 1024, 976]);
        assert_eq!(
            messages(output),
            [
                Message::binary(small.clone()),
                Message::binary(small),
                Message::binary(large)
            ]
        );
    }

    #[tokio::test]
    async fn many_small_frames_in_one_read_pass_in_one_read() {
        // 16-byte frames, which 1 KiB reads never cut, and 6-byte ones
        // (empty), which they cut in most headers.
        let mut sixteen = Vec::new();
        let mut six = Vec::new();
        for i in 0..2000u32 {
            let frame = Frame::message(format!("{i:0>10}"), OpCode::Data(Data::Text), true);
            sixteen.extend(sent(frame, i.to_be_bytes()));
            let frame = Frame::message(Vec::new(), OpCode::Data(Data::Binary), true);
            six.extend(sent(frame, i.to_be_bytes()));
        }

        let (output, reads) = passed_on_asking(1024, Chunks::new(&sixteen, vec![])).await;
        assert_eq!(output, sixteen, "nothing to cut");
        // Each read fills the caller's kibibyte, whatever the frames.
        assert_eq!(reads, sixteen.len().div_ceil(1024));
        assert_eq!(messages(output).len(), 2000);

        let (output, reads) = passed_on_asking(1024, Chunks::new(&six, vec![])).await;
        assert_eq!(output, six, "nothing to cut");
        // The start of a header a read ends inside goes with the next read.
        assert!(
            reads <= six.len().div_ceil(1024 - MAX_HEADER_BYTES),
            "{reads} reads for {} bytes",
            six.len()
        );
        assert_eq!(messages(output).len(), 2000);
    }

    #[tokio::test]
    async fn a_read_may_end_anywhere_in_a_header_or_a_payload() {
        let mut input = sent(Frame::ping(&b"hi"[..]), [1, 2, 3, 4]);
        input.extend(sent(
            Frame::message(vec![3u8; 200], OpCode::Data(Data::Binary), false),
            [5, 6, 7, 8],
        ));
        let mut middle = sent_with_length_in(&[4u8; 1500], Data::Continue, 8, [9, 8, 7, 6]);
        middle[0] &= 0x7f; // not final
        input.extend(middle);
        input.extend(sent(
            Frame::message(vec![6u8; 2100], OpCode::Data(Data::Continue), true),
            [2, 2, 2, 2],
        ));
        let (expected, _) = passed_on(&input).await;

        for split in 1..input.len() {
            for asked in [1024, 64 * 1024] {
                let chunks = Chunks::new(&input, vec![split]);
                let (output, _) = passed_on_asking(asked, chunks).await;
                assert_eq!(output, expected, "split after {split}, asking {asked}");
            }
        }
        let mut message = vec![3u8; 200];
        message.extend([4u8; 1500]);
        message.extend([6u8; 2100]);
        assert_eq!(
            messages(expected),
            [Message::Ping(b"hi"[..].into()), Message::binary(message)]
        );
    }

    /// What keeps tungstenite's read buffer at one piece: it reserves a
    /// frame's length on top of what it holds when it reads the header,
    /// so every header it is handed ends its read, unless the frame's whole
    /// payload follows in that read.
    #[tokio::test]
    async fn each_read_ends_with_a_header_unless_its_payload_is_whole() {
        let mut input = Vec::new();
        let lengths = [0usize, 10, 700, 1000, 1500, 3000, 16, LIMIT];
        for (i, length) in lengths.into_iter().cycle().take(40).enumerate() {
            let frame = Frame::message(vec![1u8; length], OpCode::Data(Data::Binary), true);
            input.extend(sent(frame, (i as u32).to_be_bytes()));
        }
        let mut chunks = Chunks::never_waiting(&input);
        let mut incoming = Incoming::new(&mut chunks, LIMIT);

        let mut payload_left = 0;
        let mut kib = [0u8; 1024];
        let mut headers = 0;
        loop {
            let read = incoming.read(&mut kib).await.unwrap();
            if read == 0 {
                break;
            }
            let mut at = 0;
            while at < read {
                if payload_left > 0 {
                    let count = payload_left.min(read - at);
                    at += count;
                    payload_left -= count;
                    continue;
                }
                let needed = header_bytes_needed(&kib[at..read]);
                assert!(at + needed <= read, "a header split between reads");
                let header = FrameHeader::parse(&mut Cursor::new(&kib[at..at + needed]));
                let (_, length) = header.unwrap().expect("a whole header");
                at += needed;
                headers += 1;
                payload_left = length as usize;
                assert!(
                    at == read || payload_left <= read - at,
                    "a header followed by part of its payload"
                );
            }
        }
        assert_eq!(payload_left, 0);
        // Five rounds of five frames of at most a piece, and three cut into
        // 2, 3 and 64 pieces.
        assert_eq!(headers, 5 * (5 + 2 + 3 + 64));
    }
}
