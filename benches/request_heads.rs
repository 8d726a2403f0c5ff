//! What slow request heads pin: `cargo bench --bench request_heads`.
//!
//! 1,024 connections each send a request head that never ends and then hold
//! still, the cheapest way for one client to make the server buffer bytes.
//! Each server is measured with two sizes of head: just under the service's
//! 16 KiB limit, and just under hyper's default ceiling (about 400 KiB).
//! Side by side in one run:
//!
//! - the service, whose read buffer holds at most 16 KiB (a larger head
//!   gets 431 and the connection closes);
//! - a warp route served by `warp::serve`, with hyper's default buffer, as
//!   the service was before.
//!
//! Each server is a separate process; its RSS is read from `/proc` before
//! the connections and once it has stopped growing with them.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use support::machine::{print_machine, raise_fd_limit};
use support::server::{Server, serve};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use warp::Filter;

/// Make this executable serve the route with hyper's defaults instead of
/// benchmarking.
const SERVE_DEFAULTS: &str = "--serve-hyper-defaults";

/// Connections per measurement: the service's default `HTTP_MAX_CONNECTIONS`.
const CONNECTIONS: usize = 1024;

/// The two heads: just under the service's limit, and just under hyper's
/// default ceiling (8 KiB + 100 × 4 KiB).
const HEADS: [(&str, usize); 2] = [("15.5 KiB", 15_872), ("390 KiB", 390 * 1024)];

/// How long RSS must stay put to count as settled.
const SETTLED: Duration = Duration::from_secs(1);

fn main() {
    if std::env::args().any(|arg| arg == SERVE_DEFAULTS) {
        let some = warp::path!("some").and(warp::get()).map(|| "hello!");
        serve(|listener| warp::serve(some).incoming(listener).run());
        return;
    }
    print_machine();
    raise_fd_limit();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("start the client's runtime");

    println!("\n== {CONNECTIONS} slow request heads: RSS of the server ==");
    println!(
        "{:>28} {:>10} {:>12} {:>12} {:>14} {:>8}",
        "server", "head", "RSS before", "RSS loaded", "per connection", "refused"
    );
    let this_benchmark = std::env::current_exe().expect("path of this benchmark");
    for (head_name, head_bytes) in HEADS {
        let servers = [
            (
                "service (16 KiB buffer)",
                Server::service(&[
                    ("COLLECT_INTERVAL_MS", "0"),
                    // Longer than the measurement: the heads are not cut.
                    ("HTTP_IDLE_TIMEOUT_SECS", "600"),
                ]),
            ),
            ("warp::serve (hyper default)", {
                let mut command = Command::new(&this_benchmark);
                command.arg(SERVE_DEFAULTS);
                Server::start(command)
            }),
        ];
        for (name, server) in servers {
            let server = server.expect("start a server");
            let before = server.status_kib("VmRSS").expect("RSS");
            let connections = runtime.block_on(slow_heads(&server, head_bytes));
            let loaded = settled_rss(&server);
            let refused = connections.iter().filter(|c| answered(c)).count();
            println!(
                "{name:>28} {head_name:>10} {:>8.1} MiB {:>8.1} MiB {:>10.1} KiB {refused:>8}",
                before as f64 / 1024.0,
                loaded as f64 / 1024.0,
                loaded.saturating_sub(before) as f64 / CONNECTIONS as f64,
            );
            drop(connections);
        }
    }
}

/// Opens [`CONNECTIONS`] connections to `server` and sends each a request
/// head of `head_bytes` without its end. Returns the connections, to be
/// held.
async fn slow_heads(server: &Server, head_bytes: usize) -> Vec<TcpStream> {
    let start = b"GET /some HTTP/1.1\r\nHost: bench\r\nX-Padding: ";
    let mut head = start.to_vec();
    head.resize(head_bytes, b'a');
    let mut connections = Vec::new();
    for _ in 0..CONNECTIONS {
        let mut stream = TcpStream::connect(server.addr).await.expect("connect");
        // A server that refuses the head closes the connection, and the
        // rest of the write may fail; that is counted by `answered`.
        let _ = stream.write_all(&head).await;
        connections.push(stream);
    }
    connections
}

/// Whether the server has answered (a 431) or closed `connection`, rather
/// than still waiting for the end of its head.
fn answered(connection: &TcpStream) -> bool {
    let mut byte = [0u8; 1];
    !matches!(connection.try_read(&mut byte), Err(err) if err.kind() == std::io::ErrorKind::WouldBlock)
}

/// The server's RSS in KiB once it has stopped changing for [`SETTLED`]:
/// the server reads the heads a moment after the client has sent them.
fn settled_rss(server: &Server) -> u64 {
    let mut last = server.status_kib("VmRSS").expect("RSS");
    let mut since = Instant::now();
    while since.elapsed() < SETTLED {
        std::thread::sleep(Duration::from_millis(100));
        let now = server.status_kib("VmRSS").expect("RSS");
        if now != last {
            last = now;
            since = Instant::now();
        }
    }
    last
}
