//! fastwebsockets 0.10 over hyper, set up as its README and
//! `examples/echo_server.rs` set it up: `upgrade::upgrade` answers the
//! handshake, and a task awaits the upgraded connection and reads it
//! through a `FragmentCollector`, which hands over whole messages. Pings
//! are answered by the library (auto-pong is on by default).

use fastwebsockets::upgrade::{UpgradeFut, upgrade};
use fastwebsockets::{FragmentCollector, Frame, OpCode};
use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use peers::MAX_MESSAGE_BYTES;
use peers::websockets::{Connected, Reply, status};

#[tokio::main]
async fn main() {
    peers::websockets::serve(handshake).await;
}

fn handshake(mut request: Request<Incoming>, id: String) -> Reply {
    match upgrade(&mut request) {
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
    // The limit is on each frame, and a frame of exactly the limit is
    // refused, hence the one more byte.
    socket.set_max_message_size(MAX_MESSAGE_BYTES + 1);
    let mut socket = FragmentCollector::new(socket);
    while let Ok(message) = socket.read_frame().await {
        let bytes = message.payload.len();
        // The collector puts fragments together without a limit of its
        // own, so a message longer than any frame may be is refused here.
        if bytes > MAX_MESSAGE_BYTES {
            let _ = socket.write_frame(Frame::close(1009, b"")).await;
            return;
        }
        match message.opcode {
            OpCode::Text => println!("text message received id={id} bytes={bytes}"),
            OpCode::Binary => println!("binary message received id={id} bytes={bytes}"),
            OpCode::Close => return,
            _ => {}
        }
    }
}
