//! What hostile websocket clients cost: resident memory per client for each
//! pattern a client can use to pin memory, beside the figure for an idle
//! client measured in the same run.
//!
//! Each pattern gets a fresh release build of the server (on `127.0.0.1:0`,
//! `COLLECT_INTERVAL_MS=0`, `WS_HEARTBEAT_SECS=5`, other settings at their
//! defaults, so the message limit is 64 KiB) and [`CLIENTS`] clients that
//! answer pings:
//!
//! - **idle**: short ids, nothing sent: the reference;
//! - **128-byte ids**: the longest id accepted, nothing sent;
//! - **one max-size message**: each client sends one 64 KiB message, the
//!   largest accepted, and then stays idle; read once the service has had
//!   time to trim its heap, and also the peak (`VmHWM`) while they arrive;
//! - **stalled fragment**: each client sends the first fragment of a
//!   message, 64 KiB less one byte, and never the rest, answering pings;
//!   read while they are held, then the time until the server has closed
//!   all of them with 1008 (two heartbeats is the promise).
//!
//! Also the server's CPU time per max-size message. RSS per client is
//! (RSS with the clients - RSS of the fresh server) / clients.
//!
//! Run with `cargo bench --bench hostile`.

mod support;

use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt, TryStreamExt, stream};
use rust_web_prometheus_example::memory::CHECK_EVERY;
use support::PATIENCE;
use support::machine::{print_machine, raise_fd_limit};
use support::server::{SETTLE, SETTLE_AFTER_FREEING, Server};
use support::websocket_clients::{CONNECT_CONCURRENCY, connect, wait_until_read};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};

/// Clients per pattern.
const CLIENTS: usize = 1_000;

/// The default `WS_MAX_MESSAGE_BYTES`.
const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// Short, so a stalled message is given up within the run.
const HEARTBEAT_SECS: u64 = 5;

/// What each client does once connected.
#[derive(Clone, Copy, PartialEq)]
enum Pattern {
    Idle,
    LongIds,
    MaxMessage,
    StalledFragment,
}

impl Pattern {
    fn name(self) -> &'static str {
        match self {
            Pattern::Idle => "idle",
            Pattern::LongIds => "128-byte ids",
            Pattern::MaxMessage => "one 64 KiB message, then idle",
            Pattern::StalledFragment => "stalled 64 KiB first fragment",
        }
    }
}

/// One pattern's figures.
struct Figures {
    pattern: Pattern,
    baseline_kib: u64,
    held_kib: u64,
    peak_kib: u64,
    /// CPU time of the server while the clients did their part.
    cpu: Duration,
    /// For the stalled fragment: how long until the server closed every
    /// client, and with which codes.
    closed: Option<(Duration, Vec<Option<CloseCode>>)>,
}

impl Figures {
    fn kib_per_client(&self, kib: u64) -> f64 {
        (kib as f64 - self.baseline_kib as f64) / CLIENTS as f64
    }
}

fn main() {
    print_machine();
    if raise_fd_limit() < (CLIENTS + 64) as u64 {
        println!("skipped: needs {} file descriptors", CLIENTS + 64);
        return;
    }
    println!("{CLIENTS} clients per pattern, WS_HEARTBEAT_SECS={HEARTBEAT_SECS}");
    let runtime = tokio::runtime::Runtime::new().expect("start the tokio runtime");
    let mut all = Vec::new();
    for pattern in [
        Pattern::Idle,
        Pattern::LongIds,
        Pattern::MaxMessage,
        Pattern::StalledFragment,
    ] {
        match runtime.block_on(measure(pattern)) {
            Ok(figures) => all.push(figures),
            Err(err) => println!("{}: aborted: {err}", pattern.name()),
        }
    }
    print_table(&all);
}

/// Runs one pattern against a fresh server.
async fn measure(pattern: Pattern) -> Result<Figures, String> {
    let heartbeat = HEARTBEAT_SECS.to_string();
    let server = Server::service(&[
        ("COLLECT_INTERVAL_MS", "0"),
        ("WS_HEARTBEAT_SECS", &heartbeat),
    ])?;
    server.wait_for_connected_clients(0).await?;
    tokio::time::sleep(SETTLE).await;
    let baseline_kib = server.status_kib("VmRSS")?;

    let (stop, stopping) = watch::channel(());
    let (done_tx, mut done) = mpsc::unbounded_channel();
    let clients: Vec<_> = stream::iter(0..CLIENTS)
        .map(|i| {
            let addr = server.addr;
            async move { connect(addr, &format!("/ws/{}", id(pattern, i))).await }
        })
        .buffer_unordered(CONNECT_CONCURRENCY)
        .try_collect()
        .await?;
    server.wait_for_connected_clients(CLIENTS).await?;

    let cpu_before = server.cpu_snapshot();
    let started = Instant::now();
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|socket| {
            let done = done_tx.clone();
            tokio::spawn(play(socket, pattern, done, stopping.clone()))
        })
        .collect();
    for _ in 0..CLIENTS {
        done.recv().await.ok_or("a client task ended early")??;
    }
    let cpu = server.cpu_since(&cpu_before);
    tokio::time::sleep(SETTLE).await;
    let peak_kib = server.status_kib("VmHWM")?;
    if pattern == Pattern::MaxMessage {
        // Freed buffers go back to the system at the service's next check.
        tokio::time::sleep(SETTLE_AFTER_FREEING).await;
    }
    let held_kib = server.status_kib("VmRSS")?;
    println!(
        "{}: base {baseline_kib} KiB, held {held_kib} KiB, peak {peak_kib} KiB",
        pattern.name()
    );

    let closed = if pattern == Pattern::StalledFragment {
        let mut codes = Vec::new();
        for task in tasks {
            let code = tokio::time::timeout(PATIENCE, task)
                .await
                .map_err(|_| "a stalled client was never closed")?
                .map_err(|err| err.to_string())?;
            codes.push(code);
        }
        Some((started.elapsed(), codes))
    } else {
        drop(stop);
        for task in tasks {
            let _ = task.await;
        }
        None
    };
    Ok(Figures {
        pattern,
        baseline_kib,
        held_kib,
        peak_kib,
        cpu,
        closed,
    })
}

/// Client `i`'s id: 128 bytes for the long-id pattern.
fn id(pattern: Pattern, i: usize) -> String {
    match pattern {
        Pattern::LongIds => format!("{i:0>128}"),
        _ => format!("hostile-{i}"),
    }
}

/// Does the pattern's part, reports on `done` once the server has read it,
/// then reads (answering pings) until stopped or closed. Returns the code
/// of the server's close frame, if it sent one.
async fn play(
    mut socket: WebSocketStream<TcpStream>,
    pattern: Pattern,
    done: mpsc::UnboundedSender<Result<(), String>>,
    mut stopping: watch::Receiver<()>,
) -> Option<CloseCode> {
    let sent = match pattern {
        Pattern::Idle | Pattern::LongIds => None,
        Pattern::MaxMessage => Some(Message::binary(vec![7u8; MAX_MESSAGE_BYTES])),
        Pattern::StalledFragment => {
            let first = vec![b'x'; MAX_MESSAGE_BYTES - 1];
            let fragment = Frame::message(first, OpCode::Data(Data::Text), false);
            Some(Message::Frame(fragment))
        }
    };
    let mut code = None;
    let part = async {
        if let Some(message) = sent {
            socket.send(message).await.map_err(|e| e.to_string())?;
            wait_until_read(&mut socket).await?;
        }
        Ok(())
    };
    let _ = done.send(part.await);
    loop {
        tokio::select! {
            message = socket.next() => match message {
                Some(Ok(Message::Close(Some(frame)))) => code = Some(frame.code),
                Some(Ok(_)) => {}
                _ => return code,
            },
            _ = stopping.changed() => break,
        }
    }
    if socket.close(None).await.is_ok() {
        while let Some(Ok(_)) = socket.next().await {}
    }
    code
}

fn print_table(all: &[Figures]) {
    let Some(idle) = all.iter().find(|figures| figures.pattern == Pattern::Idle) else {
        println!("no idle figure to compare with");
        return;
    };
    let idle_per_client = idle.kib_per_client(idle.held_kib);
    println!();
    println!(
        "{:<31} {:>9} {:>9} {:>10} {:>8} {:>14} {:>9}",
        "pattern", "base KiB", "held KiB", "KiB/client", "vs idle", "peak KiB/client", "CPU ms"
    );
    for figures in all {
        let per_client = figures.kib_per_client(figures.held_kib);
        println!(
            "{:<31} {:>9} {:>9} {:>10.1} {:>7.2}x {:>15.1} {:>9.0}",
            figures.pattern.name(),
            figures.baseline_kib,
            figures.held_kib,
            per_client,
            per_client / idle_per_client,
            figures.kib_per_client(figures.peak_kib),
            figures.cpu.as_secs_f64() * 1e3,
        );
    }
    for figures in all {
        if let Some((elapsed, codes)) = &figures.closed {
            let policy = codes
                .iter()
                .filter(|code| **code == Some(CloseCode::Policy))
                .count();
            println!(
                "\n{}: {policy} of {} closed with 1008, all within {:.1}s of their fragment \
                 (two heartbeats: {}s)",
                figures.pattern.name(),
                codes.len(),
                elapsed.as_secs_f64(),
                2 * HEARTBEAT_SECS
            );
        }
        if figures.pattern == Pattern::MaxMessage {
            println!(
                "\n{}: {:.0} us of server CPU per message",
                figures.pattern.name(),
                figures.cpu.as_secs_f64() * 1e6 / CLIENTS as f64
            );
        }
    }
    println!(
        "\nKiB/client = (held - base) / {CLIENTS}, RSS (VmRSS) with the clients held; \
         peak = VmHWM. The 64 KiB message is read after the service's heap trim \
         (every {}s after memory is freed).",
        CHECK_EVERY.as_secs()
    );
}
