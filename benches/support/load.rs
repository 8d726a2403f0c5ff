//! Keep-alive load on several servers side by side: the same request over
//! the same number of connections, moved from server to server in short
//! slices and rotating order, so that the machine's other work falls on all
//! of them alike. Each server's CPU time comes from `/proc`, apart from the
//! load generator's. Each slice also keeps the latency of every request,
//! for the benches that report it.
//!
//! The load comes from one task per connection on the caller's runtime: a
//! single-threaded one takes at most one core and leaves the rest to the
//! server under test.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::http_client::Connection;
use super::server::Server;

/// Requests served and the server CPU time they took.
#[derive(Debug, Default, Clone, Copy)]
pub struct Measured {
    pub requests: u64,
    /// Connections the server closed under load, which were opened again.
    pub reconnects: u64,
    pub wall: Duration,
    pub cpu: Duration,
}

impl Measured {
    pub fn add(&mut self, other: Measured) {
        self.requests += other.requests;
        self.reconnects += other.reconnects;
        self.wall += other.wall;
        self.cpu += other.cpu;
    }

    pub fn per_second(&self) -> f64 {
        self.requests as f64 / self.wall.as_secs_f64()
    }

    /// Server CPU seconds per request.
    pub fn cpu_per_request(&self) -> f64 {
        self.cpu.as_secs_f64() / self.requests as f64
    }
}

/// How the load is shared out: connections per server, rounds, and how long
/// each server is loaded in a round.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    pub connections: usize,
    pub rounds: usize,
    pub slice: Duration,
}

/// What every server did in every round of [`side_by_side`].
pub struct Rounds(Vec<Vec<Measured>>);

impl Rounds {
    /// All rounds of server `which` added up.
    pub fn total(&self, which: usize) -> Measured {
        let mut total = Measured::default();
        for round in &self.0 {
            total.add(round[which]);
        }
        total
    }

    /// Server `which`'s CPU per request relative to server `baseline`'s,
    /// taken round by round: the median and the quartiles.
    pub fn cpu_ratio_quartiles(&self, which: usize, baseline: usize) -> [f64; 3] {
        let mut ratios: Vec<f64> = self
            .0
            .iter()
            .map(|round| round[which].cpu_per_request() / round[baseline].cpu_per_request())
            .collect();
        ratios.sort_by(f64::total_cmp);
        let quartile = |q: usize| ratios[(ratios.len() - 1) * q / 4];
        [quartile(1), quartile(2), quartile(3)]
    }
}

/// Rounds at the start that warm every server up (connections, allocators,
/// lazily created metrics) and are not counted.
const WARM_UP_ROUNDS: usize = 2;

/// Loads every server in `servers` with `request` as `schedule` says.
///
/// A connection waits `servers.len() - 1` slices between its own: keep that
/// under the servers' keep-alive timeouts (actix-web's is 5 s). Any answer
/// but 200 stops the benchmark, naming the server.
pub async fn side_by_side(
    servers: &[&Server],
    request: &'static [u8],
    schedule: Schedule,
) -> Rounds {
    let mut pools = Vec::new();
    for server in servers {
        let mut pool = Vec::new();
        for _ in 0..schedule.connections {
            pool.push(Connection::open(server.addr).await.expect("connect"));
        }
        pools.push(pool);
    }

    let mut rounds = Vec::new();
    for round in 0..WARM_UP_ROUNDS + schedule.rounds {
        let mut this_round = vec![Measured::default(); servers.len()];
        for step in 0..servers.len() {
            let which = (round + step) % servers.len();
            let server = servers[which];
            let pool = std::mem::take(&mut pools[which]);
            let cpu_before = server.cpu_snapshot();
            let started = Instant::now();
            let slice = load(pool, server.addr, request, schedule.slice)
                .await
                .unwrap_or_else(|err| panic!("load on {}: {err}", server.addr));
            this_round[which] = Measured {
                requests: slice.served,
                reconnects: slice.reconnects,
                wall: started.elapsed(),
                cpu: server.cpu_since(&cpu_before),
            };
            pools[which] = slice.pool;
        }
        if round >= WARM_UP_ROUNDS {
            rounds.push(this_round);
        }
    }
    Rounds(rounds)
}

/// What one [`load`] did.
pub struct Slice {
    /// The connections, for the next slice.
    pub pool: Vec<Connection>,
    /// Responses received.
    pub served: u64,
    /// Connections the server closed, each opened again and its request
    /// sent again, as `wrk` does.
    pub reconnects: u64,
    /// Each response's time from its request's first byte sent, in no
    /// particular order.
    pub latencies: Vec<Duration>,
}

impl Slice {
    /// The latency below which `fraction` of the responses came (0.99 for
    /// the p99; 1.0 for the slowest).
    pub fn latency_quantile(&mut self, fraction: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((self.latencies.len() as f64 * fraction).ceil() as usize).max(1) - 1;
        let rank = rank.min(self.latencies.len() - 1);
        *self.latencies.select_nth_unstable(rank).1
    }
}

/// Sends `request` over each of `pool`'s connections to `addr`, each
/// waiting for its response before the next request, for `duration`.
/// Returns what it did, or why a connection could not be opened or got an
/// answer other than 200.
pub async fn load(
    pool: Vec<Connection>,
    addr: SocketAddr,
    request: &'static [u8],
    duration: Duration,
) -> Result<Slice, String> {
    let deadline = Instant::now() + duration;
    let running: Vec<_> = pool
        .into_iter()
        .map(|mut connection| {
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut reconnects = 0;
                loop {
                    let sent = Instant::now();
                    if sent >= deadline {
                        break;
                    }
                    let status = match connection.exchange(request).await {
                        Ok((status, _)) => status,
                        Err(closed) => {
                            reconnects += 1;
                            connection = Connection::open(addr)
                                .await
                                .map_err(|err| format!("{closed}, and then {err}"))?;
                            continue;
                        }
                    };
                    if status != 200 {
                        return Err(format!("{status} for {}", String::from_utf8_lossy(request)));
                    }
                    latencies.push(sent.elapsed());
                }
                Ok((connection, latencies, reconnects))
            })
        })
        .collect();
    let mut slice = Slice {
        pool: Vec::new(),
        served: 0,
        reconnects: 0,
        latencies: Vec::new(),
    };
    let mut failure = None;
    for connection in running {
        match connection.await.expect("a load connection's task") {
            Ok((connection, latencies, reopened)) => {
                slice.pool.push(connection);
                slice.served += latencies.len() as u64;
                slice.latencies.extend(latencies);
                slice.reconnects += reopened;
            }
            Err(err) => failure = Some(err),
        }
    }
    match failure {
        Some(err) => Err(err),
        None => Ok(slice),
    }
}
