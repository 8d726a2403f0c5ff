//! The protected scrape and `http_requests_in_flight`, with scrapes held in
//! the middle of gathering: `METRICS_MAX_IN_FLIGHT` scrapes encode at once
//! and the next one gets 503; the in-flight gauge counts exactly the
//! requests being handled; an exposition that cannot be encoded is a 500,
//! counted in `metrics_encode_errors_total`.
//!
//! A real scrape is over in well under a millisecond, so to hold one the
//! service runs in this process with a collector of the test's own in its
//! registry, as a slow custom collector would be in a real deployment. The
//! collector stops the scrapes it is told to stop until the test lets them
//! go, which makes "while N scrapes are encoding" an event the test waits
//! for, not a race. Everything else is the real service over real sockets.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use common::{Exposition, PATIENCE};
use once_cell::sync::Lazy;
use prometheus::core::{Collector, Desc};
use prometheus::proto::{Gauge, Metric, MetricFamily, MetricType};
use rust_web_prometheus_example::metrics;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// Worker threads of the service's runtime: enough that the scrapes held in
/// the collector leave free workers to accept and answer the others.
const SERVICE_WORKERS: usize = 6;

/// The service runs in this process and shares its metrics, so the tests
/// take turns.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The test's collector, registered once in the service's registry.
static HOLD: Lazy<&'static Hold> = Lazy::new(|| {
    metrics::register().expect("register the service's metrics");
    let hold: &'static Hold = Box::leak(Box::new(Hold::default()));
    metrics::REGISTRY
        .register(Box::new(hold))
        .expect("register the test's collector");
    hold
});

/// A collector that stops the next scrapes it is told to, and can be told to
/// report a family the text format cannot express.
struct Hold {
    desc: Desc,
    state: Mutex<HoldState>,
    changed: Condvar,
    broken: AtomicBool,
    /// Makes the next gather panic, as a buggy collector would.
    panics: AtomicBool,
}

#[derive(Default)]
struct HoldState {
    /// Scrapes still to stop as they gather.
    to_stop: usize,
    /// Scrapes stopped in the collector now.
    stopped: usize,
    /// How many times the stopped scrapes have been let go.
    releases: u64,
}

impl Default for Hold {
    fn default() -> Self {
        let desc = Desc::new(
            "test_hold".to_owned(),
            "The test's collector".to_owned(),
            Vec::new(),
            HashMap::new(),
        )
        .expect("valid desc");
        Hold {
            desc,
            state: Mutex::default(),
            changed: Condvar::new(),
            broken: AtomicBool::new(false),
            panics: AtomicBool::new(false),
        }
    }
}

impl Hold {
    fn state(&self) -> MutexGuard<'_, HoldState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Makes the next `count` scrapes stop in the collector.
    fn stop_next(&self, count: usize) {
        self.state().to_stop = count;
    }

    /// Waits until `count` scrapes are stopped in the collector.
    async fn wait_until_stopped(&self, count: usize) {
        let deadline = Instant::now() + PATIENCE;
        while self.state().stopped != count {
            assert!(
                Instant::now() < deadline,
                "{} scrapes stopped, waited for {count}",
                self.state().stopped
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Lets every stopped scrape go on.
    fn release(&self) {
        let mut state = self.state();
        state.to_stop = 0;
        state.releases += 1;
        self.changed.notify_all();
    }
}

impl Collector for &'static Hold {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.desc]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        if self.panics.swap(false, Ordering::Relaxed) {
            panic!("the test's collector exploded");
        }
        let mut state = self.state();
        if state.to_stop > 0 {
            state.to_stop -= 1;
            state.stopped += 1;
            let releases = state.releases;
            // Blocking a worker outright could leave the runtime with no
            // thread polling for I/O, and the whole service deaf: the
            // worker hands its other work over first, as any collector that
            // has to wait must.
            let mut state = tokio::task::block_in_place(|| {
                self.changed
                    .wait_while(state, |state| state.releases == releases)
                    .unwrap_or_else(PoisonError::into_inner)
            });
            state.stopped -= 1;
        }
        if !self.broken.load(Ordering::Relaxed) {
            return Vec::new();
        }
        // A family without a name: gathered, but not encodable.
        let mut gauge = Gauge::default();
        gauge.set_value(1.0);
        let mut family = MetricFamily::default();
        family.set_field_type(MetricType::GAUGE);
        family.set_metric(vec![Metric::from_gauge(gauge)]);
        vec![family]
    }
}

/// The service on its own multi-threaded runtime in this process, stopped
/// when dropped.
struct Service {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Service {
    fn start(max_in_flight: usize) -> Service {
        let max_in_flight = max_in_flight.to_string();
        let config = common::config(&[
            ("COLLECT_INTERVAL_MS", "0"),
            ("METRICS_MAX_IN_FLIGHT", &max_in_flight),
        ]);
        let (stop, stopped) = oneshot::channel::<()>();
        let (bound, addr) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(SERVICE_WORKERS)
                .enable_all()
                .build()
                .expect("the service's runtime");
            runtime.block_on(async {
                let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
                bound.send(listener.local_addr().expect("address")).unwrap();
                common::serve_in_process(listener, &config, stopped)
                    .await
                    .expect("serve");
            });
        });
        let addr = addr.recv_timeout(PATIENCE).expect("the service started");
        Service {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Scrapes the service in a task of its own.
    fn scrape_in_background(&self) -> tokio::task::JoinHandle<(u16, String)> {
        tokio::spawn(scrape(self.addr))
    }
}

/// `GET /metrics` on a connection of its own, as concurrent scrapers do.
async fn scrape(addr: SocketAddr) -> (u16, String) {
    // A scrape the service never answers fails the test instead of hanging it.
    let response = tokio::time::timeout(PATIENCE, reqwest::get(format!("http://{addr}/metrics")))
        .await
        .expect("the service answers a scrape")
        .expect("scrape");
    let status = response.status().as_u16();
    (status, response.text().await.expect("scrape body"))
}

/// The value of `name` with `labels` in a scrape that answered 200; 0 for
/// a series not there yet.
async fn current(addr: SocketAddr, name: &str, labels: &[(&str, &str)]) -> f64 {
    let (status, body) = scrape(addr).await;
    assert_eq!(status, 200, "{body}");
    Exposition(body).sample(name, labels).unwrap_or(0.0)
}

impl Drop for Service {
    fn drop(&mut self) {
        HOLD.release();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_scrape_beyond_the_limit_gets_503_while_the_others_encode() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let service = Service::start(2);
    let refused = [("method", "GET"), ("path", "/metrics"), ("status", "503")];
    // The metrics belong to this process, which other tests share.
    let refused_before = current(service.addr, "http_requests_total", &refused).await;

    HOLD.stop_next(2);
    let held: Vec<_> = (0..2).map(|_| service.scrape_in_background()).collect();
    HOLD.wait_until_stopped(2).await;

    let (status, body) = scrape(service.addr).await;
    assert_eq!(status, 503, "a third scrape while two encode: {body}");
    assert!(body.contains("(2)"), "the refusal names the limit: {body}");

    HOLD.release();
    for scrape in held {
        let (status, _) = scrape.await.unwrap();
        assert_eq!(status, 200, "a scrape within the limit");
    }
    // The slots are free again, and the refusal was counted.
    let refused_after = current(service.addr, "http_requests_total", &refused).await;
    assert_eq!(refused_after - refused_before, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requests_in_flight_counts_exactly_the_requests_being_handled() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let service = Service::start(4);

    // Alone, a scrape sees itself.
    let (_, body) = scrape(service.addr).await;
    assert_eq!(Exposition(body).value("http_requests_in_flight"), Some(1.0));

    HOLD.stop_next(3);
    let held: Vec<_> = (0..3).map(|_| service.scrape_in_background()).collect();
    HOLD.wait_until_stopped(3).await;

    // Three held in the routes, and this one.
    let (status, body) = scrape(service.addr).await;
    assert_eq!(status, 200);
    assert_eq!(Exposition(body).value("http_requests_in_flight"), Some(4.0));

    HOLD.release();
    for scrape in held {
        assert_eq!(scrape.await.unwrap().0, 200);
    }
    let (_, body) = scrape(service.addr).await;
    assert_eq!(Exposition(body).value("http_requests_in_flight"), Some(1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_exposition_that_cannot_be_encoded_is_a_500_and_counted() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let service = Service::start(4);
    let failed = [("method", "GET"), ("path", "/metrics"), ("status", "500")];
    let errors_before = current(service.addr, "metrics_encode_errors_total", &[]).await;
    let failed_before = current(service.addr, "http_requests_total", &failed).await;

    HOLD.broken.store(true, Ordering::Relaxed);
    let (first, _) = scrape(service.addr).await;
    let (second, _) = scrape(service.addr).await;
    HOLD.broken.store(false, Ordering::Relaxed);

    assert_eq!((first, second), (500, 500));
    let errors = current(service.addr, "metrics_encode_errors_total", &[]).await;
    assert_eq!(errors - errors_before, 2.0);
    let failed_after = current(service.addr, "http_requests_total", &failed).await;
    assert_eq!(failed_after - failed_before, 2.0);
}

/// The service's log lines in this process, from the first test that asks.
static LOG: Lazy<Arc<Mutex<Vec<u8>>>> = Lazy::new(|| {
    let log = Arc::new(Mutex::new(Vec::new()));
    let writer = Arc::clone(&log);
    tracing_subscriber::fmt()
        .with_writer(move || LogWriter(Arc::clone(&writer)))
        .init();
    log
});

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_connection_task_that_panics_is_logged_with_its_message_and_counted() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let log = Lazy::force(&LOG);
    let service = Service::start(4);
    let panicked = [("task", "http_connection")];
    let before = current(service.addr, "task_panics_total", &panicked).await;

    HOLD.panics.store(true, Ordering::Relaxed);
    let answer = reqwest::get(format!("http://{}/metrics", service.addr)).await;

    assert!(
        answer.is_err(),
        "the connection died with its task: {answer:?}"
    );
    // Logged as it happens, before any other connection comes along.
    let deadline = Instant::now() + PATIENCE;
    let line = loop {
        let log = String::from_utf8(log.lock().unwrap().clone()).unwrap();
        if let Some(line) = log.lines().find(|line| line.contains("a task panicked")) {
            break line.to_owned();
        }
        assert!(Instant::now() < deadline, "the panic logged: {log}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(
        line.contains("ERROR") && line.contains("the test's collector exploded"),
        "{line}"
    );
    let after = current(service.addr, "task_panics_total", &panicked).await;
    assert_eq!(after - before, 1.0);
}
