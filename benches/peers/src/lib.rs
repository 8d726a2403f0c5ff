//! What every peer server shares with the service, so that the comparison
//! can start them all alike: the address to listen on, `LISTEN_ADDR` or
//! `127.0.0.1:0`, and the `Started on port N` line that tells the bench
//! which port was bound.
//!
//! Each binary in `src/bin/` is one peer, set up as its library's own
//! documentation sets it up; the routes are the service's, cut down to what
//! is measured:
//!
//! - `GET /some` says `hello!` and counts the request in `incoming_requests`,
//!   the tutorial's counter, kept the library's usual way;
//! - `GET /metrics` is the library's exposition;
//! - `GET /ws/{id}` holds an idle websocket client, answering its pings and
//!   ignoring its messages, with the library's usual websocket support, and
//!   counts it in `connected_clients`, which the bench polls.
//!
//! The bare servers (`hyper`, `warp-hyper`, `warp-serve`) serve `/some`
//! alone: they are the floor that the others' CPU is measured against.

use std::net::TcpListener;

/// Binds `LISTEN_ADDR` (default `127.0.0.1:0`) and announces the port on
/// stdout. Returns a non-blocking listener, ready for any runtime.
///
/// A peer is a benchmark fixture, so a bad address or a failed bind ends it
/// with a panic naming the cause; the bench reports the missing line.
pub fn bind() -> TcpListener {
    let addr = std::env::var("LISTEN_ADDR").unwrap_or_else(|_| "127.0.0.1:0".to_owned());
    let listener = TcpListener::bind(&addr).unwrap_or_else(|err| panic!("bind {addr}: {err}"));
    listener
        .set_nonblocking(true)
        .expect("make the listener non-blocking");
    let port = listener.local_addr().expect("bound address").port();
    println!("Started on port {port}");
    listener
}
