//! The server's own frames: unmasked and final, as RFC 6455 (5.1) wants
//! them; control frames of at most 125 bytes, and, for the `echo` feature's
//! conformance run only, data frames carrying a whole message.

#[cfg(feature = "echo")]
use super::{BINARY, TEXT};
use super::{CLOSE, MAX_CONTROL_BYTES, PING, PONG};

/// Appends to `out` a server data frame, final and unmasked, carrying a
/// whole message: for the `echo` feature's conformance run only.
#[cfg(feature = "echo")]
pub fn data_frame(text: bool, payload: &[u8], out: &mut Vec<u8>) {
    out.push(0x80 | if text { TEXT } else { BINARY });
    match payload.len() {
        len @ 0..=125 => out.push(len as u8),
        len @ 126..=0xFFFF => {
            out.push(126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        len => {
            out.push(127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
}

/// A server frame: unmasked, final, with a payload of at most 125 bytes.
pub struct ControlFrame {
    bytes: [u8; 2 + MAX_CONTROL_BYTES],
    len: usize,
}

impl ControlFrame {
    pub fn ping() -> ControlFrame {
        ControlFrame::new(PING, &[])
    }

    pub fn pong(payload: &[u8]) -> ControlFrame {
        ControlFrame::new(PONG, payload)
    }

    /// A close frame with `code` and `reason` (cut to fit).
    pub fn close(code: u16, reason: &str) -> ControlFrame {
        let mut payload = [0; MAX_CONTROL_BYTES];
        payload[..2].copy_from_slice(&code.to_be_bytes());
        let reason = &reason.as_bytes()[..reason.len().min(MAX_CONTROL_BYTES - 2)];
        payload[2..2 + reason.len()].copy_from_slice(reason);
        ControlFrame::new(CLOSE, &payload[..2 + reason.len()])
    }

    fn new(opcode: u8, payload: &[u8]) -> ControlFrame {
        let mut bytes = [0; 2 + MAX_CONTROL_BYTES];
        bytes[0] = 0x80 | opcode;
        bytes[1] = payload.len() as u8;
        bytes[2..2 + payload.len()].copy_from_slice(payload);
        ControlFrame {
            bytes,
            len: 2 + payload.len(),
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}
