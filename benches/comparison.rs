//! The service against its peers, each as its own process on `127.0.0.1:0`:
//! `cargo bench --bench comparison` (a few minutes). See docs/comparison.md
//! for the method, the figures and what each peer measures.
//!
//! The peers are small servers in `benches/peers/`, a Cargo project of its
//! own that this bench builds when it starts (release, with its committed
//! `Cargo.lock`, into `target/peers/`), so `cargo test` never compiles them.
//! Six measurements, each side by side in the same run:
//!
//! 1. CPU per request: keep-alive load on `GET /some`, moved from server to
//!    server in short slices and rotating order, each server's CPU time read
//!    from `/proc`; reported relative to the bare hyper server (the floor),
//!    over all requests and as the median and quartiles of the rounds. A
//!    second floor server shows how much of a difference is noise.
//! 2. Scrapes: fresh servers, exactly [`SCRAPE_AFTER`] requests on `/some`
//!    each (and their `incoming_requests` checked against it), then
//!    `/metrics` in plain text, taken in turn: time per scrape, samples in
//!    the exposition and time per sample.
//! 3. Websocket memory: a fresh server each, [`WEBSOCKET_CLIENTS`] idle
//!    clients, RSS per client; then each sends one [`LARGE_MESSAGE_BYTES`]
//!    message, and RSS per client again once the service would have given
//!    back what it freed (it checks every 5 s).
//! 4. Server CPU per websocket message, at three sizes: one connection per
//!    server, a burst of masked frames (100 MB or 200,000 messages)
//!    and a ping whose pong says the server has read them all;
//!    [`MESSAGE_ROUNDS`] rounds in rotating order, medians. Every server
//!    prints (the service logs) one line per message; the service is also
//!    measured at `RUST_LOG=warn`, without its line.
//! 5. One flooding client: keep-alive load on `GET /some` alone, then beside
//!    one websocket client sending 1-byte messages without pause; the
//!    load's throughput and latency, the service's `/healthz` on
//!    `METRICS_ADDR`, the messages sent and what the server wrote to stdout.
//! 6. Steady clients: [`STEADY`]'s clients each sending a small message at
//!    a steady pace; server CPU per message and RSS at the end.
//!
//! The service runs with `COLLECT_INTERVAL_MS=0`: the peers have no
//! simulated collector, and its series would make the scrapes unequal.
//! Every server's stdout goes to `/dev/null`, except in section 5, where
//! this process reads and counts it through a pipe.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use support::contenders::{Contender, peer, service};
use support::http_client::Connection;
use support::load::{Schedule, side_by_side};
use support::machine::{FD_MARGIN, print_date, print_machine, raise_fd_limit};
use support::peers;
use support::server::Server;
use support::websocket_clients::connect;
use support::websocket_flood::{FloodPlan, one_flooding_client};
use support::websocket_messages::{Burst, MemoryPerClient, cpu_per_message, memory_per_client};
use support::websocket_steady::{SteadyPlan, steady_clients};

/// Load on `/some`: as many connections as `wrk -c32`, from one thread.
const SCHEDULE: Schedule = Schedule {
    connections: 32,
    rounds: 20,
    slice: Duration::from_millis(400),
};

/// Requests on `/some` before the scrapes, and scrapes per server.
const SCRAPE_AFTER: usize = 10_000;
const SCRAPES: usize = 300;

/// Idle websocket clients per server, and the message each then sends.
const WEBSOCKET_CLIENTS: usize = 1_000;
const LARGE_MESSAGE_BYTES: usize = 65_000;

/// Rounds of bursts of websocket messages, and their sizes: 16 B text,
/// 2,000 B and 60,000 B binary.
const MESSAGE_ROUNDS: usize = 5;
const MESSAGE_SIZES: [(&str, usize, bool); 3] = [
    ("16 B text", 16, true),
    ("2,000 B binary", 2_000, false),
    ("60,000 B binary", 60_000, false),
];

/// Section 5: the load beside one flooding client, as `wrk -t1 -c8`.
const FLOOD: FloodPlan = FloodPlan {
    connections: 8,
    duration: Duration::from_secs(5),
};

/// Section 6: clients each sending a 100 B text message every 100 ms.
const STEADY: SteadyPlan = SteadyPlan {
    clients: 2_000,
    message_bytes: 100,
    every: Duration::from_millis(100),
    duration: Duration::from_secs(20),
};

const SERVICE: Contender = service("this service", &[]);
const SERVICE_WARN: Contender = service("this service, RUST_LOG=warn", &[("RUST_LOG", "warn")]);
const AXUM: Contender = peer("axum + axum-prometheus", "axum");
const ACTIX: Contender = peer("actix-web + actix-web-prom", "actix");

/// Section 1: the instrumented servers and the bare ones.
const HTTP: [Contender; 7] = [
    SERVICE,
    AXUM,
    ACTIX,
    peer("bare warp, hyper HTTP/1.1", "warp-hyper"),
    peer("bare warp, warp::serve", "warp-serve"),
    peer("bare hyper (the floor)", "hyper"),
    peer("bare hyper again", "hyper"),
];
const FLOOR: usize = 5;

/// Section 2: the servers with metrics.
const INSTRUMENTED: [Contender; 3] = [SERVICE, AXUM, ACTIX];

/// Sections 3 and 4: the servers with websockets, the service first at its
/// default `RUST_LOG=info`, then at `warn`; the peers print a line per
/// message as the service logs one. Sections 5 and 6 take the first four:
/// the service and the peers with metrics.
const WEBSOCKETS: [Contender; 7] = [
    SERVICE,
    SERVICE_WARN,
    peer("axum 0.8 (tungstenite)", "axum"),
    peer("actix-ws 0.4", "actix"),
    peer("fastwebsockets 0.10", "fastwebsockets"),
    peer("soketto 0.8", "soketto"),
    peer("yawc 0.5", "yawc"),
];

fn main() {
    if let Err(err) = peers::build() {
        eprintln!("error: {err}");
        std::process::exit(1);
    }
    print_machine();
    print_date();
    // Before the first server starts, so every server inherits the limit.
    let fd_limit = raise_fd_limit();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("start the load generator's runtime");
    let started = Instant::now();
    runtime.block_on(cpu_per_request());
    runtime.block_on(scrapes());
    if fd_limit < (WEBSOCKET_CLIENTS + FD_MARGIN) as u64 {
        println!(
            "\nwebsocket memory: skipped: {WEBSOCKET_CLIENTS} clients need about {} file \
             descriptors per process, the limit is {fd_limit} (ulimit -Hn)",
            WEBSOCKET_CLIENTS + FD_MARGIN
        );
    } else {
        runtime.block_on(websocket_memory());
    }
    if let Err(err) = runtime.block_on(cpu_per_message_received()) {
        println!("CPU per websocket message: aborted: {err}");
    }
    runtime.block_on(one_flooding_client(&WEBSOCKETS[..4], FLOOD));
    if fd_limit < (STEADY.clients + FD_MARGIN) as u64 {
        println!(
            "\nsteady clients: skipped: {} clients need about {} file descriptors per process, \
             the limit is {fd_limit} (ulimit -Hn)",
            STEADY.clients,
            STEADY.clients + FD_MARGIN
        );
    } else {
        runtime.block_on(steady_clients(&WEBSOCKETS[..4], STEADY));
    }
    println!("\nall measured in {:.0?}", started.elapsed());
}

// ===== 1. CPU per request =====

async fn cpu_per_request() {
    println!("\n== CPU per request on GET /some, relative to the bare hyper server ==");
    println!(
        "{} keep-alive connections per server; {} rounds, each loading every server for {:?} in turn",
        SCHEDULE.connections, SCHEDULE.rounds, SCHEDULE.slice
    );
    let servers: Vec<Server> = HTTP
        .iter()
        .map(|contender| contender.start().expect("start a server"))
        .collect();
    let measured: Vec<&Server> = servers.iter().collect();
    let request = b"GET /some HTTP/1.1\r\nHost: bench\r\n\r\n";
    let rounds = side_by_side(&measured, request, SCHEDULE).await;

    let floor = rounds.total(FLOOR);
    println!(
        "{:>28}  {:>10}  {:>9}  {:>24}  {:>10}",
        "server", "CPU µs/req", "vs floor", "rounds: median (IQR)", "reconnects"
    );
    for (which, contender) in HTTP.iter().enumerate() {
        let total = rounds.total(which);
        let [lower, median, upper] = rounds.cpu_ratio_quartiles(which, FLOOR);
        println!(
            "{:>28}  {:>10.2}  {:>9.3}  {median:>7.3} ({lower:.3}..{upper:.3})  {:>10}",
            contender.name,
            total.cpu_per_request() * 1e6,
            total.cpu_per_request() / floor.cpu_per_request(),
            total.reconnects,
        );
    }
}

// ===== 2. Scrapes =====

async fn scrapes() {
    println!(
        "\n== GET /metrics in plain text after {SCRAPE_AFTER} requests, {SCRAPES} scrapes each, in turn =="
    );
    let mut servers = Vec::new();
    for contender in &INSTRUMENTED {
        let server = contender.start().expect("start a server");
        send_exactly(server.addr, SCRAPE_AFTER).await;
        let mut connection = Connection::open(server.addr).await.expect("connect");
        // The first scrape creates the `/metrics` route's own series.
        let first = scrape(&mut connection).await;
        let counted = first
            .lines()
            .find_map(|line| line.strip_prefix("incoming_requests "))
            .and_then(|value| value.trim().parse::<f64>().ok());
        assert_eq!(
            counted,
            Some(SCRAPE_AFTER as f64),
            "{}: incoming_requests after {SCRAPE_AFTER} requests",
            contender.name
        );
        servers.push((contender, server, connection));
    }

    let mut times = vec![Vec::new(); servers.len()];
    let mut cpu = vec![Duration::ZERO; servers.len()];
    let mut last = vec![String::new(); servers.len()];
    for _ in 0..SCRAPES {
        for (which, (_, server, connection)) in servers.iter_mut().enumerate() {
            let (exposition, wall, server_cpu) = server.timed(scrape(connection)).await;
            last[which] = exposition;
            times[which].push(wall);
            cpu[which] += server_cpu;
        }
    }

    println!(
        "{:>28}  {:>7}  {:>6}  {:>15}  {:>12}  {:>17}",
        "server", "samples", "bytes", "median scrape", "per sample", "server CPU/scrape"
    );
    for (which, (contender, ..)) in servers.iter().enumerate() {
        let samples = last[which]
            .lines()
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .count();
        times[which].sort();
        let median = times[which][SCRAPES / 2];
        println!(
            "{:>28}  {samples:>7}  {:>6}  {:>12.3} ms  {:>9.2} µs  {:>14.3} ms",
            contender.name,
            last[which].len(),
            median.as_secs_f64() * 1e3,
            median.as_secs_f64() * 1e6 / samples as f64,
            cpu[which].as_secs_f64() * 1e3 / SCRAPES as f64,
        );
    }
}

/// Sends exactly `count` requests to `GET /some` on `addr`, over a few
/// keep-alive connections at once.
async fn send_exactly(addr: SocketAddr, count: usize) {
    const CONNECTIONS: usize = 8;
    let running: Vec<_> = (0..CONNECTIONS)
        .map(|connection| {
            // The first connections take the remainder, one request each.
            let share = count / CONNECTIONS + usize::from(connection < count % CONNECTIONS);
            tokio::spawn(async move {
                let mut connection = Connection::open(addr).await.expect("connect");
                for _ in 0..share {
                    let (status, _) = connection
                        .exchange(b"GET /some HTTP/1.1\r\nHost: bench\r\n\r\n")
                        .await
                        .expect("GET /some");
                    assert_eq!(status, 200, "GET /some");
                }
            })
        })
        .collect();
    for connection in running {
        connection.await.expect("requests on /some");
    }
}

/// One plain-text `GET /metrics`, its body as text.
async fn scrape(connection: &mut Connection) -> String {
    let (status, body) = connection
        .exchange(b"GET /metrics HTTP/1.1\r\nHost: bench\r\n\r\n")
        .await
        .expect("GET /metrics");
    assert_eq!(status, 200, "GET /metrics");
    String::from_utf8(body.to_vec()).expect("a UTF-8 exposition")
}

// ===== 3. Websocket memory =====

async fn websocket_memory() {
    println!(
        "\n== websocket memory: {WEBSOCKET_CLIENTS} idle clients on a fresh server, then one \
         {LARGE_MESSAGE_BYTES} B message from each =="
    );
    println!(
        "{:>28}  {:>9}  {:>16}  {:>29}",
        "server", "fresh KiB", "idle KiB/client", "after the message, KiB/client"
    );
    for contender in WEBSOCKETS
        .iter()
        .filter(|contender| contender.name != SERVICE_WARN.name)
    {
        let measured = async {
            let server = contender.start()?;
            memory_per_client(&server, WEBSOCKET_CLIENTS, LARGE_MESSAGE_BYTES).await
        };
        match measured.await {
            Ok(MemoryPerClient {
                fresh_kib,
                idle_kib,
                after_message_kib,
            }) => println!(
                "{:>28}  {fresh_kib:>9}  {idle_kib:>16.1}  {after_message_kib:>29.1}",
                contender.name
            ),
            Err(err) => println!("{:>28}  aborted: {err}", contender.name),
        }
    }
}

// ===== 4. CPU per websocket message =====

async fn cpu_per_message_received() -> Result<(), String> {
    // 100 MB or 200,000 messages, whichever is fewer: tens of milliseconds
    // of CPU per burst, which dwarf the ping, the reads of `/proc` and the
    // scheduler's noise.
    let bursts: Vec<Burst> = MESSAGE_SIZES
        .iter()
        .map(|&(_, bytes, text)| {
            Burst::new(bytes, text, 100_000_000_usize.div_ceil(bytes).min(200_000))
        })
        .collect();
    let servers: Vec<Server> = WEBSOCKETS
        .iter()
        .map(Contender::start)
        .collect::<Result<_, _>>()?;
    let mut sockets = Vec::new();
    for server in &servers {
        sockets.push(connect(server.addr, "/ws/messages").await?);
    }
    // per_message[size][server], one entry per round.
    let mut per_message = vec![vec![Vec::new(); servers.len()]; bursts.len()];
    for round in 0..MESSAGE_ROUNDS {
        for (size, burst) in bursts.iter().enumerate() {
            for turn in 0..servers.len() {
                let which = (turn + round) % servers.len();
                let cpu = cpu_per_message(&servers[which], &mut sockets[which], burst)
                    .await
                    .map_err(|err| format!("{}: {err}", WEBSOCKETS[which].name))?;
                per_message[size][which].push(cpu.as_secs_f64() * 1e6);
            }
        }
    }

    println!(
        "\n== server CPU per websocket message, µs: median of {MESSAGE_ROUNDS} rounds (each \
         round), and against the fastest peer =="
    );
    for (((name, ..), burst), rounds) in MESSAGE_SIZES.iter().zip(&bursts).zip(&mut per_message) {
        println!("\n{name} x {}", burst.messages);
        let medians: Vec<f64> = rounds
            .iter_mut()
            .map(|cpu| {
                cpu.sort_by(f64::total_cmp);
                cpu[cpu.len() / 2]
            })
            .collect();
        // The peers come after the service's two lines.
        let fastest_peer = medians[2..].iter().copied().fold(f64::INFINITY, f64::min);
        for ((contender, cpu), median) in WEBSOCKETS.iter().zip(rounds.iter()).zip(&medians) {
            let each: Vec<String> = cpu.iter().map(|cpu| format!("{cpu:.3}")).collect();
            println!(
                "{:>28}  {median:>8.3}  ({})  {:>5.2}x",
                contender.name,
                each.join(", "),
                median / fastest_peer
            );
        }
    }
    Ok(())
}
