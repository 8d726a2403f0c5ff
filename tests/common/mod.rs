//! Shared test helpers: start the real binary on a free port, speak HTTP and
//! websocket to it, and read its Prometheus exposition.
//!
//! Each test starts its own server process, so the process-wide metrics of
//! one test never leak into another's assertions.

#![allow(dead_code)] // each test binary uses its own subset of the helpers

pub mod prometheus;
pub mod raw_websocket;
pub mod spawn;

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::BufReader;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use futures::StreamExt;
use rust_web_prometheus_example::app::{self, Listeners};
use rust_web_prometheus_example::config::Config;
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// The binary under test, built by Cargo for integration tests.
pub const BINARY: &str = env!("CARGO_BIN_EXE_rust-web-prometheus-example");

/// How long a test waits for something that should happen promptly before it
/// gives up. Generous, because it bounds a failure, never a success.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// The service's configuration with `settings` (names of environment
/// variables, and values), as the binary would read them.
pub fn config(settings: &[(&str, &str)]) -> Config {
    let flags = settings
        .iter()
        .map(|(name, value)| format!("--{}={value}", name.to_lowercase().replace('_', "-")));
    let args = std::iter::once("service".to_owned()).chain(flags);
    Config::try_parse_from(args).unwrap_or_else(|err| panic!("{err}"))
}

/// Serves the service in this process on `listener`, with only the main
/// listener, until `stopped` fires or its sender is dropped: for the tests
/// that need the service's code at hand, not a process.
pub async fn serve_in_process(
    listener: tokio::net::TcpListener,
    config: &Config,
    stopped: tokio::sync::oneshot::Receiver<()>,
) -> Result<(), app::Error> {
    let listeners = Listeners {
        main: listener,
        metrics: None,
    };
    app::serve(listeners, config, async {
        let _ = stopped.await;
    })
    .await
}

/// A running server process, killed when dropped.
pub struct TestServer {
    child: Child,
    pub addr: SocketAddr,
    /// Where `/metrics` is served when `METRICS_ADDR` is set, from the
    /// server's `Metrics on port N` line.
    pub metrics_addr: Option<SocketAddr>,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl TestServer {
    /// Starts the binary on `127.0.0.1:0` with the default settings.
    pub fn start() -> TestServer {
        TestServer::start_with(&[])
    }

    /// Starts the binary on `127.0.0.1:0` with extra environment variables and
    /// waits for its `Started on port N` line (after `Metrics on port N`, if
    /// `METRICS_ADDR` is set).
    pub fn start_with(env: &[(&str, &str)]) -> TestServer {
        TestServer::start_as(BINARY, env, spawn::Stdout::Keep).0
    }

    /// Starts another server `program` as [`TestServer::start`] starts the
    /// binary: one that reads `LISTEN_ADDR` and prints `Started on port N`,
    /// such as the services docs/reuse.md shows.
    pub fn start_program(program: &Path) -> TestServer {
        TestServer::start_as(program, &[], spawn::Stdout::Keep).0
    }

    /// Like [`TestServer::start_with`], but hands the test the server's stdout
    /// pipe, read up to its `Started on port N` line, to read, leave unread
    /// or close (as `| head -1` does). [`TestServer::stdout`] stays empty.
    pub fn start_with_stdout_pipe(env: &[(&str, &str)]) -> (TestServer, BufReader<ChildStdout>) {
        let (server, pipe) = TestServer::start_as(BINARY, env, spawn::Stdout::HandOver);
        (server, pipe.expect("the stdout pipe handed over"))
    }

    fn start_as(
        program: impl AsRef<OsStr>,
        env: &[(&str, &str)],
        stdout: spawn::Stdout,
    ) -> (TestServer, Option<BufReader<ChildStdout>>) {
        let mut command = Command::new(program);
        command.envs(env.iter().copied());
        let started = spawn::start(command, stdout, spawn::Stderr::Keep, PATIENCE)
            .unwrap_or_else(|err| panic!("{err}"));
        let loopback = |port| SocketAddr::from(([127, 0, 0, 1], port));
        let server = TestServer {
            child: started.child,
            addr: loopback(started.port),
            metrics_addr: started.metrics_port.map(loopback),
            stdout: started.stdout_lines,
            stderr: started.stderr_lines,
        };
        (server, started.stdout_pipe)
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `GET path`, returning the response.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        reqwest::get(self.url(path)).await.expect("HTTP GET")
    }

    /// The current `/metrics` exposition, from the metrics port if there is one.
    pub async fn metrics(&self) -> Exposition {
        let addr = self.metrics_addr.unwrap_or(self.addr);
        let response = reqwest::get(format!("http://{addr}/metrics"))
            .await
            .expect("HTTP GET /metrics");
        assert_eq!(response.status(), 200, "GET /metrics status");
        Exposition(response.text().await.expect("metrics body"))
    }

    /// Polls `/metrics` until the unlabelled sample `name` equals `expected`,
    /// panicking with the last value seen if it does not within [`PATIENCE`].
    pub async fn wait_for_sample(&self, name: &str, expected: f64) {
        let metrics = self
            .wait_for_metrics(&format!("{name} == {expected}"), |metrics| {
                metrics.value(name) == Some(expected)
            })
            .await;
        assert_eq!(metrics.value(name), Some(expected));
    }

    /// Polls `/metrics` until `condition` holds and returns that exposition;
    /// panics, naming `what`, if it does not within [`PATIENCE`].
    pub async fn wait_for_metrics(
        &self,
        what: &str,
        condition: impl Fn(&Exposition) -> bool,
    ) -> Exposition {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let metrics = self.metrics().await;
            if condition(&metrics) {
                return metrics;
            }
            assert!(
                Instant::now() < deadline,
                "waited in vain for {what}; last exposition:\n{}",
                metrics.0
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Opens a websocket to `/ws/<id>`.
    pub async fn connect_ws(&self, id: &str) -> WebSocketStream<TcpStream> {
        connect_ws(self.addr, id).await
    }

    /// Sends `signal` (e.g. `libc::SIGTERM`) to the server process.
    pub fn signal(&self, signal: i32) {
        send_signal(self.child.id(), signal);
    }

    /// Waits for the process to exit, panicking if it has not within [`PATIENCE`].
    pub fn wait_for_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for server") {
                return status;
            }
            assert!(Instant::now() < deadline, "server did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything the server has printed on stdout so far.
    pub fn stdout(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    /// Everything the server has printed on stderr so far.
    pub fn stderr(&self) -> Vec<String> {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits until the server, started with `LOG_FORMAT=json`, has logged an
    /// event for which `wanted` holds, then returns every event logged.
    pub async fn wait_for_log_event(
        &self,
        what: &str,
        wanted: impl Fn(&serde_json::Value) -> bool,
    ) -> Vec<serde_json::Value> {
        let lines = self
            .wait_for_stdout(what, |line| {
                serde_json::from_str(line).is_ok_and(|event| wanted(&event))
            })
            .await;
        lines
            .iter()
            .map(|line| serde_json::from_str(line).expect("a JSON log line"))
            .collect()
    }

    /// Waits until the server has printed a line for which `wanted` holds
    /// (the lines reach the test through a pipe and a reader thread, a
    /// moment after the server acts), then returns everything printed.
    pub async fn wait_for_stdout(&self, what: &str, wanted: impl Fn(&str) -> bool) -> Vec<String> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let stdout = self.stdout();
            if stdout.iter().any(|line| wanted(line)) {
                return stdout;
            }
            assert!(
                Instant::now() < deadline,
                "waited in vain for {what}: {stdout:#?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until the server at `server` has read everything `client` sent it,
/// which Linux shows as an empty receive queue on the server's end of the
/// connection in `/proc/net/tcp`. A test that needs a request to be in
/// flight on the server, not just on the wire, waits for this.
pub async fn wait_until_read_by_server(server: SocketAddr, client: &TcpStream) {
    let client = client.local_addr().expect("client address");
    let hex = |addr: SocketAddr| match addr {
        SocketAddr::V4(v4) => format!(
            "{:08X}:{:04X}",
            u32::from_le_bytes(v4.ip().octets()),
            v4.port()
        ),
        SocketAddr::V6(_) => panic!("IPv4 loopback only"),
    };
    let (local, remote) = (hex(server), hex(client));
    let deadline = Instant::now() + PATIENCE;
    loop {
        let table = std::fs::read_to_string("/proc/net/tcp").expect("read /proc/net/tcp");
        let unread = table.lines().find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields.get(1) == Some(&local.as_str()) && fields.get(2) == Some(&remote.as_str()))
                .then(|| fields[4].split_once(':').map(|(_, rx)| rx.to_owned()))
                .flatten()
        });
        if unread
            .as_deref()
            .is_some_and(|rx| u64::from_str_radix(rx, 16) == Ok(0))
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the server never read the request: {unread:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until a new connection to `addr` is refused: the listener is closed.
pub async fn wait_until_refused(addr: SocketAddr) {
    let deadline = Instant::now() + PATIENCE;
    while TcpStream::connect(addr).await.is_ok() {
        assert!(
            Instant::now() < deadline,
            "server kept accepting after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A response as the server put it on the wire: its head and every byte
/// after the head until the server closed the connection.
pub struct RawResponse {
    pub status: u16,
    /// Header names in lower case.
    pub headers: HashMap<String, String>,
    pub after_head: Vec<u8>,
}

/// Sends `method path` on a connection of its own that asks to be closed,
/// and reads to EOF. Unlike reqwest, which never reads a body for a HEAD
/// whatever the server sends, this sees every byte the server sent.
pub async fn raw_request(addr: SocketAddr, method: &str, path: &str) -> RawResponse {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let mut stream = TcpStream::connect(addr).await.expect("TCP connect");
    let request = format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut bytes = Vec::new();
    tokio::time::timeout(PATIENCE, stream.read_to_end(&mut bytes))
        .await
        .expect("the server closes the connection")
        .expect("read the response");
    let end_of_head = bytes
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .expect("a complete response head")
        + 4;
    let head = std::str::from_utf8(&bytes[..end_of_head]).expect("the head is text");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .expect("a status line");
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    RawResponse {
        status,
        headers,
        after_head: bytes[end_of_head..].to_vec(),
    }
}

/// Sends `signal` to the process `pid`, panicking if it cannot.
fn send_signal(pid: u32, signal: i32) {
    let pid = pid as i32;
    // SAFETY: kill(2) has no memory-safety preconditions.
    assert_eq!(
        unsafe { libc::kill(pid, signal) },
        0,
        "kill({pid}, {signal})"
    );
}

/// Opens a websocket to `/ws/<id>` on the server at `addr`.
pub async fn connect_ws(addr: SocketAddr, id: &str) -> WebSocketStream<TcpStream> {
    let stream = TcpStream::connect(addr).await.expect("TCP connect");
    let url = format!("ws://{addr}/ws/{id}");
    let (socket, response) = tokio_tungstenite::client_async(url, stream)
        .await
        .expect("websocket handshake");
    assert_eq!(response.status(), 101, "upgrade status");
    socket
}

/// Reads until the connection ends, as a polite client does (reading on
/// after the server's close frame sends the reply that completes the close
/// handshake), and returns the code of the server's close frame, or `None`
/// if there was none.
pub async fn close_code(socket: &mut WebSocketStream<TcpStream>) -> Option<CloseCode> {
    let mut code = None;
    while let Some(Ok(message)) = socket.next().await {
        if let Message::Close(Some(frame)) = message {
            code = Some(frame.code);
        }
    }
    code
}

/// The `ws_client` example as a separate process, so a test can freeze it.
/// Killed when dropped.
pub struct ExampleClient(Child);

impl ExampleClient {
    /// Starts `examples/ws_client.rs` against `/ws/<id>` on `addr`. Plain
    /// `cargo test` builds the examples; a run limited to one test target
    /// (`--test websocket`) does not, hence the hint in the panic.
    pub fn start(addr: SocketAddr, id: &str) -> ExampleClient {
        // Integration tests run from target/<profile>/deps; examples are built
        // into target/<profile>/examples.
        let test_binary = std::env::current_exe().expect("path of this test");
        let examples = test_binary
            .parent()
            .and_then(|deps| deps.parent())
            .expect("target directory")
            .join("examples");
        let child = Command::new(examples.join("ws_client"))
            .args([addr.to_string(), id.to_owned()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect(
                "start the ws_client example (build it with `cargo build --example ws_client`)",
            );
        ExampleClient(child)
    }

    /// Sends `signal` (e.g. `libc::SIGSTOP`) to the client process.
    pub fn signal(&self, signal: i32) {
        send_signal(self.0.id(), signal);
    }
}

impl Drop for ExampleClient {
    fn drop(&mut self) {
        // SIGKILL ends a stopped process too.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs the binary with `env` (and `args`) to completion, returning its exit
/// status and stderr. For start-up failures, which end without serving.
pub fn run_to_exit(env: &[(&str, &str)], args: &[&str]) -> (ExitStatus, String, String) {
    let output = Command::new(BINARY)
        .env("LISTEN_ADDR", "127.0.0.1:0")
        .envs(env.iter().copied())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run the server binary");
    (
        output.status,
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A Prometheus text exposition, with just enough parsing for assertions.
pub struct Exposition(pub String);

impl Exposition {
    /// The `# TYPE` of every family, by name.
    pub fn types(&self) -> HashMap<String, String> {
        self.0
            .lines()
            .filter_map(|line| line.strip_prefix("# TYPE "))
            .filter_map(|rest| rest.split_once(' '))
            .map(|(name, kind)| (name.to_owned(), kind.to_owned()))
            .collect()
    }

    /// The samples as (metric name, labels, value).
    pub fn samples(&self) -> Vec<(String, HashMap<String, String>, f64)> {
        self.0
            .lines()
            .filter(|line| !line.starts_with('#') && !line.is_empty())
            .map(parse_sample)
            .collect()
    }

    /// Every series, by name and labels, without values: what a client
    /// could grow by adding series.
    pub fn series(&self) -> std::collections::BTreeSet<String> {
        self.samples()
            .into_iter()
            .map(|(name, labels, _)| {
                let labels: std::collections::BTreeMap<_, _> = labels.into_iter().collect();
                format!("{name}{labels:?}")
            })
            .collect()
    }

    /// The value of the sample `name` that has no labels.
    pub fn value(&self, name: &str) -> Option<f64> {
        self.samples()
            .into_iter()
            .find(|(sample, labels, _)| sample == name && labels.is_empty())
            .map(|(_, _, value)| value)
    }

    /// The value of the sample `name` whose labels are exactly `labels`.
    pub fn sample(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let wanted: HashMap<String, String> = labels
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect();
        self.samples()
            .into_iter()
            .find(|(sample, labels, _)| sample == name && labels == &wanted)
            .map(|(_, _, value)| value)
    }

    /// The label names used by the samples of `name`.
    pub fn label_names(&self, name: &str) -> Vec<Vec<String>> {
        self.samples()
            .into_iter()
            .filter(|(sample, _, _)| sample == name)
            .map(|(_, labels, _)| {
                let mut names: Vec<String> = labels.into_keys().collect();
                names.sort();
                names
            })
            .collect()
    }
}

/// Parses `name{a="x",b="y"} value` (label values without escapes, which is
/// all this service produces).
fn parse_sample(line: &str) -> (String, HashMap<String, String>, f64) {
    let (series, value) = line.rsplit_once(' ').expect("sample has a value");
    let value = value.parse().expect("numeric sample value");
    match series.split_once('{') {
        None => (series.to_owned(), HashMap::new(), value),
        Some((name, labels)) => {
            let labels = labels
                .trim_end_matches('}')
                .split(',')
                .filter(|pair| !pair.is_empty())
                .map(|pair| {
                    let (key, value) = pair.split_once('=').expect("label pair");
                    (key.to_owned(), value.trim_matches('"').to_owned())
                })
                .collect();
            (name.to_owned(), labels, value)
        }
    }
}

impl TestServer {
    /// The server process's resident set size, in bytes, from /proc.
    pub fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("read /proc/PID/status");
        let kib: u64 = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/PID/status");
        kib * 1024
    }
}
