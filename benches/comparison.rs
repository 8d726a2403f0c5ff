//! The service against its peers, each as its own process on `127.0.0.1:0`:
//! `cargo bench --bench comparison` (a few minutes). See docs/comparison.md
//! for the method, the figures and what each peer measures.
//!
//! The peers are small servers in `benches/peers/`, a Cargo project of its
//! own that this bench builds when it starts (release, with its committed
//! `Cargo.lock`, into `target/peers/`), so `cargo test` never compiles them.
//! Three measurements, each side by side in the same run:
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
//! 3. Idle websockets: a fresh server each, [`WEBSOCKET_CLIENTS`] idle
//!    clients in and out, twice: RSS per client, and the share of the memory
//!    they took that the server gave back after they left.
//!
//! The service runs with `COLLECT_INTERVAL_MS=0`: the peers have no
//! simulated collector, and its series would make the scrapes unequal.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use support::http_client::Connection;
use support::load::{Schedule, side_by_side};
use support::machine::{FD_MARGIN, print_machine, raise_fd_limit};
use support::peers;
use support::server::{SETTLE, SETTLE_AFTER_FREEING, Server};
use support::websocket_clients::Clients;

/// Load on `/some`: as many connections as `wrk -c32`, from one thread.
const SCHEDULE: Schedule = Schedule {
    connections: 32,
    rounds: 20,
    slice: Duration::from_millis(400),
};

/// Requests on `/some` before the scrapes, and scrapes per server.
const SCRAPE_AFTER: usize = 10_000;
const SCRAPES: usize = 300;

/// Idle websocket clients per burst, and bursts per server: the second
/// shows whether memory given back once is given back again.
const WEBSOCKET_CLIENTS: usize = 5_000;
const BURSTS: usize = 2;

/// One server in the comparison.
struct Contender {
    /// As the tables name it.
    name: &'static str,
    /// The binary in `benches/peers/`, or `None` for this service.
    peer: Option<&'static str>,
    /// Whether it serves `/metrics` and `/ws/{id}`; the bare servers serve
    /// `/some` alone.
    instrumented: bool,
}

const SERVICE: Contender = Contender {
    name: "this service",
    peer: None,
    instrumented: true,
};
const AXUM: Contender = Contender {
    name: "axum + axum-prometheus",
    peer: Some("axum"),
    instrumented: true,
};
const ACTIX: Contender = Contender {
    name: "actix-web + actix-web-prom",
    peer: Some("actix"),
    instrumented: true,
};
const WARP_HYPER: Contender = Contender {
    name: "bare warp, hyper HTTP/1.1",
    peer: Some("warp-hyper"),
    instrumented: false,
};
const WARP_SERVE: Contender = Contender {
    name: "bare warp, warp::serve",
    peer: Some("warp-serve"),
    instrumented: false,
};
const FLOOR: Contender = Contender {
    name: "bare hyper (the floor)",
    peer: Some("hyper"),
    instrumented: false,
};
const FLOOR_AGAIN: Contender = Contender {
    name: "bare hyper again",
    ..FLOOR
};

/// Every contender, in the order of the tables.
const CONTENDERS: [Contender; 7] = [
    SERVICE,
    AXUM,
    ACTIX,
    WARP_HYPER,
    WARP_SERVE,
    FLOOR,
    FLOOR_AGAIN,
];
const FLOOR_INDEX: usize = 5;

impl Contender {
    fn start(&self) -> Result<Server, String> {
        match self.peer {
            None => Server::service(&[("COLLECT_INTERVAL_MS", "0")]),
            Some(binary) => peers::start(binary),
        }
    }
}

fn main() {
    if let Err(err) = peers::build() {
        eprintln!("error: {err}");
        std::process::exit(1);
    }
    print_machine();
    // Before the first server starts, so every server inherits the limit.
    let fd_limit = raise_fd_limit();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("start the load generator's runtime");
    let started = Instant::now();
    let cpu = runtime.block_on(cpu_per_request());
    let scrapes = runtime.block_on(scrapes());
    let websockets = if fd_limit < (WEBSOCKET_CLIENTS + FD_MARGIN) as u64 {
        println!(
            "\nidle websockets: skipped: {WEBSOCKET_CLIENTS} clients need about {} file \
             descriptors per process, the limit is {fd_limit} (ulimit -Hn)",
            WEBSOCKET_CLIENTS + FD_MARGIN
        );
        Vec::new()
    } else {
        runtime.block_on(websockets())
    };
    println!("\nall measured in {:.0?}", started.elapsed());
    print_summary(&cpu, &scrapes, &websockets);
}

// ===== 1. CPU per request =====

/// CPU per request relative to the floor: over all requests, and the
/// median and quartiles of the rounds.
struct CpuRatio {
    all: f64,
    quartiles: [f64; 3],
}

async fn cpu_per_request() -> Vec<CpuRatio> {
    println!("\n== CPU per request on GET /some, relative to the bare hyper server ==");
    println!(
        "{} keep-alive connections per server; {} rounds, each loading every server for {:?} in turn",
        SCHEDULE.connections, SCHEDULE.rounds, SCHEDULE.slice
    );
    let servers: Vec<Server> = CONTENDERS
        .iter()
        .map(|contender| contender.start().expect("start a server"))
        .collect();
    for (contender, server) in CONTENDERS.iter().zip(&servers) {
        println!("{:>28}: {}", contender.name, server.addr);
    }
    let measured: Vec<&Server> = servers.iter().collect();
    let request = b"GET /some HTTP/1.1\r\nHost: bench\r\n\r\n";
    let rounds = side_by_side(&measured, request, SCHEDULE).await;

    let floor = rounds.total(FLOOR_INDEX);
    println!(
        "{:>28}  {:>8}  {:>10}  {:>9}  {:>24}  {:>10}",
        "server", "req/s", "CPU µs/req", "vs floor", "rounds: median (IQR)", "reconnects"
    );
    let mut ratios = Vec::new();
    for (which, contender) in CONTENDERS.iter().enumerate() {
        let total = rounds.total(which);
        let ratio = CpuRatio {
            all: total.cpu_per_request() / floor.cpu_per_request(),
            quartiles: rounds.cpu_ratio_quartiles(which, FLOOR_INDEX),
        };
        let [lower, median, upper] = ratio.quartiles;
        println!(
            "{:>28}  {:>8.0}  {:>10.2}  {:>9.3}  {median:>7.3} ({lower:.3}..{upper:.3})  {:>10}",
            contender.name,
            total.per_second(),
            total.cpu_per_request() * 1e6,
            ratio.all,
            total.reconnects,
        );
        ratios.push(ratio);
    }
    ratios
}

// ===== 2. Scrapes =====

/// One instrumented server's `/metrics`.
struct Scrape {
    samples: usize,
    bytes: usize,
    /// Median wall time of a scrape, as the client sees it.
    median: Duration,
    /// Server CPU time per scrape, on average.
    cpu: Duration,
}

impl Scrape {
    fn per_sample(&self) -> Duration {
        self.median / self.samples as u32
    }
}

async fn scrapes() -> Vec<Option<Scrape>> {
    println!(
        "\n== GET /metrics in plain text after {SCRAPE_AFTER} requests, {SCRAPES} scrapes each, in turn =="
    );
    let mut servers = Vec::new();
    for contender in CONTENDERS.iter().filter(|c| c.instrumented) {
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
    let mut scrapes = Vec::new();
    for (which, (contender, ..)) in servers.iter().enumerate() {
        let exposition = &last[which];
        times[which].sort();
        let result = Scrape {
            samples: exposition
                .lines()
                .filter(|line| !line.is_empty() && !line.starts_with('#'))
                .count(),
            bytes: exposition.len(),
            median: times[which][SCRAPES / 2],
            cpu: cpu[which] / SCRAPES as u32,
        };
        println!(
            "{:>28}  {:>7}  {:>6}  {:>12.3} ms  {:>9.2} µs  {:>14.3} ms",
            contender.name,
            result.samples,
            result.bytes,
            result.median.as_secs_f64() * 1e3,
            result.per_sample().as_secs_f64() * 1e6,
            result.cpu.as_secs_f64() * 1e3,
        );
        scrapes.push(result);
    }
    // One entry per contender, `None` for the bare servers.
    let mut scrapes = scrapes.into_iter();
    CONTENDERS
        .iter()
        .map(|contender| contender.instrumented.then(|| scrapes.next()).flatten())
        .collect()
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

// ===== 3. Idle websockets =====

/// One instrumented server's memory with idle websocket clients.
struct Memory {
    baseline_kib: u64,
    /// RSS with every client in, and after they have all left, per burst.
    loaded_kib: [u64; BURSTS],
    after_kib: [u64; BURSTS],
}

impl Memory {
    /// RSS per client in the first burst, over the fresh server's.
    fn kib_per_client(&self) -> f64 {
        (self.loaded_kib[0] as f64 - self.baseline_kib as f64) / WEBSOCKET_CLIENTS as f64
    }

    /// The share of what burst `burst` took over the fresh server's RSS
    /// that was given back once its clients had left.
    fn returned(&self, burst: usize) -> f64 {
        let taken = self.loaded_kib[burst] as f64 - self.baseline_kib as f64;
        let kept = self.after_kib[burst] as f64 - self.baseline_kib as f64;
        1.0 - kept / taken
    }
}

async fn websockets() -> Vec<Option<Memory>> {
    println!(
        "\n== idle websockets: {WEBSOCKET_CLIENTS} clients in and out, {BURSTS} bursts, one fresh server at a time =="
    );
    println!(
        "{:>28}  {:>9}  {:>9}  {:>10}  {:>9}  {:>12}",
        "server", "base KiB", "load KiB", "KiB/client", "after KiB", "given back"
    );
    let mut results = Vec::new();
    for contender in &CONTENDERS {
        if !contender.instrumented {
            results.push(None);
            continue;
        }
        match memory(contender).await {
            Ok(memory) => {
                let given_back: Vec<String> = (0..BURSTS)
                    .map(|burst| percent(memory.returned(burst)))
                    .collect();
                println!(
                    "{:>28}  {:>9}  {:>9}  {:>10.1}  {:>9}  {:>12}",
                    contender.name,
                    memory.baseline_kib,
                    memory.loaded_kib[0],
                    memory.kib_per_client(),
                    memory.after_kib[BURSTS - 1],
                    given_back.join(", "),
                );
                results.push(Some(memory));
            }
            Err(err) => {
                println!("{:>28}  aborted: {err}", contender.name);
                results.push(None);
            }
        }
    }
    results
}

async fn memory(contender: &Contender) -> Result<Memory, String> {
    let server = contender.start()?;
    // The bench polls /metrics while loaded too, so the baseline includes
    // whatever the first encoding allocates.
    server.wait_for_connected_clients(0).await?;
    tokio::time::sleep(SETTLE).await;
    let mut memory = Memory {
        baseline_kib: server.status_kib("VmRSS")?,
        loaded_kib: [0; BURSTS],
        after_kib: [0; BURSTS],
    };
    for burst in 0..BURSTS {
        let clients = Clients::open(server.addr, WEBSOCKET_CLIENTS).await?;
        server.wait_for_connected_clients(WEBSOCKET_CLIENTS).await?;
        tokio::time::sleep(SETTLE).await;
        memory.loaded_kib[burst] = server.status_kib("VmRSS")?;
        let lost = clients.close().await;
        if lost > 0 {
            return Err(format!("the server closed {lost} idle clients"));
        }
        server.wait_for_connected_clients(0).await?;
        tokio::time::sleep(SETTLE_AFTER_FREEING).await;
        memory.after_kib[burst] = server.status_kib("VmRSS")?;
    }
    Ok(memory)
}

/// `share` as a whole percentage; a server that kept more than a burst
/// took shows a negative share.
fn percent(share: f64) -> String {
    // Adding zero turns a -0 from rounding into 0.
    format!("{:.0} %", (100.0 * share).round() + 0.0)
}

// ===== The table for docs/comparison.md =====

fn print_summary(cpu: &[CpuRatio], scrapes: &[Option<Scrape>], websockets: &[Option<Memory>]) {
    println!("\n== summary, as in docs/comparison.md ==\n");
    println!(
        "| server | CPU per request vs floor: all (median of rounds) | scrape: samples, median | per sample | idle websocket: RSS per client | memory given back after burst 1, 2 |"
    );
    println!("|---|--:|--:|--:|--:|--:|");
    for (which, contender) in CONTENDERS.iter().enumerate() {
        let ratio = &cpu[which];
        let (scrape, per_sample) = match scrapes.get(which).and_then(Option::as_ref) {
            Some(scrape) => (
                format!(
                    "{}, {:.3} ms",
                    scrape.samples,
                    scrape.median.as_secs_f64() * 1e3
                ),
                format!("{:.2} µs", scrape.per_sample().as_secs_f64() * 1e6),
            ),
            None => ("–".to_owned(), "–".to_owned()),
        };
        let (per_client, given_back) = match websockets.get(which).and_then(Option::as_ref) {
            Some(memory) => (
                format!("{:.1} KiB", memory.kib_per_client()),
                (0..BURSTS)
                    .map(|burst| percent(memory.returned(burst)))
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
            None => ("–".to_owned(), "–".to_owned()),
        };
        println!(
            "| {} | {:.2} ({:.2}) | {scrape} | {per_sample} | {per_client} | {given_back} |",
            contender.name, ratio.all, ratio.quartiles[1],
        );
    }
}
