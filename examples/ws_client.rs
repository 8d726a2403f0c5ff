//! A minimal websocket client for the service: connects to `/ws/<id>`, says
//! hello, and prints what it receives until the server closes. Pings are
//! answered by tokio-tungstenite as it reads.
//!
//! ```sh
//! cargo run --example ws_client -- 127.0.0.1:8080 alice
//! ```
//!
//! The tests also use it as a separate process that they can freeze with
//! SIGSTOP, to show that the server drops a peer that stops answering.

use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(addr), Some(id)) = (args.next(), args.next()) else {
        eprintln!("usage: ws_client HOST:PORT ID");
        std::process::exit(64);
    };

    let (mut socket, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws/{id}")).await?;
    println!("connected");
    socket
        .send(Message::text(format!("hello from {id}")))
        .await?;
    while let Some(message) = socket.next().await {
        println!("received {:?}", message?);
    }
    println!("closed");
    Ok(())
}
