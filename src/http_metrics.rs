//! Metrics of the service's own HTTP traffic: `http_requests_total` and
//! `http_request_duration_seconds` by `method`, `path` and `status`, recorded
//! for every request by one wrapper around the whole route tree.
//!
//! Every label is bounded, so no client can grow the number of series: `path`
//! is the route's template ([`RouteTemplate`]), never the raw path, `method` is
//! one of the standard methods or `other`, and `status` is the status sent.
//!
//! Each thread records into a buffer of its own, and [`RequestMetrics`], the
//! collector registered for both metrics, publishes every buffer before it is
//! gathered. Recording into the shared metrics directly would make the
//! runtime's worker threads update the same atomics, and fetching their cache
//! lines from the other core costs far more than the update itself.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use once_cell::sync::Lazy;
use prometheus::core::{Collector, Desc};
use prometheus::local::{LocalHistogram, LocalIntCounter};
use prometheus::proto::MetricFamily;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts};
use warp::http::{Method, StatusCode};
use warp::reply::{Reply, Response};
use warp::{Filter, Rejection};

use crate::in_flight::InFlight;
use crate::lock;

/// Upper bounds in seconds: 100 µs to 2.5 s. A local service answers in well
/// under a millisecond, where the default buckets (from 5 ms) would put every
/// request into the first one.
const DURATION_BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// The label names, in the order [`record`] passes the values.
const LABELS: [&str; 3] = ["method", "path", "status"];

/// HTTP requests served, by method, route template and status. Read it
/// through [`RequestMetrics`]: the latest requests may still be in a thread's
/// buffer.
static HTTP_REQUESTS_TOTAL: Lazy<IntCounterVec> = Lazy::new(|| {
    IntCounterVec::new(
        Opts::new("http_requests_total", "HTTP requests served"),
        &LABELS,
    )
    .expect("valid metric definition")
});

/// Time from a request entering the routes to its response leaving them, by
/// method, route template and status. Read it through [`RequestMetrics`].
static HTTP_REQUEST_DURATION_SECONDS: Lazy<HistogramVec> = Lazy::new(|| {
    HistogramVec::new(
        HistogramOpts::new(
            "http_request_duration_seconds",
            "HTTP request handling time in seconds",
        )
        .buckets(DURATION_BUCKETS.to_vec()),
        &LABELS,
    )
    .expect("valid metric definition")
});

/// Which route answered a request: the `path` label. Each route in the tree
/// carries its own, so the label never depends on what the client sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteTemplate {
    /// `/some`
    Some,
    /// `/metrics`
    Metrics,
    /// `/ws/{id}`, whatever the id
    Websocket,
    /// `/healthz`
    Healthz,
    /// `/readyz`
    Readyz,
    /// No route accepted the request (404, 405, a failed upgrade, ...).
    Unmatched,
}

/// The `path` label of each [`RouteTemplate`], in declaration order.
const ROUTE_LABELS: [&str; 6] = [
    "/some",
    "/metrics",
    "/ws/{id}",
    "/healthz",
    "/readyz",
    "unmatched",
];

impl RouteTemplate {
    /// The `path` label value.
    pub fn label(self) -> &'static str {
        ROUTE_LABELS[self as usize]
    }
}

/// The methods that keep their own `method` label; any other is `other`, so
/// invented methods cannot add series.
const STANDARD_METHODS: [Method; 9] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::DELETE,
    Method::CONNECT,
    Method::OPTIONS,
    Method::TRACE,
    Method::PATCH,
];

/// Where `method` sits in [`STANDARD_METHODS`]; one past the end for any
/// other method.
fn method_slot(method: &Method) -> usize {
    STANDARD_METHODS
        .iter()
        .position(|standard| standard == method)
        .unwrap_or(STANDARD_METHODS.len())
}

/// The `method` label value for a [`method_slot`].
fn method_label(slot: usize) -> &'static str {
    STANDARD_METHODS.get(slot).map_or("other", Method::as_str)
}

/// The statuses this service sends, whose series each thread resolves once
/// and keeps in its buffer. Any other status is recorded straight into the
/// shared metrics, through the slower lookup by label values.
const BUFFERED_STATUSES: [StatusCode; 8] = [
    StatusCode::OK,
    StatusCode::SWITCHING_PROTOCOLS,
    StatusCode::BAD_REQUEST,
    StatusCode::NOT_FOUND,
    StatusCode::METHOD_NOT_ALLOWED,
    StatusCode::UPGRADE_REQUIRED,
    StatusCode::INTERNAL_SERVER_ERROR,
    StatusCode::SERVICE_UNAVAILABLE,
];

const METHOD_SLOTS: usize = STANDARD_METHODS.len() + 1;
const SERIES_SLOTS: usize = ROUTE_LABELS.len() * METHOD_SLOTS * BUFFERED_STATUSES.len();

/// The two metrics' thread-local children for one combination of labels.
struct LocalSeries {
    requests: LocalIntCounter,
    duration: LocalHistogram,
}

/// One thread's recordings not yet published: a slot per (route, method,
/// buffered status), filled on first use. Slots start empty because creating a
/// child exports it, and unused combinations must not show up as zero series.
struct ThreadBuffer {
    series: Vec<Option<LocalSeries>>,
}

impl ThreadBuffer {
    fn publish(&mut self) {
        for series in self.series.iter_mut().flatten() {
            series.requests.flush();
            series.duration.flush();
        }
    }
}

/// Every thread's buffer, so that a gather can publish them all first.
static BUFFERS: Mutex<Vec<Arc<Mutex<ThreadBuffer>>>> = Mutex::new(Vec::new());

thread_local! {
    /// This thread's buffer. Its lock is taken by this thread on every
    /// request and by another only while a scrape publishes it, so it is
    /// nearly always free and its cache line stays on this core.
    static BUFFER: Arc<Mutex<ThreadBuffer>> = {
        let series = std::iter::repeat_with(|| None).take(SERIES_SLOTS).collect();
        let buffer = Arc::new(Mutex::new(ThreadBuffer { series }));
        lock(&BUFFERS).push(Arc::clone(&buffer));
        buffer
    };
}

/// Records one request in both metrics.
pub fn record(route: RouteTemplate, method: &Method, status: StatusCode, elapsed: Duration) {
    let method = method_slot(method);
    let labels = [method_label(method), route.label(), status.as_str()];
    let seconds = elapsed.as_secs_f64();
    match BUFFERED_STATUSES
        .iter()
        .position(|&buffered| buffered == status)
    {
        Some(status_slot) => {
            let slot =
                (route as usize * METHOD_SLOTS + method) * BUFFERED_STATUSES.len() + status_slot;
            BUFFER.with(|buffer| {
                let mut buffer = lock(buffer);
                let series = buffer.series[slot].get_or_insert_with(|| LocalSeries {
                    requests: HTTP_REQUESTS_TOTAL.with_label_values(&labels).local(),
                    duration: HTTP_REQUEST_DURATION_SECONDS
                        .with_label_values(&labels)
                        .local(),
                });
                series.requests.inc();
                series.duration.observe(seconds);
            });
        }
        None => {
            HTTP_REQUESTS_TOTAL.with_label_values(&labels).inc();
            HTTP_REQUEST_DURATION_SECONDS
                .with_label_values(&labels)
                .observe(seconds);
        }
    }
}

/// Both request metrics as one collector, to register in place of the two:
/// it publishes every thread's buffer before gathering, so a scrape counts
/// every request answered before it.
#[derive(Debug, Clone, Copy)]
pub struct RequestMetrics;

impl Collector for RequestMetrics {
    fn desc(&self) -> Vec<&Desc> {
        let mut descs = HTTP_REQUESTS_TOTAL.desc();
        descs.extend(HTTP_REQUEST_DURATION_SECONDS.desc());
        descs
    }

    fn collect(&self) -> Vec<MetricFamily> {
        lock(&BUFFERS).retain(|buffer| {
            // Held by this list alone, a buffer belongs to a thread that has
            // ended. Asked before publishing, so nothing recorded after the
            // question can be left behind when the buffer goes.
            let thread_alive = Arc::strong_count(buffer) > 1;
            lock(buffer).publish();
            thread_alive
        });

        let mut families = HTTP_REQUESTS_TOTAL.collect();
        families.extend(HTTP_REQUEST_DURATION_SECONDS.collect());
        families
    }
}

/// Wraps the route tree so that every request is recorded, whether a route
/// answered it or none did, and counted in `http_requests_in_flight` while
/// the routes handle it.
///
/// Each route extracts its [`RouteTemplate`] next to its response. Rejections
/// are turned into responses here, rather than left to warp, so that the
/// status recorded is by construction the status sent.
pub fn instrument<F>(routes: F) -> impl Filter<Extract = (Response,), Error = Infallible> + Clone
where
    F: Filter<Extract = (RouteTemplate, Response), Error = Rejection> + Clone + Send + Sync,
{
    let answered = routes.or_else(|rejection| async move {
        Ok::<_, Infallible>((RouteTemplate::Unmatched, unmatched_response(&rejection)))
    });
    warp::any()
        .map(|| (InFlight::start(), Instant::now()))
        .untuple_one()
        .and(warp::method())
        .and(answered)
        .map(
            |_in_flight: InFlight,
             started: Instant,
             method: Method,
             route: RouteTemplate,
             response: Response| {
                record(route, &method, response.status(), started.elapsed());
                response
            },
        )
}

/// The answer to a request no route accepted, with the status warp itself
/// would give: 404 for an unknown path, and 400 for any other rejection (the
/// routes answer their own refusals, a wrong method on a known path
/// included, so none comes here today).
fn unmatched_response(rejection: &Rejection) -> Response {
    if rejection.is_not_found() {
        StatusCode::NOT_FOUND.into_response()
    } else {
        StatusCode::BAD_REQUEST.into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_methods_keep_their_name_and_others_collapse() {
        for method in STANDARD_METHODS {
            assert_eq!(method_label(method_slot(&method)), method.as_str());
        }
        for invented in ["BREW", "PROPFIND", "get", "X-ANYTHING"] {
            let method = Method::from_bytes(invented.as_bytes()).unwrap();
            assert_eq!(method_label(method_slot(&method)), "other", "{invented}");
        }
    }

    #[test]
    fn each_route_has_its_template_as_label() {
        let labels: Vec<_> = [
            RouteTemplate::Some,
            RouteTemplate::Metrics,
            RouteTemplate::Websocket,
            RouteTemplate::Healthz,
            RouteTemplate::Readyz,
            RouteTemplate::Unmatched,
        ]
        .map(RouteTemplate::label)
        .to_vec();
        assert_eq!(
            labels,
            [
                "/some",
                "/metrics",
                "/ws/{id}",
                "/healthz",
                "/readyz",
                "unmatched"
            ]
        );
    }

    /// What a gather reports for `labels`: the request count, and the
    /// duration histogram's sample count and sum.
    fn gathered(labels: [&str; 3]) -> (f64, u64, f64) {
        let families = RequestMetrics.collect();
        let series = |name: &str| {
            families
                .iter()
                .filter(|family| family.name() == name)
                .flat_map(|family| family.get_metric())
                .find(|metric| {
                    // Label pairs come sorted by name: method, path, status.
                    let values = metric.get_label().iter().map(|pair| pair.value());
                    values.eq(labels)
                })
                .cloned()
        };
        let requests =
            series("http_requests_total").map_or(0.0, |metric| metric.get_counter().value());
        let duration = series("http_request_duration_seconds");
        let count = duration
            .as_ref()
            .map_or(0, |metric| metric.get_histogram().get_sample_count());
        let sum = duration.map_or(0.0, |metric| metric.get_histogram().get_sample_sum());
        (requests, count, sum)
    }

    // The metrics are process-wide, so each test records a label combination
    // no other test uses.

    #[test]
    fn a_buffered_status_is_recorded_in_both_metrics() {
        let labels = ["PATCH", "/some", "404"];

        for _ in 0..3 {
            let elapsed = Duration::from_micros(300);
            record(
                RouteTemplate::Some,
                &Method::PATCH,
                StatusCode::NOT_FOUND,
                elapsed,
            );
        }

        let (requests, count, sum) = gathered(labels);
        assert_eq!(requests, 3.0);
        assert_eq!(count, 3);
        assert!((sum - 0.0009).abs() < 1e-9, "sum {sum}");
    }

    #[test]
    fn any_other_status_is_recorded_too() {
        let teapot = StatusCode::IM_A_TEAPOT;
        assert!(!BUFFERED_STATUSES.contains(&teapot));

        let brew = Method::from_bytes(b"BREW").unwrap();
        record(RouteTemplate::Metrics, &brew, teapot, Duration::ZERO);

        assert_eq!(gathered(["other", "/metrics", "418"]), (1.0, 1, 0.0));
    }

    #[test]
    fn requests_recorded_on_other_threads_are_in_the_next_gather() {
        let labels = ["PUT", "/ws/{id}", "200"];
        let recorders: Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn(|| {
                    let elapsed = Duration::from_millis(2);
                    record(
                        RouteTemplate::Websocket,
                        &Method::PUT,
                        StatusCode::OK,
                        elapsed,
                    );
                })
            })
            .collect();
        for recorder in recorders {
            recorder.join().unwrap();
        }

        // The threads have ended; their buffers are published all the same.
        assert_eq!(gathered(labels).0, 4.0);
        // Published once: a second gather does not count them again.
        assert_eq!(gathered(labels).0, 4.0);
    }
}
