//! One websocket client that sends as fast as it can, and what it costs a
//! server's other clients: keep-alive load on `GET /some` alone, then beside
//! the flood, with its throughput and latency; for the service, the slowest
//! answer of `GET /healthz` on its `METRICS_ADDR` listener, polled all
//! through the flood; and what the server wrote to stdout meanwhile.
//!
//! The flooding client sends 1-byte masked text frames (7 bytes each),
//! written [`BLOCK_MESSAGES`] at a time underneath tungstenite, from a
//! thread and runtime of its own so that its large writes never hold up the
//! load's requests. It stops after the block it is writing when told, so
//! the messages it sent are known exactly, then waits for the pong that says
//! the server has read them all. Every server's stdout is a pipe that this
//! process reads and counts, as a log collector would.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::sync::oneshot;

use super::PATIENCE;
use super::contenders::Contender;
use super::http_client::Connection;
use super::load::{Slice, load};
use super::server::{SETTLE, Server, WrittenSoFar};
use super::websocket_clients::{connect, wait_until_read};
use super::websocket_messages::masked_frames;

/// Messages per write of the flooding client: 917,504 bytes of 7-byte
/// frames.
pub const BLOCK_MESSAGES: usize = 1 << 17;

/// How often `/healthz` is polled during the flood, each time over a new
/// connection, as an orchestrator's probe does.
const PROBE_EVERY: Duration = Duration::from_millis(50);

/// Load before the measured load alone, not counted: connections, caches
/// and allocators warmed up.
const WARM_UP: Duration = Duration::from_millis(500);

/// How long the flood runs before the load beside it starts, so the load
/// meets a flood in full flow.
const HEAD_START: Duration = Duration::from_millis(500);

/// The counter the service keeps of the websocket messages it has read.
const MESSAGES_COUNTER: &str = "websocket_messages_received_total";

/// The load on `GET /some`: `connections` keep-alive connections from this
/// process's thread, each for `duration` alone and then beside the flood.
#[derive(Debug, Clone, Copy)]
pub struct FloodPlan {
    pub connections: usize,
    pub duration: Duration,
}

/// Measures each of `contenders` in turn as [`FloodPlan`] says and prints
/// two tables: the load alone and beside the flood, and the flood itself.
pub async fn one_flooding_client(contenders: &[Contender], plan: FloodPlan) {
    println!(
        "\n== one flooding client: GET /some over {} keep-alive connections for {:?}, alone, then \
         beside one websocket client sending 1 B text messages without pause, {BLOCK_MESSAGES} \
         frames of 7 B per write ==",
        plan.connections, plan.duration
    );
    let mut measured = Vec::new();
    for contender in contenders {
        // The service serves `/healthz` there; a peer ignores the setting.
        let mut command = contender.command();
        command.env("METRICS_ADDR", "127.0.0.1:0");
        let result = async {
            let server = Server::start_counting_stdout(command)?;
            flooded(&server, plan).await
        };
        measured.push((contender.name, result.await));
    }

    println!(
        "{:>28}  {:>11}  {:>8}  {:>8}  {:>13}  {:>8}  {:>8}  {:>6}",
        "server", "alone req/s", "p99 ms", "max ms", "beside req/s", "p99 ms", "max ms", "kept"
    );
    for (name, result) in &mut measured {
        match result {
            Ok(flooded) => {
                let [alone, beside] = [&mut flooded.alone, &mut flooded.beside].map(|figures| {
                    (
                        figures.per_second(),
                        figures.slice.latency_quantile(0.99).as_secs_f64() * 1e3,
                        figures.slice.latency_quantile(1.0).as_secs_f64() * 1e3,
                    )
                });
                println!(
                    "{name:>28}  {:>11.0}  {:>8.2}  {:>8.2}  {:>13.0}  {:>8.2}  {:>8.2}  {:>5.0} %",
                    alone.0,
                    alone.1,
                    alone.2,
                    beside.0,
                    beside.1,
                    beside.2,
                    beside.0 / alone.0 * 100.0
                );
            }
            Err(err) => println!("{name:>28}  aborted: {err}"),
        }
    }

    println!(
        "\n{:>28}  {:>13}  {:>10}  {:>17}  {:>10}  {:>12}  {:>23}",
        "the flood, server",
        "messages sent",
        "read msg/s",
        "counted by server",
        "stdout MB",
        "stdout lines",
        "/healthz slowest (polls)"
    );
    for (name, result) in &measured {
        let Ok(flooded) = result else { continue };
        let sent = flooded.sent;
        let counted = flooded
            .counted
            .map_or("–".to_owned(), |counted| format!("{counted:.0}"));
        let healthz = flooded.healthz.map_or("–".to_owned(), |probes| {
            format!(
                "{:.1} ms ({})",
                probes.slowest.as_secs_f64() * 1e3,
                probes.polls
            )
        });
        println!(
            "{name:>28}  {:>13}  {:>10.0}  {counted:>17}  {:>10.1}  {:>12}  {healthz:>23}",
            sent.messages,
            sent.messages as f64 / sent.until_read.as_secs_f64(),
            flooded.stdout.bytes as f64 / 1e6,
            flooded.stdout.lines,
        );
    }
}

/// What one server did with the load alone and beside the flood.
struct Flooded {
    alone: Figures,
    beside: Figures,
    sent: Sent,
    /// The server's own count of the messages it read, if it keeps one.
    counted: Option<f64>,
    /// Written to stdout from the flood's start until it had been read.
    stdout: WrittenSoFar,
    /// With `METRICS_ADDR`, which only the service has.
    healthz: Option<Probes>,
}

/// One [`load`] and how long it took.
struct Figures {
    slice: Slice,
    wall: Duration,
}

impl Figures {
    fn per_second(&self) -> f64 {
        self.slice.served as f64 / self.wall.as_secs_f64()
    }
}

async fn flooded(server: &Server, plan: FloodPlan) -> Result<Flooded, String> {
    let mut pool = Vec::new();
    for _ in 0..plan.connections {
        pool.push(Connection::open(server.addr).await?);
    }
    let warm = timed_load(server, pool, WARM_UP).await?;
    let mut alone = timed_load(server, warm.slice.pool, plan.duration).await?;
    let pool = std::mem::take(&mut alone.slice.pool);

    let stdout_before = server.stdout_written().unwrap_or_default();
    let flood = Flood::start(server.addr).await?;
    let stop_probes = Arc::new(AtomicBool::new(false));
    let probes = server
        .metrics_addr
        .map(|addr| tokio::spawn(probe_healthz(addr, Arc::clone(&stop_probes))));
    tokio::time::sleep(HEAD_START).await;
    let beside = timed_load(server, pool, plan.duration).await;
    stop_probes.store(true, Ordering::Relaxed);
    let sent = flood.stop().await?;
    let healthz = match probes {
        Some(probes) => Some(probes.await.expect("the probes' task")?),
        None => None,
    };
    // The service writes its log from a queue of its own: let it drain.
    tokio::time::sleep(SETTLE).await;
    Ok(Flooded {
        alone,
        beside: beside?,
        sent,
        counted: server.counter_total(MESSAGES_COUNTER).await?,
        stdout: server
            .stdout_written()
            .unwrap_or_default()
            .since(stdout_before),
        healthz,
    })
}

/// `GET /some` on `server` over `pool` for `duration`, timed; an error if
/// the last answers take over [`PATIENCE`] more.
async fn timed_load(
    server: &Server,
    pool: Vec<Connection>,
    duration: Duration,
) -> Result<Figures, String> {
    let started = Instant::now();
    let request = b"GET /some HTTP/1.1\r\nHost: bench\r\n\r\n";
    let slice = tokio::time::timeout(
        duration + PATIENCE,
        load(pool, server.addr, request, duration),
    )
    .await
    .map_err(|_| format!("GET /some: no answer in {PATIENCE:?}"))??;
    Ok(Figures {
        slice,
        wall: started.elapsed(),
    })
}

/// The slowest of the polls of `/healthz` and how many there were.
#[derive(Debug, Clone, Copy)]
struct Probes {
    polls: usize,
    slowest: Duration,
}

/// Polls `GET /healthz` on `addr` every [`PROBE_EVERY`], each time over a
/// new connection, until `stop`; each poll's time runs from the connect to
/// the answer. Any answer but 200, or none within [`PATIENCE`], is an error.
async fn probe_healthz(addr: SocketAddr, stop: Arc<AtomicBool>) -> Result<Probes, String> {
    let mut probes = Probes {
        polls: 0,
        slowest: Duration::ZERO,
    };
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        let poll = async {
            let mut connection = Connection::open(addr).await?;
            let (status, _) = connection
                .exchange(b"GET /healthz HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
                .await?;
            Ok::<_, String>(status)
        };
        match tokio::time::timeout(PATIENCE, poll).await {
            Ok(Ok(200)) => {}
            Ok(Ok(status)) => return Err(format!("GET /healthz: {status}")),
            Ok(Err(err)) => return Err(format!("GET /healthz: {err}")),
            Err(_) => return Err(format!("GET /healthz: no answer in {PATIENCE:?}")),
        }
        probes.polls += 1;
        probes.slowest = probes.slowest.max(started.elapsed());
        tokio::time::sleep(PROBE_EVERY).await;
    }
    Ok(probes)
}

/// A flooding client, running until [`Flood::stop`].
struct Flood {
    stop: Arc<AtomicBool>,
    sent: oneshot::Receiver<Result<Sent, String>>,
}

/// What a [`Flood`] sent, and the time from its first byte to the pong that
/// says the server had read its last message.
#[derive(Debug, Clone, Copy)]
struct Sent {
    messages: u64,
    until_read: Duration,
}

impl Flood {
    /// Connects a client to `/ws/flood` on `addr` and returns once it is
    /// connected and writing.
    async fn start(addr: SocketAddr) -> Result<Flood, String> {
        let stop = Arc::new(AtomicBool::new(false));
        let (connected, is_connected) = oneshot::channel();
        let (sent, has_sent) = oneshot::channel();
        let stopped = Arc::clone(&stop);
        std::thread::Builder::new()
            .name("flood".to_owned())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                let result = match runtime {
                    Ok(runtime) => runtime.block_on(flood(addr, connected, &stopped)),
                    Err(err) => Err(format!("the flood's runtime: {err}")),
                };
                // The receiver is gone only if the bench gave up on it.
                let _ = sent.send(result);
            })
            .map_err(|err| format!("the flood's thread: {err}"))?;
        match is_connected.await {
            Ok(()) => Ok(Flood {
                stop,
                sent: has_sent,
            }),
            // The flood ended before it was connected: say why.
            Err(_) => Err(match has_sent.await {
                Ok(Err(err)) => err,
                _ => "the flood ended before it connected".to_owned(),
            }),
        }
    }

    /// Stops the flood after the block it is writing and returns what it
    /// sent, once the server has read it all.
    async fn stop(self) -> Result<Sent, String> {
        self.stop.store(true, Ordering::Relaxed);
        self.sent
            .await
            .unwrap_or_else(|_| Err("the flood's thread ended without a word".to_owned()))
    }
}

/// The flooding client: connects, says so on `connected`, writes blocks of
/// [`BLOCK_MESSAGES`] frames until `stop`, then waits until the server has
/// read them all.
async fn flood(
    addr: SocketAddr,
    connected: oneshot::Sender<()>,
    stop: &AtomicBool,
) -> Result<Sent, String> {
    let block = masked_frames(1, true, BLOCK_MESSAGES);
    let mut socket = connect(addr, "/ws/flood").await?;
    let _ = connected.send(());
    let started = Instant::now();
    let mut blocks = 0;
    while !stop.load(Ordering::Relaxed) {
        // Underneath tungstenite, which would write message by message.
        let write = socket.get_mut().write_all(&block);
        match tokio::time::timeout(PATIENCE, write).await {
            Ok(Ok(())) => blocks += 1,
            Ok(Err(err)) => return Err(format!("the flood's write: {err}")),
            Err(_) => return Err(format!("the flood's write took over {PATIENCE:?}")),
        }
    }
    tokio::time::timeout(PATIENCE, wait_until_read(&mut socket))
        .await
        .map_err(|_| "the server had not read the flood in time".to_owned())??;
    Ok(Sent {
        messages: blocks * BLOCK_MESSAGES as u64,
        until_read: started.elapsed(),
    })
}
