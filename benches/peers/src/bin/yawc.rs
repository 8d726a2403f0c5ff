//! yawc 0.5 over hyper, set up as its crate documentation and
//! `examples/echo_server.rs` set it up: `WebSocket::upgrade_with_options`
//! answers the handshake, and a task awaits the upgraded connection and
//! reads it as a stream of whole messages. Pings are answered by the
//! library, and still handed over.

use futures::StreamExt;
use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use peers::MAX_MESSAGE_BYTES;
use peers::websockets::{Connected, Reply, status};
use yawc::{OpCode, Options, UpgradeFut, WebSocket};

#[tokio::main]
async fn main() {
    peers::websockets::serve(handshake).await;
}

fn handshake(mut request: Request<Incoming>, id: String) -> Reply {
    // Both limits are exclusive, hence the one more byte. Checking text is
    // off by default; the example turns it on.
    let options = Options::default()
        .with_utf8()
        .with_max_payload_read(MAX_MESSAGE_BYTES + 1)
        .with_max_read_buffer(MAX_MESSAGE_BYTES + 1);
    match WebSocket::upgrade_with_options(&mut request, options) {
        Ok((response, upgraded)) => {
            tokio::spawn(hold(upgraded, id));
            response.map(|_| Default::default())
        }
        Err(_) => status(StatusCode::BAD_REQUEST),
    }
}

/// Reads one client's messages until it leaves or breaks the protocol.
async fn hold(upgraded: UpgradeFut, id: String) {
    let Ok(mut socket) = upgraded.await else {
        return;
    };
    let _connected = Connected::count();
    while let Some(message) = socket.next().await {
        let bytes = message.payload().len();
        match message.opcode() {
            OpCode::Text => println!("text message received id={id} bytes={bytes}"),
            OpCode::Binary => println!("binary message received id={id} bytes={bytes}"),
            _ => {}
        }
    }
}
