//! Keep-alive load on several servers side by side: the same request over
//! the same number of connections, moved from server to server in short
//! slices and rotating order, so that the machine's other work falls on all
//! of them alike. Each server's CPU time comes from `/proc`, apart from the
//! load generator's.
//!
//! The load comes from one task per connection on the caller's runtime: a
//! single-threaded one takes at most one core and leaves the rest to the
//! server under test.

use std::time::{Duration, Instant};

use super::http_client::Connection;
use super::server::Server;

/// Requests served and the server CPU time they took.
#[derive(Debug, Default, Clone, Copy)]
pub struct Measured {
    pub requests: u64,
    pub wall: Duration,
    pub cpu: Duration,
}

impl Measured {
    pub fn add(&mut self, other: Measured) {
        self.requests += other.requests;
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

/// Loads every server in `servers` with `request` as `schedule` says, after
/// a one-second warm-up each (connections, allocators, lazily created
/// metrics). Any answer but 200 stops the benchmark.
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
        let (pool, _) = load(pool, request, Duration::from_secs(1)).await;
        pools.push(pool);
    }

    let mut rounds = Vec::new();
    for round in 0..schedule.rounds {
        let mut this_round = vec![Measured::default(); servers.len()];
        for step in 0..servers.len() {
            let which = (round + step) % servers.len();
            let server = servers[which];
            let pool = std::mem::take(&mut pools[which]);
            let cpu_before = server.cpu_snapshot();
            let started = Instant::now();
            let (pool, requests) = load(pool, request, schedule.slice).await;
            this_round[which] = Measured {
                requests,
                wall: started.elapsed(),
                cpu: server.cpu_since(&cpu_before),
            };
            pools[which] = pool;
        }
        rounds.push(this_round);
    }
    Rounds(rounds)
}

/// Sends `request` over each of `pool`'s connections, each waiting for its
/// response before the next request, for `duration`. Returns the connections
/// for the next slice and the number of 200 responses; any other answer
/// stops the benchmark.
pub async fn load(
    pool: Vec<Connection>,
    request: &'static [u8],
    duration: Duration,
) -> (Vec<Connection>, u64) {
    let deadline = Instant::now() + duration;
    let running: Vec<_> = pool
        .into_iter()
        .map(|mut connection| {
            tokio::spawn(async move {
                let mut served = 0;
                while Instant::now() < deadline {
                    let (status, _) = connection.exchange(request).await.expect("load");
                    assert_eq!(status, 200, "{}", String::from_utf8_lossy(request));
                    served += 1;
                }
                (connection, served)
            })
        })
        .collect();
    let mut pool = Vec::new();
    let mut served = 0;
    for connection in running {
        let (connection, count) = connection.await.expect("load connection");
        pool.push(connection);
        served += count;
    }
    (pool, served)
}
