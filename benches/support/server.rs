//! The server under test as a child process: started on `127.0.0.1:0` by
//! [`spawn`](super::spawn), its memory and CPU time read from `/proc`, what
//! it writes to stdout counted if asked, and killed when dropped. Also the
//! other side of that line, for a bench that serves from its own executable.

use std::collections::HashMap;
use std::io::{BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, ChildStdout, Command};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
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
    /// Where the service serves `/metrics` and its probes when
    /// `METRICS_ADDR` is set; known only when its stdout is read
    /// ([`Server::start_counting_stdout`]), as the port is printed there.
    pub metrics_addr: Option<SocketAddr>,
    /// What it has written to stdout since it announced its port, when
    /// counted.
    stdout: Option<Arc<Written>>,
}

/// Bytes and lines a server has written to stdout, counted as they are read.
#[derive(Debug, Default)]
pub struct Written {
    bytes: AtomicU64,
    lines: AtomicU64,
}

/// A reading of [`Written`].
#[derive(Debug, Default, Clone, Copy)]
pub struct WrittenSoFar {
    pub bytes: u64,
    pub lines: u64,
}

impl WrittenSoFar {
    /// What was written between `before` and this reading.
    pub fn since(self, before: WrittenSoFar) -> WrittenSoFar {
        WrittenSoFar {
            bytes: self.bytes - before.bytes,
            lines: self.lines - before.lines,
        }
    }
}

impl Server {
    /// Starts the service binary with `env` added to this process's
    /// environment, which it otherwise inherits.
    pub fn service(env: &[(&str, &str)]) -> Result<Server, String> {
        Server::start(Server::service_command(env))
    }

    /// The command that starts the service binary with `env` added.
    pub fn service_command(env: &[(&str, &str)]) -> Command {
        let mut command = Command::new(SERVICE);
        command.envs(env.iter().copied());
        command
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
            addr: loopback(started.port),
            metrics_addr: None,
            stdout: None,
        })
    }

    /// Starts `command` on `127.0.0.1:0` and reads its port (and its
    /// metrics port) from its stdout, which a thread then reads to the end,
    /// counting what it writes: the pipe costs the server a copy per write,
    /// as a log collector's pipe does, where `/dev/null` costs it nothing.
    pub fn start_counting_stdout(command: Command) -> Result<Server, String> {
        let started = spawn::start(
            command,
            spawn::Stdout::HandOver,
            spawn::Stderr::FirstLineOnly,
            PATIENCE,
        )?;
        let written = Arc::new(Written::default());
        let pipe = started.stdout_pipe.expect("the stdout pipe handed over");
        let counted = Arc::clone(&written);
        std::thread::spawn(move || count_until_closed(pipe, &counted));
        Ok(Server {
            child: started.child,
            addr: loopback(started.port),
            metrics_addr: started.metrics_port.map(loopback),
            stdout: Some(written),
        })
    }

    /// What the server has written to stdout so far, if it is counted.
    pub fn stdout_written(&self) -> Option<WrittenSoFar> {
        self.stdout.as_ref().map(|written| WrittenSoFar {
            bytes: written.bytes.load(Ordering::Relaxed),
            lines: written.lines.load(Ordering::Relaxed),
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

    /// Reads `connected_clients`.
    pub async fn connected_clients(&self) -> Result<Option<f64>, String> {
        Ok(self
            .scrape()
            .await?
            .lines()
            .find_map(|line| line.strip_prefix("connected_clients "))
            .and_then(|value| value.trim().parse().ok()))
    }

    /// The sum of every series of `counter` (`name{labels} value` or
    /// `name value`), or `None` if the server has no such series.
    pub async fn counter_total(&self, counter: &str) -> Result<Option<f64>, String> {
        let exposition = self.scrape().await?;
        let values: Vec<f64> = exposition
            .lines()
            .filter_map(|line| {
                let rest = line.strip_prefix(counter)?;
                let value = match rest.strip_prefix('{') {
                    Some(labelled) => labelled.split_once("} ")?.1,
                    None => rest.strip_prefix(' ')?,
                };
                value.trim().parse().ok()
            })
            .collect();
        Ok((!values.is_empty()).then(|| values.iter().sum()))
    }

    /// `GET /metrics`, on `METRICS_ADDR` if the server has one, over a
    /// connection of its own that the server closes once it has answered,
    /// so no poll outlives itself to be counted in the server's RSS.
    async fn scrape(&self) -> Result<String, String> {
        let get = async {
            let mut connection = Connection::open(self.metrics_addr.unwrap_or(self.addr)).await?;
            let (_, body) = connection
                .exchange(b"GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
                .await?;
            String::from_utf8(body.to_vec()).map_err(|err| err.to_string())
        };
        get.await.map_err(|err| format!("GET /metrics: {err}"))
    }
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Reads `pipe` until the server closes it (when it exits), counting bytes
/// and lines into `written`, in large reads so that the counting costs this
/// process little beside the load it generates.
fn count_until_closed(mut pipe: BufReader<ChildStdout>, written: &Written) {
    let mut buffer = vec![0; 1 << 20];
    loop {
        match pipe.read(&mut buffer) {
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
            Ok(0) | Err(_) => return,
            Ok(read) => {
                let lines = buffer[..read].iter().filter(|&&byte| byte == b'\n').count();
                written.bytes.fetch_add(read as u64, Ordering::Relaxed);
                written.lines.fetch_add(lines as u64, Ordering::Relaxed);
            }
        }
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
