//! The chaos run: the release binary under everything at once for
//! [`RUN`], and afterwards the accounting must still be exact.
//!
//! At the same time: keep-alive load on `/some`; a scrape of the metrics
//! port every 250 ms, each parsed; websocket clients going through every
//! ending (close handshake, TCP reset, oversize message, frozen peer, long
//! id refused, a fragment that never completes, long messages); a flood of
//! silent connections that takes every slot of the main port for a while;
//! and, half-way, the reader of the server's stdout (its log) going away.
//!
//! Then: `/some`'s 200s in `http_requests_total` and `incoming_requests`
//! equal the 200s the clients received; `connected_clients` is back to 0 and
//! was never negative; every scrape succeeded, and scrapes kept answering
//! while a request on the main port waited behind the flood; nothing
//! panicked and the server still answers; and RSS is back within twice its
//! level before the run once the memory trim has run.
//!
//! It runs for about a minute and measures the release binary, so plain
//! `cargo test` skips it; `.ci/run` runs it with
//! `cargo test --release --test chaos -- --include-ignored`.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::process::ChildStdout;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::{Exposition, PATIENCE, TestServer, close_code, connect_ws};
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// How long the chaos lasts.
const RUN: Duration = Duration::from_secs(30);
/// Keep-alive connections loading `/some`, and websocket clients churning.
const LOAD_CONNECTIONS: usize = 4;
const CHURN_CLIENTS: usize = 4;
/// Between scrapes of the metrics port.
const SCRAPE_EVERY: Duration = Duration::from_millis(250);
/// The main port's connection limit; the flood opens more than that.
const MAX_CONNECTIONS: usize = 32;
const FLOOD_CONNECTIONS: usize = MAX_CONNECTIONS + 16;
/// When the flood comes, how long it holds, and when the log reader goes.
const FLOOD_AT: Duration = Duration::from_secs(6);
const FLOOD_HOLDS: Duration = Duration::from_secs(8);
const LOG_READER_DIES_AT: Duration = Duration::from_secs(15);
/// Short heartbeats, so a frozen peer and a stalled fragment end within
/// the run (two heartbeats each).
const HEARTBEAT_SECS: u64 = 1;
/// The default `WS_MAX_MESSAGE_BYTES`.
const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// An id longer than the 128 bytes the server accepts.
const LONG_ID_BYTES: usize = 200;

/// The `/some` request the load and the probes send.
const SOME_REQUEST: &[u8] = b"GET /some HTTP/1.1\r\nHost: chaos\r\n\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "about a minute against the release binary; .ci/run runs it with --release"]
async fn chaos_run_keeps_the_accounting_exact_and_the_service_up() {
    let (server, log) = TestServer::start_with_stdout_pipe(&[
        ("METRICS_ADDR", "127.0.0.1:0"),
        ("HTTP_MAX_CONNECTIONS", &MAX_CONNECTIONS.to_string()),
        // Longer than the run: the flood holds its slots until it leaves.
        ("HTTP_IDLE_TIMEOUT_SECS", "600"),
        ("WS_HEARTBEAT_SECS", &HEARTBEAT_SECS.to_string()),
        ("WS_MAX_MESSAGE_BYTES", &MAX_MESSAGE_BYTES.to_string()),
    ]);
    let log_reader = LogReader::start(log);
    let metrics_addr = server.metrics_addr.expect("a `Metrics on port N` line");
    let answered_200 = Arc::new(AtomicU64::new(0));

    // The level before the run: started, scraped and served once.
    assert_eq!(some_once(server.addr).await, 200);
    answered_200.fetch_add(1, Ordering::Relaxed);
    server.metrics().await;
    let rss_before = server.rss_bytes();

    let start = Instant::now();
    let end = start + RUN;
    let load: Vec<_> = (0..LOAD_CONNECTIONS)
        .map(|_| tokio::spawn(keep_alive_load(server.addr, end, Arc::clone(&answered_200))))
        .collect();
    let churn: Vec<_> = (0..CHURN_CLIENTS)
        .map(|client| tokio::spawn(websocket_churn(server.addr, client, end)))
        .collect();
    let scrapes = tokio::spawn(scrape_every_250ms(metrics_addr, end));
    let flood = tokio::spawn(flood_the_main_port(
        server.addr,
        start,
        Arc::clone(&answered_200),
    ));

    tokio::time::sleep_until(start + LOG_READER_DIES_AT).await;
    log_reader.close().await;

    for task in load {
        task.await.expect("the keep-alive load ran to the end");
    }
    let mut endings = Endings::default();
    for task in churn {
        endings.add(&task.await.expect("a websocket client ran to the end"));
    }
    let scrapes = scrapes.await.expect("the scraper ran to the end");
    let probe_waited_through = flood.await.expect("the flood came and went");

    // Every ending happened, more than once.
    for (ending, count) in endings.counts() {
        assert!(count >= 2, "{ending:?} happened {count} times: {endings:?}");
    }
    // Every scrape answered and parsed, the gauge never went negative.
    let failed: Vec<_> = scrapes.iter().filter_map(|s| s.as_ref().err()).collect();
    assert!(failed.is_empty(), "failed scrapes: {failed:?}");
    let scrapes: Vec<&Scrape> = scrapes.iter().filter_map(|s| s.as_ref().ok()).collect();
    assert!(
        scrapes.len() as u128 >= RUN.as_millis() / SCRAPE_EVERY.as_millis() / 2,
        "only {} scrapes in {RUN:?}",
        scrapes.len()
    );
    let lowest = scrapes
        .iter()
        .map(|scrape| scrape.connected_clients)
        .fold(f64::INFINITY, f64::min);
    assert!(lowest >= 0.0, "connected_clients went down to {lowest}");
    // Scrapes did not wait on the flood: while a request on the main port
    // waited behind it, scrapes of the metrics port kept answering.
    let (waited_from, waited_until) = probe_waited_through;
    let answered_meanwhile = scrapes
        .iter()
        .filter(|scrape| waited_from <= scrape.started && scrape.answered <= waited_until)
        .count();
    assert!(
        answered_meanwhile >= 1,
        "no scrape answered while the main port was flooded"
    );

    // Still serving, and every client has gone.
    assert_eq!(some_once(server.addr).await, 200, "still answers");
    answered_200.fetch_add(1, Ordering::Relaxed);
    server.wait_for_sample("connected_clients", 0.0).await;

    let answered_200 = answered_200.load(Ordering::Relaxed) as f64;
    let metrics = server.metrics().await;
    assert_eq!(
        metrics.sample(
            "http_requests_total",
            &[("method", "GET"), ("path", "/some"), ("status", "200")]
        ),
        Some(answered_200),
        "http_requests_total for /some against the 200s clients received"
    );
    assert_eq!(
        metrics.value("incoming_requests"),
        Some(answered_200),
        "incoming_requests against the 200s clients received"
    );

    for code in ["1000", "1006", "1008", "1009"] {
        let ended = endings
            .0
            .iter()
            .filter(|ending| ending.close_code() == Some(code))
            .count();
        assert_eq!(
            metrics.sample("websocket_closes_total", &[("code", code)]),
            Some(ended as f64),
            "websocket_closes_total with {code} against the clients that ended so"
        );
    }

    let panics: Vec<_> = server
        .stderr()
        .into_iter()
        .filter(|line| line.contains("panicked"))
        .collect();
    assert!(panics.is_empty(), "the server panicked: {panics:#?}");

    // The trim runs every few seconds after a client has left.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let rss = server.rss_bytes();
        if rss <= 2 * rss_before {
            println!(
                "chaos run: {answered_200} answers of 200 to /some, {} scrapes (slowest {:?}), \
                 websocket endings {:?}, RSS {} KiB before and {} KiB after",
                scrapes.len(),
                scrapes
                    .iter()
                    .map(|s| s.answered - s.started)
                    .max()
                    .unwrap_or_default(),
                endings.counts(),
                rss_before / 1024,
                rss / 1024,
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "RSS stayed at {} KiB, more than twice the {} KiB before the run",
            rss / 1024,
            rss_before / 1024
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Reads the server's log (its stdout) until told to go away, like a log
/// shipper that dies.
struct LogReader {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl LogReader {
    fn start(mut log: BufReader<ChildStdout>) -> LogReader {
        // Non-blocking, so that the reader sees the order to stop even while
        // the server logs nothing.
        let fd = log.get_ref().as_raw_fd();
        // SAFETY: fcntl on a descriptor this process owns; no memory is passed.
        let set = unsafe { libc::fcntl(fd, libc::F_SETFL, libc::O_NONBLOCK) };
        assert_eq!(set, 0, "make the log pipe non-blocking");
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut line = Vec::new();
            while !stopping.load(Ordering::Relaxed) {
                match log.read_until(b'\n', &mut line) {
                    Ok(0) => break,
                    Ok(_) => line.clear(),
                    Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(_) => break,
                }
            }
            // Dropping `log` closes the reading end of the pipe.
        });
        LogReader { stop, thread }
    }

    /// Closes the pipe, and returns once it is closed.
    async fn close(self) {
        self.stop.store(true, Ordering::Relaxed);
        let deadline = Instant::now() + PATIENCE;
        while !self.thread.is_finished() {
            assert!(Instant::now() < deadline, "the log reader did not stop");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Sends `GET /some` on `stream` and reads the whole response, returning its
/// status. An error means the connection broke before the answer was whole.
async fn exchange(stream: &mut TcpStream) -> std::io::Result<u16> {
    stream.write_all(SOME_REQUEST).await?;
    let mut response = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        response.extend_from_slice(&chunk[..read]);
        let Some(head_end) = response.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&response[..head_end]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|line| line.strip_prefix("content-length: "))
            .and_then(|length| length.trim().parse().ok())
            .expect("a content-length");
        if response.len() >= head_end + 4 + length {
            let status = head
                .split(' ')
                .nth(1)
                .and_then(|status| status.parse().ok())
                .expect("a status line");
            return Ok(status);
        }
    }
}

/// `GET /some` on a connection of its own.
async fn some_once(addr: SocketAddr) -> u16 {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    exchange(&mut stream).await.expect("an answer to GET /some")
}

/// Requests `/some` on one keep-alive connection until `end`, counting the
/// 200s received; a broken connection is replaced.
async fn keep_alive_load(addr: SocketAddr, end: Instant, answered_200: Arc<AtomicU64>) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    while Instant::now() < end {
        match exchange(&mut stream).await {
            Ok(200) => {
                answered_200.fetch_add(1, Ordering::Relaxed);
            }
            Ok(status) => panic!("GET /some answered {status}"),
            Err(_) => stream = TcpStream::connect(addr).await.expect("reconnect"),
        }
        // Steady load that leaves the two cores room for everything else.
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// One scrape: when it was sent and answered, and the gauge it read.
struct Scrape {
    started: Instant,
    answered: Instant,
    connected_clients: f64,
}

/// Scrapes the metrics port every 250 ms until `end`, each on a new
/// connection, parsing every exposition.
async fn scrape_every_250ms(metrics_addr: SocketAddr, end: Instant) -> Vec<Result<Scrape, String>> {
    let mut scrapes = Vec::new();
    let mut ticks = tokio::time::interval(SCRAPE_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while Instant::now() < end {
        ticks.tick().await;
        let started = Instant::now();
        let scrape = async {
            let response = reqwest::get(format!("http://{metrics_addr}/metrics"))
                .await
                .map_err(|err| format!("GET /metrics: {err}"))?;
            if response.status() != 200 {
                return Err(format!("GET /metrics: {}", response.status()));
            }
            let body = response
                .text()
                .await
                .map_err(|err| format!("body: {err}"))?;
            // `samples` parses every line, panicking on a malformed one.
            let exposition = Exposition(body);
            let _ = exposition.samples();
            let connected_clients = exposition
                .value("connected_clients")
                .ok_or("no connected_clients")?;
            Ok(Scrape {
                started,
                answered: Instant::now(),
                connected_clients,
            })
        };
        scrapes.push(match tokio::time::timeout(PATIENCE, scrape).await {
            Ok(scrape) => scrape,
            Err(_) => Err(format!("no answer within {PATIENCE:?}")),
        });
    }
    scrapes
}

/// At [`FLOOD_AT`] after `start`, opens more silent connections than the
/// main port has slots and holds them for [`FLOOD_HOLDS`]. A `/some` request
/// sent behind them must wait until they leave; returns when it started and
/// stopped waiting, and counts its 200.
async fn flood_the_main_port(
    addr: SocketAddr,
    start: Instant,
    answered_200: Arc<AtomicU64>,
) -> (Instant, Instant) {
    tokio::time::sleep_until(start + FLOOD_AT).await;
    let mut flood = Vec::new();
    for _ in 0..FLOOD_CONNECTIONS {
        flood.push(TcpStream::connect(addr).await.expect("flood connect"));
    }
    let mut probe = TcpStream::connect(addr).await.expect("probe connect");
    let waiting_from = Instant::now();
    let probe: JoinHandle<u16> =
        tokio::spawn(async move { exchange(&mut probe).await.expect("probe answered") });
    tokio::time::sleep(FLOOD_HOLDS).await;
    let waiting_until = Instant::now();
    assert!(
        !probe.is_finished(),
        "the flood did not hold the main port: a request behind it was served"
    );
    drop(flood);
    let status = tokio::time::timeout(PATIENCE, probe)
        .await
        .expect("the request behind the flood was served once it left")
        .unwrap();
    assert_eq!(status, 200);
    answered_200.fetch_add(1, Ordering::Relaxed);
    (waiting_from, waiting_until)
}

/// How a websocket session ended, as the client made it end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    CloseHandshake,
    Reset,
    OversizeMessage,
    FrozenPeer,
    LongIdRefused,
    StalledFragment,
    LongMessages,
}

impl Ending {
    /// The close code the server counts the ending under, if it began a
    /// session: none could reach a reset or frozen client (1006).
    fn close_code(self) -> Option<&'static str> {
        match self {
            Ending::CloseHandshake | Ending::LongMessages => Some("1000"),
            Ending::Reset | Ending::FrozenPeer => Some("1006"),
            Ending::OversizeMessage => Some("1009"),
            Ending::StalledFragment => Some("1008"),
            Ending::LongIdRefused => None,
        }
    }
}

const ENDINGS: [Ending; 7] = [
    Ending::CloseHandshake,
    Ending::Reset,
    Ending::OversizeMessage,
    Ending::FrozenPeer,
    Ending::LongIdRefused,
    Ending::StalledFragment,
    Ending::LongMessages,
];

/// How many times each ending happened.
#[derive(Debug, Default)]
struct Endings(Vec<Ending>);

impl Endings {
    fn add(&mut self, other: &Endings) {
        self.0.extend_from_slice(&other.0);
    }

    fn counts(&self) -> Vec<(Ending, usize)> {
        ENDINGS
            .iter()
            .map(|&ending| (ending, self.0.iter().filter(|&&e| e == ending).count()))
            .collect()
    }
}

/// One websocket client after another until `end`, going through every
/// ending in turn, each client `client` starting at a different one.
async fn websocket_churn(addr: SocketAddr, client: usize, end: Instant) -> Endings {
    let mut endings = Endings::default();
    let mut turn = client;
    while Instant::now() < end {
        let ending = ENDINGS[turn % ENDINGS.len()];
        let id = format!("churn-{client}-{turn}");
        match ending {
            Ending::CloseHandshake => close_handshake(addr, &id).await,
            Ending::Reset => reset(addr, &id).await,
            Ending::OversizeMessage => oversize_message(addr, &id, turn).await,
            Ending::FrozenPeer => frozen_peer(addr, &id).await,
            Ending::LongIdRefused => long_id_refused(addr).await,
            Ending::StalledFragment => stalled_fragment(addr, &id).await,
            Ending::LongMessages => long_messages(addr, &id).await,
        }
        endings.0.push(ending);
        turn += 1;
    }
    endings
}

/// Reads until the server ends the connection, within [`PATIENCE`], and
/// returns its close code, if it sent one.
async fn read_to_end(
    socket: &mut tokio_tungstenite::WebSocketStream<TcpStream>,
    what: &str,
) -> Option<CloseCode> {
    tokio::time::timeout(PATIENCE, close_code(socket))
        .await
        .unwrap_or_else(|_| panic!("the server did not end the session ({what})"))
}

async fn close_handshake(addr: SocketAddr, id: &str) {
    let mut socket = connect_ws(addr, id).await;
    socket.send(Message::text("hello")).await.expect("send");
    socket.close(None).await.expect("send close frame");
    read_to_end(&mut socket, "close handshake").await;
}

async fn reset(addr: SocketAddr, id: &str) {
    let mut socket = connect_ws(addr, id).await;
    socket
        .send(Message::text("about to vanish"))
        .await
        .expect("send");
    // SO_LINGER 0: dropping the socket sends a reset, no close frame, no FIN.
    socket.get_ref().set_zero_linger().expect("set SO_LINGER 0");
    drop(socket);
}

/// A message over the limit, alternately just over it and 16 times it, sent
/// while reading as a browser does: the client must read the 1009.
async fn oversize_message(addr: SocketAddr, id: &str, turn: usize) {
    let size = if turn.is_multiple_of(2) {
        MAX_MESSAGE_BYTES + 4 * 1024
    } else {
        16 * MAX_MESSAGE_BYTES
    };
    let (mut sink, mut stream) = connect_ws(addr, id).await.split();
    let sending = tokio::spawn(async move {
        // The server stops reading once it has refused the message; the
        // send may fail then, which is not what this checks.
        let _ = sink.send(Message::binary(vec![b'x'; size])).await;
        sink
    });
    let mut code = None;
    let reading = async {
        while let Some(Ok(message)) = stream.next().await {
            if let Message::Close(Some(frame)) = message {
                code = Some(frame.code);
            }
        }
    };
    tokio::time::timeout(PATIENCE, reading)
        .await
        .expect("the server ended the oversize session");
    let _ = sending.await;
    assert_eq!(code, Some(CloseCode::Size), "a {size}-byte message");
}

/// Connects, then neither reads nor answers pings for four heartbeats: the
/// server must drop it for silence.
async fn frozen_peer(addr: SocketAddr, id: &str) {
    let mut socket = connect_ws(addr, id).await;
    tokio::time::sleep(Duration::from_secs(4 * HEARTBEAT_SECS)).await;
    // Reading now finds the pings queued up, then the end.
    tokio::time::timeout(PATIENCE, async {
        while let Some(Ok(_)) = socket.next().await {}
    })
    .await
    .expect("the server dropped the frozen peer");
}

async fn long_id_refused(addr: SocketAddr) {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let id = "i".repeat(LONG_ID_BYTES);
    let url = format!("ws://{addr}/ws/{id}");
    match tokio_tungstenite::client_async(url, stream).await {
        Err(WsError::Http(response)) => assert!(
            response.status().is_client_error(),
            "a {LONG_ID_BYTES}-byte id: {}",
            response.status()
        ),
        Err(err) => panic!("a {LONG_ID_BYTES}-byte id: {err}"),
        Ok((_, response)) => panic!(
            "a {LONG_ID_BYTES}-byte id was accepted: {}",
            response.status()
        ),
    }
}

/// The first fragment of a text message and then only pongs: the server
/// must close within two heartbeats, with 1008.
async fn stalled_fragment(addr: SocketAddr, id: &str) {
    let mut socket = connect_ws(addr, id).await;
    let first = Frame::message(
        "the start of a message".as_bytes().to_vec(),
        OpCode::Data(Data::Text),
        false,
    );
    socket
        .send(Message::Frame(first))
        .await
        .expect("send a fragment");
    // Reading answers the server's pings.
    let code = read_to_end(&mut socket, "stalled fragment").await;
    assert_eq!(code, Some(CloseCode::Policy), "a stalled fragment's close");
}

/// Messages just under the limit, then a clean close.
async fn long_messages(addr: SocketAddr, id: &str) {
    let mut socket = connect_ws(addr, id).await;
    for _ in 0..4 {
        let message = "m".repeat(MAX_MESSAGE_BYTES - 1024);
        socket.send(Message::text(message)).await.expect("send");
    }
    socket.close(None).await.expect("send close frame");
    read_to_end(&mut socket, "long messages").await;
}
