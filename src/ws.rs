//! Websocket sessions on `/ws/<id>`: how a client is counted in
//! `connected_clients` for exactly as long as it is connected.

use futures::StreamExt;
use warp::ws::WebSocket;

use crate::metrics::CONNECTED_CLIENTS;

/// Counts one connected client in `connected_clients` for its lifetime: the
/// gauge goes up when it is made and down when it is dropped. Tying the
/// decrement to `Drop` means no early return, error or panic can skip it.
struct ConnectedClient;

impl ConnectedClient {
    fn new() -> ConnectedClient {
        CONNECTED_CLIENTS.inc();
        ConnectedClient
    }
}

impl Drop for ConnectedClient {
    fn drop(&mut self) {
        CONNECTED_CLIENTS.dec();
    }
}

/// Serves one websocket client until it goes away, logging what it sends.
///
/// The id comes from the URL and is untrusted, so it is logged with `{:?}`:
/// quotes and escapes keep a hostile id from forging log lines.
pub async fn client_connection(socket: WebSocket, id: String) {
    let _client = ConnectedClient::new();
    println!("client {id:?} connected");
    let (_sender, mut receiver) = socket.split();
    while let Some(received) = receiver.next().await {
        match received {
            Ok(message) => println!("received message from {id:?}: {message:?}"),
            Err(err) => {
                eprintln!("error receiving websocket message from {id:?}: {err}");
                break;
            }
        }
    }
    println!("client {id:?} disconnected");
}
