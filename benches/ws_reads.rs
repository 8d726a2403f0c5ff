//! What reading a client's messages costs the server: CPU time per message
//! and receive syscalls, for bursts of small messages (where reading frame
//! by frame would cost most) and for messages of 2,000 bytes (which the
//! server cuts into 1 KiB fragments), side by side with other builds of the
//! service in the same run.
//!
//! Each server is a release build on `127.0.0.1:0` with
//! `COLLECT_INTERVAL_MS=0` and `RUST_LOG=warn`, one client connection per
//! case. The client writes the masked frames of the whole burst as fast as
//! the socket takes them, then a ping, and the server's pong says it has
//! read everything; the server's CPU time is taken over that span (all its
//! threads, from `/proc/<pid>/task/*/schedstat`).
//!
//! - **10 B text × 2,000**: the review's case, also with its receive
//!   syscalls counted (below);
//! - **16 B binary × 300,000**: CPU per small message;
//! - **2,000 B binary × 20,000**: CPU per message that is cut in two;
//! - **empty binary × 300,000**: six-byte frames, the most frames a client
//!   can send per byte.
//!
//! Receive syscalls (`recvfrom`, which is how the service reads a socket)
//! are counted in separate runs of the first and last cases, with
//! `strace -c -f` attached to the server, since tracing slows it; they
//! are skipped, saying so, if strace is not installed.
//!
//! Builds to compare with: `WS_READS_BASELINES=name=path,name=path`, each
//! path a binary of the service built from another commit (docs/websockets.md
//! says how the published figures' baselines were built). Without it only
//! this build is measured.
//!
//! Run with `cargo bench --bench ws_reads`.

mod support;

use std::fs;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::PATIENCE;
use support::machine::print_machine;
use support::server::Server;
use support::websocket_clients::wait_until_read;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

/// The service binary, built by Cargo with the bench profile.
const SERVICE: &str = env!("CARGO_BIN_EXE_rust-web-prometheus-example");

/// Rounds of every case on every build, interleaved, so that noise from
/// the shared machine falls on all of them alike.
const ROUNDS: usize = 5;

/// One burst a client sends.
#[derive(Clone, Copy)]
struct Case {
    name: &'static str,
    payload_bytes: usize,
    text: bool,
    messages: usize,
}

const CASES: [Case; 4] = [
    Case {
        name: "10 B text x 2,000",
        payload_bytes: 10,
        text: true,
        messages: 2_000,
    },
    Case {
        name: "16 B binary x 300,000",
        payload_bytes: 16,
        text: false,
        messages: 300_000,
    },
    Case {
        name: "2,000 B binary x 20,000",
        payload_bytes: 2_000,
        text: false,
        messages: 20_000,
    },
    Case {
        name: "empty binary x 300,000",
        payload_bytes: 0,
        text: false,
        messages: 300_000,
    },
];

/// The cases whose receive syscalls are counted, with fewer messages for
/// the empty frames: tracing is slow, and the count is per frame anyway.
const COUNTED: [(usize, usize); 2] = [(0, 2_000), (3, 20_000)];

/// A build of the service under test.
struct Build {
    name: String,
    binary: String,
}

fn main() {
    print_machine();
    let builds = builds();
    let runtime = tokio::runtime::Runtime::new().expect("start the tokio runtime");
    if let Err(err) = runtime.block_on(run(&builds)) {
        println!("aborted: {err}");
    }
}

/// This build first, then those named in `WS_READS_BASELINES`.
fn builds() -> Vec<Build> {
    let mut builds = vec![Build {
        name: "this build".to_owned(),
        binary: SERVICE.to_owned(),
    }];
    if let Ok(baselines) = std::env::var("WS_READS_BASELINES") {
        for entry in baselines.split(',').filter(|entry| !entry.is_empty()) {
            let (name, binary) = entry
                .split_once('=')
                .expect("WS_READS_BASELINES: entries are name=path, separated by commas");
            builds.push(Build {
                name: name.to_owned(),
                binary: binary.to_owned(),
            });
        }
    }
    builds
}

fn start(build: &Build) -> Result<Server, String> {
    let mut command = Command::new(&build.binary);
    command
        .env("COLLECT_INTERVAL_MS", "0")
        .env("RUST_LOG", "warn");
    Server::start(command)
}

async fn run(builds: &[Build]) -> Result<(), String> {
    let servers: Vec<Server> = builds.iter().map(start).collect::<Result<_, _>>()?;
    let bursts: Vec<Vec<u8>> = CASES
        .iter()
        .map(|case| burst(*case, case.messages))
        .collect();

    // cpu[case][build][round], in ns per message.
    let mut cpu = vec![vec![Vec::new(); builds.len()]; CASES.len()];
    for round in 0..ROUNDS {
        for (which, case) in CASES.iter().enumerate() {
            for (build, server) in servers.iter().enumerate() {
                let socket = connect(server).await?;
                let (sent, _, spent) = server.timed(send(socket, &bursts[which])).await;
                sent?;
                cpu[which][build].push(spent.as_nanos() as f64 / case.messages as f64);
            }
        }
        println!("round {} of {ROUNDS} done", round + 1);
    }

    let mut syscalls = vec![vec![None; builds.len()]; COUNTED.len()];
    for (counted, &(which, messages)) in COUNTED.iter().enumerate() {
        let burst = burst(CASES[which], messages);
        for (build, server) in servers.iter().enumerate() {
            syscalls[counted][build] = count_receive_syscalls(server, &burst).await?;
        }
    }
    print_figures(builds, &cpu, &syscalls);
    Ok(())
}

/// The bytes a client sends for `messages` messages of `case`, masked as
/// clients must.
fn burst(case: Case, messages: usize) -> Vec<u8> {
    let opcode = OpCode::Data(if case.text { Data::Text } else { Data::Binary });
    let mut bytes = Vec::new();
    for i in 0..messages {
        let payload = vec![b'a' + (i % 26) as u8; case.payload_bytes];
        let mut frame = Frame::message(payload, opcode, true);
        frame.header_mut().mask = Some((i as u32).to_be_bytes());
        frame.format(&mut bytes).expect("format into a Vec");
    }
    bytes
}

/// Writes `burst`, and returns once the server has read all of it (it
/// answers a ping sent after the burst only then) and the socket is closed.
async fn send(mut socket: WebSocketStream<TcpStream>, burst: &[u8]) -> Result<(), String> {
    let exchange = async {
        socket
            .get_mut()
            .write_all(burst)
            .await
            .map_err(|e| e.to_string())?;
        wait_until_read(&mut socket).await?;
        socket.close(None).await.map_err(|e| e.to_string())
    };
    tokio::time::timeout(PATIENCE, exchange)
        .await
        .map_err(|_| "a burst was not read in time".to_owned())?
}

async fn connect(server: &Server) -> Result<WebSocketStream<TcpStream>, String> {
    let stream = TcpStream::connect(server.addr)
        .await
        .map_err(|e| e.to_string())?;
    let url = format!("ws://{}/ws/reads", server.addr);
    let (socket, _) = tokio_tungstenite::client_async(url, stream)
        .await
        .map_err(|e| e.to_string())?;
    Ok(socket)
}

/// The server's `recvfrom` calls while a client connects, sends `burst`
/// and closes, counted by strace
/// attached to all its threads; `None` if strace cannot be run.
async fn count_receive_syscalls(server: &Server, burst: &[u8]) -> Result<Option<u64>, String> {
    let summary = std::env::temp_dir().join(format!("ws_reads_strace_{}", server.pid()));
    let tracer = Command::new("strace")
        .args(["-c", "-f", "-e", "trace=recvfrom", "-o"])
        .arg(&summary)
        .args(["-p", &server.pid().to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn();
    let Ok(mut tracer) = tracer else {
        println!("strace not available: receive syscalls not counted");
        return Ok(None);
    };
    if !attached(&mut tracer) {
        println!("strace could not attach: receive syscalls not counted");
        let _ = tracer.kill();
        let _ = tracer.wait();
        return Ok(None);
    }
    // Counted from the connection's start: the handshake, the ping and the
    // close add a few calls to the burst's.
    send(connect(server).await?, burst).await?;
    // SIGINT makes strace detach and write its summary.
    // SAFETY: kill(2) on a child this process started and has not reaped.
    unsafe { libc::kill(tracer.id() as libc::pid_t, libc::SIGINT) };
    let _ = tracer.wait();
    let text = fs::read_to_string(&summary).map_err(|e| e.to_string())?;
    let _ = fs::remove_file(&summary);
    Ok(text
        .lines()
        .find(|line| line.trim_end().ends_with("recvfrom"))
        .and_then(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // % time, seconds, usecs/call, calls, [errors,] syscall
            fields.get(3)?.parse().ok()
        }))
}

/// Waits for strace to say it has attached to every thread (it prints one
/// line per thread, the last before it starts tracing is enough to know it
/// is running); false if it exits first.
fn attached(tracer: &mut Child) -> bool {
    let stderr = tracer.stderr.take().expect("piped stderr");
    let mut lines = BufReader::new(stderr).lines();
    let seen = lines
        .by_ref()
        .map_while(Result::ok)
        .any(|line| line.contains("attached"));
    // Keep draining so strace never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    // strace attaches to the threads one after the other.
    std::thread::sleep(Duration::from_millis(500));
    seen
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}

fn print_figures(builds: &[Build], cpu: &[Vec<Vec<f64>>], syscalls: &[Vec<Option<u64>>]) {
    println!(
        "\nserver CPU per message, us: median of {ROUNDS} rounds [min-max], and vs this build"
    );
    for (which, case) in CASES.iter().enumerate() {
        println!("{}", case.name);
        let ours = median(&cpu[which][0]);
        for (build, figures) in builds.iter().zip(&cpu[which]) {
            let low = figures.iter().copied().fold(f64::INFINITY, f64::min);
            let high = figures.iter().copied().fold(0.0, f64::max);
            println!(
                "  {:<24} {:>7.3} [{:.3}-{:.3}]  {:>5.2}x",
                build.name,
                median(figures) / 1e3,
                low / 1e3,
                high / 1e3,
                median(figures) / ours
            );
        }
    }
    println!(
        "\nreceive syscalls (recvfrom) for a connection that sends the burst, a ping and a close"
    );
    for (counted, &(which, messages)) in COUNTED.iter().enumerate() {
        let case = CASES[which];
        let frame_bytes = burst(case, 1).len();
        println!(
            "{} B frames x {messages} ({} bytes sent)",
            frame_bytes,
            frame_bytes * messages
        );
        for (build, count) in builds.iter().zip(&syscalls[counted]) {
            match count {
                Some(count) => println!(
                    "  {:<24} {count:>7}  ({:.2} per message)",
                    build.name,
                    *count as f64 / messages as f64
                ),
                None => println!("  {:<24} not counted", build.name),
            }
        }
    }
}
