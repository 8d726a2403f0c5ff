//! What the instrumentation costs, measured side by side in one run:
//! `cargo bench --bench http`.
//!
//! 1. `/some` on the service against a bare, uninstrumented warp route with
//!    the same reply, each in its own process under the same load: requests
//!    per second, server CPU time per request, and their ratio. The bare
//!    route is served as the service serves its routes, by hyper's HTTP/1.1
//!    connection alone (`warp::serve` would also sniff for HTTP/2 and wrap
//!    each connection), so the two differ only by what the service adds.
//!    Three more servers help read it: the service with its collector off,
//!    the bare route inside the request metrics wrapper alone, and a second
//!    bare server, whose ratio to the first shows how much of any difference
//!    is noise.
//! 2. Recording one request into the thread's buffer against looking the
//!    series up by label values in the shared metrics, on one thread and on
//!    all cores at once, in this process.
//! 3. `/metrics` as the peers were measured: a plain scrape after 10,000
//!    requests, its time per sample beside a `/some` round trip on the same
//!    connection, and, in this process, the service's text encoder against
//!    the `prometheus` crate's `TextEncoder` on the same metric families.
//!    Then with about 1,000 `response_code` series: time per scrape and
//!    bytes, plain and gzip.
//! 4. The idle CPU of the service with its collector at the default 10 ms
//!    against the collector switched off.
//!
//! Servers are separate processes, so their CPU time can be read from
//! `/proc` without counting the load generator's. The load comes from a
//! small keep-alive HTTP/1.1 client on a single-threaded runtime, so it takes
//! at most one core and leaves the rest to the server under test. The load
//! moves from server to server in short slices, in rotating order, so that
//! the machine's other work falls on all of them alike. Ratios are given
//! over all requests and as the median (and quartiles) over rounds.

mod support;

use std::convert::Infallible;
use std::io::Read;
use std::process::Command;
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use prometheus::Encoder;
use rust_web_prometheus_example::http_metrics::{self, RouteTemplate};
use rust_web_prometheus_example::{exposition, metrics};
use support::http_client::Connection;
use support::load::{Schedule, side_by_side};
use support::machine::{cores, print_machine};
use support::server::{Server, serve};
use tokio::net::TcpListener;
use warp::Filter;
use warp::http::{Method, StatusCode};
use warp::hyper::server::conn::http1;
use warp::reply::{Reply, Response};

/// Make this executable serve the bare route, or the bare route inside the
/// request metrics wrapper, instead of benchmarking.
const SERVE_BARE: &str = "--serve-bare";
const SERVE_WRAPPED: &str = "--serve-wrapped";

/// Load on `/some`: open connections per server, rounds, and how long each
/// server is loaded in a round.
const SCHEDULE: Schedule = Schedule {
    connections: 8,
    rounds: 30,
    slice: Duration::from_millis(500),
};

/// Recordings per timed batch in the in-process comparison.
const RECORDINGS: u32 = 1_000_000;

/// Scrapes per variant, and how many distinct `response_code` series to wait
/// for first (2 environments × 499 codes = 998 at most).
const SCRAPES: usize = 500;
const FULL_LABEL_SET: usize = 990;

/// How long each service is watched doing nothing.
const IDLE_TIME: Duration = Duration::from_secs(30);

fn main() {
    if std::env::args().any(|arg| arg == SERVE_BARE) {
        // What `warp::serve` does with a rejection, answered here.
        let some = warp::path!("some")
            .and(warp::get())
            .map(|| "hello!".into_response())
            .recover(|_| async { Ok::<_, Infallible>(StatusCode::NOT_FOUND.into_response()) })
            .unify();
        serve(|listener| serve_http1(listener, some));
        return;
    }
    if std::env::args().any(|arg| arg == SERVE_WRAPPED) {
        let some = warp::path!("some")
            .and(warp::get())
            .map(|| (RouteTemplate::Some, "hello!".into_response()))
            .untuple_one();
        let wrapped = http_metrics::instrument(some);
        serve(|listener| serve_http1(listener, wrapped));
        return;
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("start the load generator's runtime");
    print_machine();
    runtime.block_on(some_against_bare());
    recording_buffered_against_lookup();
    runtime.block_on(scrape_after_requests());
    runtime.block_on(scrapes());
    idle_collector();
}

/// Serves `routes` on every connection with hyper's HTTP/1.1 alone, as the
/// service's `server::accept` does, without its limits.
async fn serve_http1<F>(listener: TcpListener, routes: F)
where
    F: Filter<Extract = (Response,), Error = Infallible> + Clone + Send + Sync + 'static,
{
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let service = TowerToHyperService::new(warp::service(routes.clone()));
        tokio::spawn(http1::Builder::new().serve_connection(TokioIo::new(stream), service));
    }
}

// ===== 1. /some against a bare route =====

async fn some_against_bare() {
    println!("\n== /some: the service against a bare warp route ==");
    println!(
        "{} keep-alive connections per server; {} rounds, each loading every server for {:?} in turn",
        SCHEDULE.connections, SCHEDULE.rounds, SCHEDULE.slice
    );
    let this_benchmark = std::env::current_exe().expect("path of this benchmark");
    let serving = |what| {
        let mut command = Command::new(&this_benchmark);
        command.arg(what);
        Server::start(command)
    };
    let servers = [
        ("service", Server::service(&[])),
        (
            "collector off",
            Server::service(&[("COLLECT_INTERVAL_MS", "0")]),
        ),
        ("wrapped", serving(SERVE_WRAPPED)),
        ("bare", serving(SERVE_BARE)),
        ("bare again", serving(SERVE_BARE)),
    ]
    .map(|(name, server)| (name, server.expect("start a server")));
    const BARE: usize = 3;
    let request = b"GET /some HTTP/1.1\r\nHost: bench\r\n\r\n";
    let measured: Vec<&Server> = servers.iter().map(|(_, server)| server).collect();
    let rounds = side_by_side(&measured, request, SCHEDULE).await;
    let bare = rounds.total(BARE);

    println!(
        "{:>13}  {:>9}  {:>10}  {:>16}  {:>27}  {:>13}",
        "server",
        "req/s",
        "CPU µs/req",
        "CPU vs bare, all",
        "CPU vs bare, rounds (IQR)",
        "req/s vs bare"
    );
    for (which, (name, _)) in servers.iter().enumerate() {
        let total = rounds.total(which);
        let [lower, median, upper] = rounds.cpu_ratio_quartiles(which, BARE);
        println!(
            "{name:>13}  {:>9.0}  {:>10.2}  {:>16.3}  {median:>12.3} ({lower:.3}..{upper:.3})  {:>13.3}",
            total.per_second(),
            total.cpu_per_request() * 1e6,
            total.cpu_per_request() / bare.cpu_per_request(),
            total.per_second() / bare.per_second()
        );
    }
    println!(
        "service: the binary as shipped (collector every 10 ms, all routes, graceful shutdown)"
    );
    println!("collector off: the same with COLLECT_INTERVAL_MS=0");
    println!("wrapped: the bare route inside http_metrics::instrument, and nothing else");
    println!("bare again: a second bare server; its distance from 1 is the noise");
}

// ===== 2. per-thread buffers against a lookup per request =====

fn recording_buffered_against_lookup() {
    println!("\n== recording one request: per-thread buffer against looking up the labels ==");
    // 200 is one of the statuses recorded into the thread's buffer; 418 is
    // not, so it takes the lookup by label values into the shared metrics
    // that every request would take otherwise.
    let kinds = [StatusCode::OK, StatusCode::IM_A_TEAPOT];
    let threads = cores();
    let mut alone = [f64::MAX; 2];
    let mut together = [f64::MAX; 2];
    for _ in 0..5 {
        for (which, status) in kinds.into_iter().enumerate() {
            alone[which] = alone[which].min(record_many(status));
            // As the runtime's worker threads do: all record into the same
            // series at once.
            let slowest = std::thread::scope(|scope| {
                let running: Vec<_> = (0..threads)
                    .map(|_| scope.spawn(move || record_many(status)))
                    .collect();
                running
                    .into_iter()
                    .map(|thread| thread.join().expect("recording thread"))
                    .fold(0.0, f64::max)
            });
            together[which] = together[which].min(slowest);
        }
    }
    println!("ns per request, best of 5 × {RECORDINGS}:");
    println!(
        "  one thread:           buffer {:>6.1}, lookup {:>6.1} ({:.1}×)",
        alone[0],
        alone[1],
        alone[1] / alone[0]
    );
    println!(
        "  {threads} threads at once:    buffer {:>6.1}, lookup {:>6.1} ({:.1}×)",
        together[0],
        together[1],
        together[1] / together[0]
    );
}

/// Nanoseconds per [`http_metrics::record`] with `status`.
fn record_many(status: StatusCode) -> f64 {
    let started = Instant::now();
    for _ in 0..RECORDINGS {
        let elapsed = std::hint::black_box(Duration::from_micros(250));
        http_metrics::record(RouteTemplate::Some, &Method::GET, status, elapsed);
    }
    started.elapsed().as_nanos() as f64 / f64::from(RECORDINGS)
}

// ===== 3. /metrics after 10,000 requests, and with the full label set =====

/// Requests before the scrapes, as the peers were measured.
const REQUESTS_BEFORE_SCRAPES: usize = 10_000;

async fn scrape_after_requests() {
    println!("\n== /metrics after {REQUESTS_BEFORE_SCRAPES} requests to /some (collector off) ==");
    let service = Server::service(&[("COLLECT_INTERVAL_MS", "0")]).expect("start the service");
    let mut connection = Connection::open(service.addr).await.expect("connect");
    let some = b"GET /some HTTP/1.1\r\nHost: bench\r\n\r\n";
    let scrape = b"GET /metrics HTTP/1.1\r\nHost: bench\r\n\r\n";
    for _ in 0..REQUESTS_BEFORE_SCRAPES {
        connection.exchange(some).await.expect("request");
    }
    // Scraped twice, so that the exposition counts scrapes too, as a
    // Prometheus-scraped service's does.
    let mut samples = 0;
    for _ in 0..2 {
        let (_, body) = connection.exchange(scrape).await.expect("scrape");
        samples = String::from_utf8_lossy(body)
            .lines()
            .filter(|line| !line.starts_with('#') && !line.is_empty())
            .count();
    }

    let mut times = [Vec::new(), Vec::new()];
    let mut cpu = [Duration::ZERO; 2];
    for _ in 0..SCRAPES {
        for (which, request) in [&scrape[..], &some[..]].into_iter().enumerate() {
            let (exchanged, wall, server_cpu) = service.timed(connection.exchange(request)).await;
            let (status, _) = exchanged.expect("exchange");
            times[which].push(wall);
            cpu[which] += server_cpu;
            assert_eq!(status, 200);
        }
    }
    let median = |times: &mut Vec<Duration>| {
        times.sort();
        times[times.len() / 2].as_secs_f64() * 1e6
    };
    let (scrape_us, some_us) = (median(&mut times[0]), median(&mut times[1]));
    let cpu_us = |which: usize| cpu[which].as_secs_f64() * 1e6 / SCRAPES as f64;
    println!(
        "plain scrape: {samples} samples, median {scrape_us:.1} µs = {:.2} µs per sample; server CPU {:.1} µs per scrape",
        scrape_us / samples as f64,
        cpu_us(0)
    );
    println!(
        "baseline, GET /some on the same connection: median {some_us:.1} µs, server CPU {:.1} µs; the scrape's own share {:.2} µs per sample",
        cpu_us(1),
        (scrape_us - some_us) / samples as f64
    );

    // The same families through both encoders, in this process.
    metrics::register().expect("register the metrics");
    for _ in 0..REQUESTS_BEFORE_SCRAPES {
        let elapsed = Duration::from_micros(100);
        http_metrics::record(RouteTemplate::Some, &Method::GET, StatusCode::OK, elapsed);
    }
    let families = metrics::REGISTRY.gather();
    let ours = thread_cpu_per_call(|| {
        let mut body = Vec::new();
        exposition::encode(&families, &mut body).expect("encode");
        body
    });
    let theirs = thread_cpu_per_call(|| {
        let mut body = Vec::new();
        prometheus::TextEncoder::new()
            .encode(&families, &mut body)
            .expect("encode");
        body
    });
    let gather = thread_cpu_per_call(|| metrics::REGISTRY.gather());
    println!(
        "in this process, CPU per call, best of 5 × 10,000: gather {gather:.2} µs; encode: ours {ours:.2} µs, the prometheus crate's TextEncoder {theirs:.2} µs ({:.1}×)",
        theirs / ours
    );
}

/// This thread's CPU time per call of `work`, in µs: the best of 5 batches
/// of 10,000, so that time the machine gives to others does not count.
fn thread_cpu_per_call<T>(mut work: impl FnMut() -> T) -> f64 {
    let thread_cpu = || {
        let mut now = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime only writes into the struct passed.
        unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
        now.tv_sec as f64 + now.tv_nsec as f64 / 1e9
    };
    (0..5)
        .map(|_| {
            let started = thread_cpu();
            for _ in 0..10_000 {
                std::hint::black_box(work());
            }
            (thread_cpu() - started) * 1e6 / 10_000.0
        })
        .fold(f64::MAX, f64::min)
}

async fn scrapes() {
    println!("\n== /metrics with the tutorial's full label set ==");
    let service = Server::service(&[("COLLECT_INTERVAL_MS", "1")]).expect("start the service");
    let mut connection = Connection::open(service.addr).await.expect("connect");
    let plain_request = b"GET /metrics HTTP/1.1\r\nHost: bench\r\n\r\n";
    let gzip_request = b"GET /metrics HTTP/1.1\r\nHost: bench\r\nAccept-Encoding: gzip\r\n\r\n";

    let waiting = Instant::now();
    let exposition = loop {
        let (_, body) = connection.exchange(plain_request).await.expect("scrape");
        let body = String::from_utf8(body.to_vec()).expect("UTF-8 exposition");
        let codes = body
            .lines()
            .filter(|line| line.starts_with("response_code{"))
            .count();
        if codes >= FULL_LABEL_SET || waiting.elapsed() > Duration::from_secs(60) {
            break body;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let series = exposition
        .lines()
        .filter(|line| !line.starts_with('#'))
        .count();
    let codes = exposition
        .lines()
        .filter(|line| line.starts_with("response_code{"))
        .count();
    println!(
        "{codes} response_code series, {series} samples in all (collector at 1 ms, waited {:.1} s); {SCRAPES} scrapes each, alternating",
        waiting.elapsed().as_secs_f64()
    );

    let mut times = [Vec::new(), Vec::new()];
    let mut cpu = [Duration::ZERO; 2];
    let mut sizes = [0, 0];
    let mut decoded = 0;
    for _ in 0..SCRAPES {
        for (which, request) in [&plain_request[..], &gzip_request[..]].iter().enumerate() {
            let (exchanged, wall, server_cpu) = service.timed(connection.exchange(request)).await;
            let (status, body) = exchanged.expect("scrape");
            times[which].push(wall);
            cpu[which] += server_cpu;
            assert_eq!(status, 200);
            sizes[which] = body.len();
            if which == 1 {
                let mut text = Vec::new();
                flate2::read::GzDecoder::new(body)
                    .read_to_end(&mut text)
                    .expect("valid gzip");
                decoded = text.len();
            }
        }
    }
    for (which, name) in ["plain", "gzip"].iter().enumerate() {
        times[which].sort();
        let mean = times[which].iter().sum::<Duration>() / SCRAPES as u32;
        println!(
            "{name:>5}: {:>6} bytes; per scrape: median {:.3} ms, mean {:.3} ms, server CPU {:.3} ms",
            sizes[which],
            times[which][SCRAPES / 2].as_secs_f64() * 1e3,
            mean.as_secs_f64() * 1e3,
            cpu[which].as_secs_f64() * 1e3 / SCRAPES as f64
        );
    }
    println!(
        "gzip body is {:.1} % of plain and decodes to {decoded} bytes",
        100.0 * sizes[1] as f64 / sizes[0] as f64
    );
}

// ===== 4. idle CPU of the collector =====

fn idle_collector() {
    println!("\n== idle CPU: collector at its default 10 ms against switched off ==");
    let default = Server::service(&[]).expect("start the service");
    let off = Server::service(&[("COLLECT_INTERVAL_MS", "0")]).expect("start the service");
    // Both are watched over the same window, so the machine's other load
    // disturbs them alike.
    std::thread::sleep(Duration::from_secs(1));
    let before = [default.cpu_snapshot(), off.cpu_snapshot()];
    let started = Instant::now();
    std::thread::sleep(IDLE_TIME);
    let wall = started.elapsed().as_secs_f64();
    let share = |server: &Server, before| 100.0 * server.cpu_since(before).as_secs_f64() / wall;
    let default = share(&default, &before[0]);
    let off = share(&off, &before[1]);
    println!(
        "over {wall:.0} s: collector every 10 ms {default:.3} % of a core, off {off:.3} %; the collector costs {:.3} %",
        default - off
    );
}
