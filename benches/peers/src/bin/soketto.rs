//! soketto 0.8 over hyper, set up as its `examples/hyper_server.rs` sets it
//! up: `handshake::http::Server` answers the handshake, and a task takes
//! the upgraded connection through tokio-util's compat layer and futures'
//! `BufReader` and `BufWriter`, then reads whole messages with
//! `receive_data`. Pings are answered by the library.

use futures::io::{BufReader, BufWriter};
use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use peers::MAX_MESSAGE_BYTES;
use peers::websockets::{Connected, Reply, status};
use soketto::Data;
use soketto::handshake::http::Server;
use tokio_util::compat::TokioAsyncReadCompatExt;

#[tokio::main]
async fn main() {
    peers::websockets::serve(handshake).await;
}

fn handshake(request: Request<Incoming>, id: String) -> Reply {
    let mut server = Server::new();
    match server.receive_request(&request) {
        Ok(response) => {
            tokio::spawn(hold(server, request, id));
            response.map(|()| Default::default())
        }
        Err(_) => status(StatusCode::BAD_REQUEST),
    }
}

/// Reads one client's messages until it leaves or breaks the protocol.
async fn hold(server: Server, request: Request<Incoming>, id: String) {
    let Ok(upgraded) = hyper::upgrade::on(request).await else {
        return;
    };
    let _connected = Connected::count();
    let stream = BufReader::new(BufWriter::new(TokioIo::new(upgraded).compat()));
    let mut builder = server.into_builder(stream);
    builder.set_max_message_size(MAX_MESSAGE_BYTES);
    builder.set_max_frame_size(MAX_MESSAGE_BYTES);
    // The sender is not needed to answer pings: the receiver does that.
    let (_sender, mut receiver) = builder.finish();
    let mut message = Vec::new();
    loop {
        message.clear();
        match receiver.receive_data(&mut message).await {
            Ok(Data::Binary(bytes)) => println!("binary message received id={id} bytes={bytes}"),
            // soketto leaves checking text to the application, as its
            // example does.
            Ok(Data::Text(bytes)) if std::str::from_utf8(&message).is_ok() => {
                println!("text message received id={id} bytes={bytes}")
            }
            Ok(Data::Text(_)) | Err(_) => return,
        }
    }
}
