//! Plumbing for the load benchmarks: the server under test as a child
//! process, what it reports (`/proc/<pid>/status`, `connected_clients`), the
//! open-file limit, and the machine the figures were taken on.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The server binary; `cargo bench` builds it with the release profile.
const BINARY: &str = env!("CARGO_BIN_EXE_rust-web-prometheus-example");

/// How long to wait for something that should happen before calling the
/// run broken. Generous: it bounds a failure, never a measurement.
pub const PATIENCE: Duration = Duration::from_secs(120);

/// The server under test, killed when dropped.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
}

impl Server {
    /// Starts the binary and waits for its `Started on port N` line.
    pub fn start() -> Result<Server, String> {
        let mut child = Command::new(BINARY)
            .env("LISTEN_ADDR", "127.0.0.1:0")
            // The simulated collector off: it would allocate while we measure.
            .env("COLLECT_INTERVAL_MS", "0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|err| format!("start {BINARY}: {err}"))?;

        // The server logs every connect and disconnect. Both pipes are
        // drained for its whole life: a full pipe would block its logging,
        // and with it the very connections being measured.
        let (port_tx, port_rx) = mpsc::channel();
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                if let Some(port) = line.strip_prefix("Started on port ") {
                    let _ = port_tx.send(port.trim().parse::<u16>());
                }
            }
        });
        // Show only the first line the server writes to stderr, so a real
        // failure is visible without a thousand copies of it.
        let stderr = BufReader::new(child.stderr.take().expect("piped stderr"));
        std::thread::spawn(move || {
            let mut lines = stderr.lines().map_while(Result::ok);
            if let Some(first) = lines.next() {
                eprintln!("server stderr (first line shown): {first}");
            }
            lines.for_each(drop);
        });

        let mut server = Server {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        let port = port_rx
            .recv_timeout(PATIENCE)
            .map_err(|_| "the server never printed `Started on port N`".to_owned())?
            .map_err(|err| format!("the server printed a bad port: {err}"))?;
        server.addr.set_port(port);
        Ok(server)
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

    /// Polls `/metrics` until `connected_clients` reads `expected`.
    pub async fn wait_for_gauge(&self, expected: usize) -> Result<(), String> {
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

    /// Reads `connected_clients` with a bare HTTP/1.1 GET: the body is
    /// small, and `Connection: close` makes its end the end of the stream.
    async fn connected_clients(&self) -> Result<Option<f64>, String> {
        let get = async {
            let addr = self.addr;
            let mut stream = TcpStream::connect(addr).await?;
            let request =
                format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
            stream.write_all(request.as_bytes()).await?;
            let mut response = String::new();
            stream.read_to_string(&mut response).await?;
            Ok::<_, std::io::Error>(response)
        };
        let response = get.await.map_err(|err| format!("GET /metrics: {err}"))?;
        Ok(response
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

/// Raises the soft `RLIMIT_NOFILE` to the hard limit and returns the limit in
/// force afterwards. If raising fails, says so and returns the old limit: the
/// client counts that do not fit are then skipped with the reason.
pub fn raise_fd_limit() -> libc::rlim_t {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the rlimit we pass and nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        eprintln!(
            "warning: getrlimit(RLIMIT_NOFILE): {}",
            std::io::Error::last_os_error()
        );
        return 0;
    }
    // An unlimited hard limit still cannot exceed the kernel's nr_open.
    let ceiling = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|value| value.trim().parse::<libc::rlim_t>().ok())
        .unwrap_or(limit.rlim_max);
    let wanted = limit.rlim_max.min(ceiling);
    if limit.rlim_cur >= wanted {
        println!(
            "file descriptors: limit {} (already the hard limit)",
            limit.rlim_cur
        );
        return limit.rlim_cur;
    }
    let raised = libc::rlimit {
        rlim_cur: wanted,
        rlim_max: limit.rlim_max,
    };
    // SAFETY: setrlimit only reads the rlimit we pass.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
        println!(
            "file descriptors: could not raise the limit from {} to {wanted}: {}",
            limit.rlim_cur,
            std::io::Error::last_os_error()
        );
        return limit.rlim_cur;
    }
    println!(
        "file descriptors: limit raised from {} to {wanted}",
        limit.rlim_cur
    );
    wanted
}

/// Prints the machine the figures belong to.
pub fn print_machine() {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name")?.split_once(':'))
        .map_or("unknown", |(_, model)| model.trim());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!("machine: {cores} cores, {model}, Linux {}", kernel.trim());
}
