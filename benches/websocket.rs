//! What websocket clients cost the service in memory: `cargo bench --bench
//! websocket`. (Server CPU per message, beside the peers', is in
//! `benches/comparison.rs`.)
//!
//! 1. Idle clients: for 1,000 and 10,000 clients, a fresh server's RSS, its
//!    RSS with the clients connected, and its RSS once they have left (nine
//!    in ten with a close handshake, one in ten by reset), twice on the same
//!    server: a server that gives memory back after one burst can keep it
//!    after the next.
//! 2. Stalled messages: 1,000 clients on a fresh server with
//!    `WS_HEARTBEAT_SECS=5`, each sending the first fragment of a message,
//!    64 KiB less a byte (the default limit), and never the rest: RSS while
//!    they are held, then the time until the server has closed them all.
//!
//! Per client is (RSS with the clients − RSS of the fresh server) / clients,
//! read once the service has given back what it freed; only the server's
//! memory is measured, the clients live in this process. What a client costs
//! after a complete 64 KiB message is in `benches/comparison.rs`, beside
//! the peers.

mod support;

use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use support::machine::{FD_MARGIN, print_date, print_machine, raise_fd_limit};
use support::server::{SETTLE, SETTLE_AFTER_FREEING, Server};
use support::websocket_clients::{Clients, connect_all, wait_until_read};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};

const IDLE_CLIENTS: [usize; 2] = [1_000, 10_000];
const STALLED_CLIENTS: usize = 1_000;
const MAX_MESSAGE_BYTES: usize = 64 * 1024;
const HEARTBEAT_SECS: u64 = 5;

fn main() {
    print_machine();
    print_date();
    let fd_limit = raise_fd_limit();
    let runtime = tokio::runtime::Runtime::new().expect("start the tokio runtime");

    println!("\n== idle clients: RSS per client, and what is left after they go ==");
    println!(
        "{:>7} {:>10} {:>11} {:>13} {:>21} {:>21}",
        "clients", "fresh", "connected", "per client", "after burst 1", "after burst 2"
    );
    for clients in IDLE_CLIENTS {
        if fd_limit < (clients + FD_MARGIN) as u64 {
            println!(
                "{clients:>7}  skipped: needs {} file descriptors",
                clients + FD_MARGIN
            );
            continue;
        }
        if let Err(err) = runtime.block_on(idle(clients)) {
            println!("{clients:>7}  aborted: {err}");
        }
    }

    println!(
        "\n== stalled messages: {STALLED_CLIENTS} clients, WS_HEARTBEAT_SECS={HEARTBEAT_SECS} =="
    );
    if let Err(err) = runtime.block_on(stalled()) {
        println!("aborted: {err}");
    }
}

/// Section 1 for `clients` clients.
async fn idle(clients: usize) -> Result<(), String> {
    let server = Server::service(&[("COLLECT_INTERVAL_MS", "0")])?;
    server.wait_for_connected_clients(0).await?;
    tokio::time::sleep(SETTLE).await;
    let fresh = server.status_kib("VmRSS")?;
    let mut connected = 0;
    let mut after = Vec::new();
    for _burst in 0..2 {
        let held = Clients::open(server.addr, clients).await?;
        server.wait_for_connected_clients(clients).await?;
        // Once the service has given back what the handshakes freed.
        tokio::time::sleep(SETTLE_AFTER_FREEING).await;
        connected = server.status_kib("VmRSS")?;
        let closed_by_server = held.close().await;
        if closed_by_server > 0 {
            return Err(format!("the server closed {closed_by_server} idle clients"));
        }
        server.wait_for_connected_clients(0).await?;
        tokio::time::sleep(SETTLE_AFTER_FREEING).await;
        after.push(server.status_kib("VmRSS")?);
    }
    let mib = |kib: u64| format!("{:.1} MiB", kib as f64 / 1024.0);
    let back = |kib: u64| format!("{} ({:.2}x)", mib(kib), kib as f64 / fresh as f64);
    println!(
        "{clients:>7} {:>10} {:>11} {:>9.2} KiB {:>21} {:>21}",
        mib(fresh),
        mib(connected),
        (connected as f64 - fresh as f64) / clients as f64,
        back(after[0]),
        back(after[1])
    );
    Ok(())
}

/// Section 2: every client sends the first fragment of a message, and
/// answers pings until the server closes.
async fn stalled() -> Result<(), String> {
    let heartbeat = HEARTBEAT_SECS.to_string();
    let server = Server::service(&[
        ("COLLECT_INTERVAL_MS", "0"),
        ("WS_HEARTBEAT_SECS", &heartbeat),
    ])?;
    server.wait_for_connected_clients(0).await?;
    tokio::time::sleep(SETTLE).await;
    let fresh = server.status_kib("VmRSS")?;
    let sockets = connect_all(server.addr, STALLED_CLIENTS).await?;
    server.wait_for_connected_clients(STALLED_CLIENTS).await?;

    let sent = Instant::now();
    let (done, mut all_done) = tokio::sync::mpsc::unbounded_channel();
    let clients: Vec<_> = sockets
        .into_iter()
        .map(|mut socket| {
            let done = done.clone();
            tokio::spawn(async move {
                let first = vec![b'x'; MAX_MESSAGE_BYTES - 1];
                let fragment = Frame::message(first, OpCode::Data(Data::Text), false);
                let part = async {
                    socket
                        .send(Message::Frame(fragment))
                        .await
                        .map_err(|err| err.to_string())?;
                    wait_until_read(&mut socket).await
                };
                let _ = done.send(part.await);
                // Reads, answering pings, until the server closes.
                let mut code = None;
                while let Some(Ok(message)) = socket.next().await {
                    if let Message::Close(Some(frame)) = message {
                        code = Some(frame.code);
                    }
                }
                code
            })
        })
        .collect();
    for _ in 0..STALLED_CLIENTS {
        all_done.recv().await.ok_or("a client ended early")??;
    }
    tokio::time::sleep(SETTLE).await;
    let held = server.status_kib("VmRSS")?;
    let per_client = (held as f64 - fresh as f64) / STALLED_CLIENTS as f64;
    println!("fresh {fresh} KiB, held {held} KiB: {per_client:.2} KiB per client");
    let mut policy = 0;
    for client in clients {
        let code = tokio::time::timeout(Duration::from_secs(60), client)
            .await
            .map_err(|_| "a stalled client was never closed")?;
        policy += usize::from(code.map_err(|err| err.to_string())? == Some(CloseCode::Policy));
    }
    println!(
        "{policy} of {STALLED_CLIENTS} closed with 1008, all within {:.1} s of their fragment \
         (two heartbeats: {} s)",
        sent.elapsed().as_secs_f64(),
        2 * HEARTBEAT_SECS
    );
    Ok(())
}
