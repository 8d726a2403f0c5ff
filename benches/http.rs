//! What the service's HTTP side costs: `cargo bench --bench http`.
//!
//! 1. CPU per request on `/some`: the service, as shipped and with its
//!    collector off, against a bare warp route served by hyper's HTTP/1.1
//!    alone, as the service serves (`warp::serve` would also sniff for
//!    HTTP/2), and a second bare server, whose distance from the first is
//!    the noise. Each server is its own process, so its CPU time is read
//!    from `/proc` apart from the load generator's: 32 keep-alive
//!    connections from one thread, moved from server to server in short
//!    slices in rotating order.
//! 2. Memory of slow request heads: 1,024 connections each sending a head
//!    without its end, to the service and to `warp::serve` with hyper's
//!    defaults, and the server's RSS per connection.
//! 3. Idle CPU of the simulated collector at its default 10 ms.

mod support;

use std::convert::Infallible;
use std::process::Command;
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use support::load::{Schedule, side_by_side};
use support::machine::{print_date, print_machine, raise_fd_limit};
use support::server::{Server, serve};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use warp::Filter;
use warp::http::StatusCode;
use warp::hyper::server::conn::http1;
use warp::reply::Reply;

/// Makes this executable serve the bare route, or the route with
/// `warp::serve`, instead of benchmarking.
const SERVE_BARE: &str = "--serve-bare";
const SERVE_WARP: &str = "--serve-warp";

const SCHEDULE: Schedule = Schedule {
    connections: 32,
    rounds: 20,
    slice: Duration::from_millis(500),
};

/// The service's default `HTTP_MAX_CONNECTIONS`, and two heads: just under
/// the service's 16 KiB limit, and just under hyper's default ceiling.
const HEAD_CONNECTIONS: usize = 1024;
const HEADS: [(&str, usize); 2] = [("15.5 KiB", 15_872), ("390 KiB", 390 * 1024)];

const IDLE_TIME: Duration = Duration::from_secs(30);

fn main() {
    let route = || warp::path!("some").and(warp::get()).map(|| "hello!");
    if std::env::args().any(|arg| arg == SERVE_BARE) {
        // A rejection answered as `warp::serve` answers it.
        let not_found = |_| async { Ok::<_, Infallible>(StatusCode::NOT_FOUND.into_response()) };
        let bare = route().map(Reply::into_response).recover(not_found).unify();
        serve(|listener| serve_http1(listener, bare));
        return;
    }
    if std::env::args().any(|arg| arg == SERVE_WARP) {
        serve(|listener| warp::serve(route()).incoming(listener).run());
        return;
    }
    print_machine();
    print_date();
    raise_fd_limit();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("start the load generator's runtime");
    runtime.block_on(cpu_per_request());
    runtime.block_on(slow_heads());
    idle_collector();
}

/// This executable, serving as `what` says.
fn this_serving(what: &str) -> Result<Server, String> {
    let mut command = Command::new(std::env::current_exe().expect("path of this benchmark"));
    command.arg(what);
    Server::start(command)
}

/// Serves `routes` on every connection with hyper's HTTP/1.1 alone.
async fn serve_http1<F>(listener: TcpListener, routes: F)
where
    F: Filter<Extract = (warp::reply::Response,), Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
{
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let service = TowerToHyperService::new(warp::service(routes.clone()));
        tokio::spawn(http1::Builder::new().serve_connection(TokioIo::new(stream), service));
    }
}

async fn cpu_per_request() {
    println!("\n== CPU per request on /some, against a bare warp route ==");
    println!(
        "{} connections; {} rounds, each loading every server for {:?} in turn",
        SCHEDULE.connections, SCHEDULE.rounds, SCHEDULE.slice
    );
    let servers = [
        ("service", Server::service(&[])),
        (
            "collector off",
            Server::service(&[("COLLECT_INTERVAL_MS", "0")]),
        ),
        ("bare", this_serving(SERVE_BARE)),
        ("bare again", this_serving(SERVE_BARE)),
    ]
    .map(|(name, server)| (name, server.expect("start a server")));
    const BARE: usize = 2;
    let measured: Vec<&Server> = servers.iter().map(|(_, server)| server).collect();
    let rounds = side_by_side(
        &measured,
        b"GET /some HTTP/1.1\r\nHost: bench\r\n\r\n",
        SCHEDULE,
    )
    .await;
    let bare = rounds.total(BARE);
    println!(
        "{:>13}  {:>10}  {:>16}  {:>27}",
        "server", "CPU µs/req", "vs bare, all", "vs bare, rounds (IQR)"
    );
    for (which, (name, _)) in servers.iter().enumerate() {
        let total = rounds.total(which);
        let [lower, median, upper] = rounds.cpu_ratio_quartiles(which, BARE);
        println!(
            "{name:>13}  {:>10.2}  {:>16.3}  {median:>12.3} ({lower:.3}..{upper:.3})",
            total.cpu_per_request() * 1e6,
            total.cpu_per_request() / bare.cpu_per_request(),
        );
    }
    println!("service: as shipped (collector every 10 ms); collector off: COLLECT_INTERVAL_MS=0");
}

async fn slow_heads() {
    println!("\n== {HEAD_CONNECTIONS} slow request heads: the server's RSS ==");
    println!(
        "{:>28} {:>9} {:>11} {:>11} {:>15} {:>9}",
        "server", "head", "RSS before", "RSS loaded", "per connection", "answered"
    );
    for (head_name, head_bytes) in HEADS {
        let servers = [
            // An idle timeout longer than the measurement: no head is cut.
            (
                "service (16 KiB buffer)",
                Server::service(&[
                    ("COLLECT_INTERVAL_MS", "0"),
                    ("HTTP_IDLE_TIMEOUT_SECS", "600"),
                ]),
            ),
            ("warp::serve (hyper default)", this_serving(SERVE_WARP)),
        ];
        for (name, server) in servers {
            let server = server.expect("start a server");
            let before = server.status_kib("VmRSS").expect("RSS");
            let mut head = b"GET /some HTTP/1.1\r\nHost: bench\r\nX-Padding: ".to_vec();
            head.resize(head_bytes, b'a');
            let mut connections = Vec::new();
            for _ in 0..HEAD_CONNECTIONS {
                let mut stream = TcpStream::connect(server.addr).await.expect("connect");
                // A server that refuses the head may close before it is all sent.
                let _ = stream.write_all(&head).await;
                connections.push(stream);
            }
            let loaded = settled_rss(&server).await;
            // Answered with 431, or closed, rather than still waiting.
            let answered = connections
                .iter()
                .filter(|stream| !matches!(stream.try_read(&mut [0]), Err(err) if err.kind() == std::io::ErrorKind::WouldBlock))
                .count();
            println!(
                "{name:>28} {head_name:>9} {:>7.1} MiB {:>7.1} MiB {:>11.1} KiB {answered:>9}",
                before as f64 / 1024.0,
                loaded as f64 / 1024.0,
                loaded.saturating_sub(before) as f64 / HEAD_CONNECTIONS as f64,
            );
        }
    }
}

/// The server's RSS in KiB once it has stayed put for a second: it reads
/// the heads a moment after they are sent.
async fn settled_rss(server: &Server) -> u64 {
    let mut last = server.status_kib("VmRSS").expect("RSS");
    let mut since = Instant::now();
    while since.elapsed() < Duration::from_secs(1) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = server.status_kib("VmRSS").expect("RSS");
        if now != last {
            (last, since) = (now, Instant::now());
        }
    }
    last
}

fn idle_collector() {
    println!("\n== idle CPU: the collector at its default 10 ms against switched off ==");
    let on = Server::service(&[]).expect("start the service");
    let off = Server::service(&[("COLLECT_INTERVAL_MS", "0")]).expect("start the service");
    std::thread::sleep(Duration::from_secs(1));
    let before = [on.cpu_snapshot(), off.cpu_snapshot()];
    let started = Instant::now();
    std::thread::sleep(IDLE_TIME);
    let wall = started.elapsed().as_secs_f64();
    let share = |server: &Server, before| 100.0 * server.cpu_since(before).as_secs_f64() / wall;
    let (on, off) = (share(&on, &before[0]), share(&off, &before[1]));
    println!("over {wall:.0} s: collector on {on:.3} % of a core, off {off:.3} %");
}
