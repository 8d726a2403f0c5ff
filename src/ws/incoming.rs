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
//! Frames that are not cut: control frames (at most 125 bytes), frames of at
//! most one piece, and frames longer than the limit, which tungstenite then
//! refuses from their header, before buffering any of them.

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

/// A client's connection as tungstenite reads it: large data frames cut
/// into pieces, and a record of whether a message is arriving.
pub struct Incoming<S> {
    inner: S,
    /// Frames longer than this are passed on whole, for tungstenite to refuse.
    max_frame_bytes: u64,
    /// The header being read, before it is understood.
    header: [u8; MAX_HEADER_BYTES],
    header_read: usize,
    /// Header bytes made for tungstenite and not yet handed over.
    pending: [u8; MAX_HEADER_BYTES],
    pending_range: (usize, usize),
    /// The frame whose payload is passing through.
    frame: Option<Frame>,
    /// Payload bytes left in the piece being handed over.
    piece_left: u64,
    /// When the message in progress last received data; `None` between
    /// messages.
    message_progress: Option<Instant>,
}

/// A data or control frame being passed on.
struct Frame {
    header: FrameHeader,
    payload_left: u64,
    /// Whether this is a data frame, whose bytes count as progress.
    data: bool,
    /// Whether its end ends a message (a final data frame).
    ends_message: bool,
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
            pending: [0; MAX_HEADER_BYTES],
            pending_range: (0, 0),
            frame: None,
            piece_left: 0,
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

    /// Bytes the header read so far says the whole header has, as far as
    /// they tell yet.
    fn header_bytes_needed(&self) -> usize {
        if self.header_read < 2 {
            return 2;
        }
        let second = self.header[1];
        let length_bytes = match second & 0x7f {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let mask_bytes = if second & 0x80 != 0 { 4 } else { 0 };
        2 + length_bytes + mask_bytes
    }

    /// Starts passing on the frame whose header has just been read.
    fn begin_frame(&mut self) {
        let (raw, raw_len) = (self.header, self.header_read);
        let raw = &raw[..raw_len];
        self.header_read = 0;
        let parsed = FrameHeader::parse(&mut Cursor::new(raw));
        let Ok(Some((header, length))) = parsed else {
            // Unreadable: passed on for tungstenite to say what is wrong.
            self.hand_over(raw);
            self.piece_left = 0;
            self.frame = None;
            return;
        };
        let data = matches!(header.opcode, OpCode::Data(_));
        if data {
            self.message_progress = Some(Instant::now());
        }
        let cut = data && length > PIECE_BYTES as u64 && length <= self.max_frame_bytes;
        let frame = Frame {
            ends_message: data && header.is_final,
            header,
            payload_left: length,
            data,
        };
        if cut {
            self.frame = Some(frame);
            self.begin_piece();
        } else {
            self.hand_over(raw);
            self.piece_left = length;
            self.frame = Some(frame);
            self.finish_frame_if_done();
        }
    }

    /// Makes the header of the next piece of the frame being cut.
    fn begin_piece(&mut self) {
        let frame = self.frame.as_mut().expect("a frame is being cut");
        let length = frame.payload_left.min(PIECE_BYTES as u64);
        let last = length == frame.payload_left;
        let header = FrameHeader {
            is_final: last && frame.header.is_final,
            ..frame.header.clone()
        };
        // Pieces after the first continue the message.
        frame.header.opcode = OpCode::Data(Data::Continue);
        let mut made = Cursor::new([0u8; MAX_HEADER_BYTES]);
        header
            .format(length, &mut made)
            .expect("a frame header fits in 14 bytes");
        let made_len = made.position() as usize;
        let made = made.into_inner();
        self.hand_over(&made[..made_len]);
        self.piece_left = length;
    }

    fn hand_over(&mut self, header: &[u8]) {
        self.pending[..header.len()].copy_from_slice(header);
        self.pending_range = (0, header.len());
    }

    /// Forgets the frame once all of it has passed, and the message with it
    /// if the frame was its last.
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
}

impl<S: AsyncRead + Unpin> AsyncRead for Incoming<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            let (start, end) = this.pending_range;
            if start < end {
                let count = (end - start).min(buf.remaining());
                buf.put_slice(&this.pending[start..start + count]);
                this.pending_range.0 += count;
                return Poll::Ready(Ok(()));
            }
            if this.piece_left > 0 {
                let wanted = this.piece_left.min(buf.remaining() as u64) as usize;
                let mut piece = buf.take(wanted);
                let window = piece.filled().as_ptr();
                ready!(Pin::new(&mut this.inner).poll_read(cx, &mut piece))?;
                // As tokio's own `Take` checks: the reader filled this window.
                assert_eq!(piece.filled().as_ptr(), window, "reader swapped the buffer");
                let read = piece.filled().len();
                // SAFETY: `piece` is a window on `buf`'s unfilled part (the
                // same one, checked above), and the inner reader has just
                // initialised `read` bytes of it.
                unsafe { buf.assume_init(read) };
                buf.advance(read);
                if read > 0 {
                    this.piece_left -= read as u64;
                    let frame = this.frame.as_mut().expect("a piece belongs to a frame");
                    frame.payload_left -= read as u64;
                    if frame.data {
                        this.message_progress = Some(Instant::now());
                    }
                    this.finish_frame_if_done();
                }
                // Zero bytes read is the end of the connection, passed on.
                return Poll::Ready(Ok(()));
            }
            if this.frame.is_some() {
                this.begin_piece();
                continue;
            }
            let needed = this.header_bytes_needed();
            if this.header_read < needed {
                let mut header = ReadBuf::new(&mut this.header[this.header_read..needed]);
                ready!(Pin::new(&mut this.inner).poll_read(cx, &mut header))?;
                let read = header.filled().len();
                if read == 0 {
                    // The connection ended, mid-header or between frames:
                    // tungstenite sees the end and says how it ended.
                    return Poll::Ready(Ok(()));
                }
                this.header_read += read;
                continue;
            }
            this.begin_frame();
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
}
