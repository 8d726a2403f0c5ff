//! The server under test as a child process: started on `127.0.0.1:0` by
//! [`spawn`](super::spawn), its memory and CPU time read from `/proc`, and
//! killed when dropped. Also the
//! other side of that line, for a bench that serves from its own executable.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use rust_web_prometheus_example::memory::CHECK_EVERY;
use tokio::net::TcpListener;

use super::http_client::Connection;
use super::{PATIENCE, spawn};

/// The service binary, built by Cargo with the bench profile.
const SERVICE: &str = env!("CARGO_BIN_EXE_rust-web-prometheus-example");

/// Quiet time before a memory reading, so that allocations in flight (the
/// last handshakes, tasks being dropped, deferred frees) have landed.
pub const SETTLE: Duration = Duration::from_secs(1);

/// Quiet time after the server has freed memory (the last client gone, a
/// large message read): the service hands freed memory back to the system
/// at its next check, so wait for one whole check period and then settle.
pub const SETTLE_AFTER_FREEING: Duration = CHECK_EVERY.saturating_add(SETTLE);

/// A server process on `127.0.0.1:0`, killed when dropped.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
}

impl Server {
    /// Starts the service binary with `env` added to this process's
    /// environment, which it otherwise inherits.
    pub fn service(env: &[(&str, &str)]) -> Result<Server, String> {
        let mut command = Command::new(SERVICE);
        command.envs(env.iter().copied());
        Server::start(command)
    }

    /// Starts `command` on a free port, with its stdout to `/dev/null`, and
    /// waits until it listens. Its stderr is drained, but for the first
    /// line.
    pub fn start(command: Command) -> Result<Server, String> {
        let started = spawn::start(
            command,
            spawn::Stdout::Null,
            spawn::Stderr::FirstLineOnly,
            PATIENCE,
        )?;
        Ok(Server {
            child: started.child,
            addr: SocketAddr::from(([127, 0, 0, 1], started.port)),
        })
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A size field of `/proc/<pid>/status` such as `VmRSS`, in KiB.
    pub fn status_kib(&self, field: &str) -> Result<u64, String> {
        let path = format!("/proc/{}/status", self.child.id());
        let status = std::fs::read_to_string(&path).map_err(|err| format!("{path}: {err}"))?;
        status
            .lines()
            .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
            .ok_or_else(|| format!("{path} has no {field}"))
    }

    /// The CPU time each of the process's threads has used so far, in ns.
    ///
    /// `/proc/<pid>/task/<tid>/schedstat` counts nanoseconds, where
    /// `/proc/<pid>/stat` counts 10 ms ticks, too coarse for short slices.
    pub fn cpu_snapshot(&self) -> HashMap<String, u64> {
        let tasks = format!("/proc/{}/task", self.child.id());
        std::fs::read_dir(&tasks)
            .expect("list the server's threads")
            .filter_map(|task| {
                let task = task.ok()?;
                let stat = std::fs::read_to_string(task.path().join("schedstat")).ok()?;
                let nanos = stat.split_whitespace().next()?.parse().ok()?;
                Some((task.file_name().to_string_lossy().into_owned(), nanos))
            })
            .collect()
    }

    /// CPU time used by the process since `before`. Threads are matched by
    /// id, so one that has exited in between (tokio ends idle blocking-pool
    /// threads after 10 s) loses only its own share of the interval instead
    /// of making the total go backwards.
    pub fn cpu_since(&self, before: &HashMap<String, u64>) -> Duration {
        let nanos = self
            .cpu_snapshot()
            .into_iter()
            .map(|(thread, now)| match before.get(&thread) {
                // A smaller count means the id now belongs to a new thread.
                Some(&then) if then <= now => now - then,
                _ => now,
            })
            .sum();
        Duration::from_nanos(nanos)
    }

    /// Awaits `exchange` (a request to this server) and returns its result,
    /// the wall time it took, and the CPU time the server spent meanwhile.
    pub async fn timed<T>(&self, exchange: impl Future<Output = T>) -> (T, Duration, Duration) {
        let cpu_before = self.cpu_snapshot();
        let started = Instant::now();
        let result = exchange.await;
        let wall = started.elapsed();
        (result, wall, self.cpu_since(&cpu_before))
    }
}

impl Server {
    /// Polls `/metrics` until `connected_clients` reads `expected`.
    pub async fn wait_for_connected_clients(&self, expected: usize) -> Result<(), String> {
        let deadline = Instant::now() + PATIENCE;
        let mut last = None;
        while Instant::now() < deadline {
            last = self.connected_clients().await?;
            if last == Some(expected as f64) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(format!(
            "connected_clients stayed at {last:?}, expected {expected}, for {PATIENCE:?}"
        ))
    }

    /// Reads `connected_clients` over a connection of its own that the
    /// server closes once it has answered, so no poll outlives itself to be
    /// counted in the server's RSS.
    pub async fn connected_clients(&self) -> Result<Option<f64>, String> {
        let get = async {
            let mut connection = Connection::open(self.addr).await?;
            let (_, body) = connection
                .exchange(b"GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
                .await?;
            String::from_utf8(body.to_vec()).map_err(|err| err.to_string())
        };
        let exposition = get.await.map_err(|err| format!("GET /metrics: {err}"))?;
        Ok(exposition
            .lines()
            .find_map(|line| line.strip_prefix("connected_clients "))
            .and_then(|value| value.trim().parse().ok()))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `server` the way the service runs, on a multi-threaded tokio
/// runtime, on the `LISTEN_ADDR` that [`Server::start`] gives it.
pub fn serve<S: Future<Output = ()>>(server: impl FnOnce(TcpListener) -> S) {
    let addr = std::env::var("LISTEN_ADDR").expect("LISTEN_ADDR, as Server::start sets it");
    let runtime = tokio::runtime::Runtime::new().expect("start the server's runtime");
    runtime.block_on(async {
        server(TcpListener::bind(addr).await.expect("bind")).await;
    });
}
