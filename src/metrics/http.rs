//! Metrics of a service's own HTTP traffic: `http_requests_total` and
//! `http_request_duration_seconds` by `method`, `path` and `status`, and
//! `http_requests_in_flight`. The names are the ones Prometheus's naming
//! guide uses as its examples. The labels are those of the middlewares for
//! axum and actix-web (axum-prometheus and actix-web-prom, which call the
//! route template `endpoint`): which route, which method, which outcome,
//! the questions an operator asks of the traffic. Go's `promhttp` splits by
//! `code` and `method` only and leaves the handler to a label its code fixes
//! per handler, as the route template is fixed per route here.
//!
//! Framework-agnostic: the web framework's glue starts an [`InFlight`] guard
//! when a request enters the routes and calls [`HttpMetrics::record`] when
//! its response leaves (`src/http/instrument.rs` for warp; for axum, the
//! middleware in `docs/reuse.md`).
//!
//! Every label is bounded, so no client can add series: `path` is a route
//! template from the list given to [`HttpMetrics::register`] or `unmatched`,
//! never the raw path; `method` is a standard method or `other`; `status`
//! is the status sent.
//!
//! The children (the series for one set of label values) of the usual
//! combinations are kept in a table, each made on its first request: looking
//! one up by its label values hashes them under a lock, which costs more
//! than recording.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http::{Method, StatusCode};
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
};

/// Upper bounds in seconds, 100 µs to 2.5 s: a local service answers in well
/// under a millisecond, where the default buckets (from 5 ms) would put every
/// request in the first one.
const DURATION_BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// The `path` of a request no route took.
const UNMATCHED: &str = "unmatched";

/// The methods that keep their own `method` label; any other is `other`.
const METHODS: [Method; 9] = [
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

/// The statuses whose children the table keeps; others are looked up by
/// their label values.
const STATUSES: [u16; 12] = [200, 101, 204, 304, 400, 404, 405, 414, 426, 431, 500, 503];

/// The request metrics, registered in one registry. Clones share them.
#[derive(Clone)]
pub struct HttpMetrics(Arc<Shared>);

struct Shared {
    /// The route templates, then [`UNMATCHED`]: a [`Route`] is an index here.
    paths: Vec<&'static str>,
    requests: IntCounterVec,
    duration: HistogramVec,
    in_flight: IntGauge,
    /// One slot per (route, method slot, status of [`STATUSES`]).
    table: Box<[OnceLock<(IntCounter, Histogram)>]>,
}

/// A route template of [`HttpMetrics`], or `unmatched`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route(usize);

/// Counts a request in `http_requests_in_flight` from [`HttpMetrics::start`]
/// until it is dropped: when the response leaves, or when the client goes
/// away first and the request is dropped with its connection.
#[must_use = "the request counts as in flight only while the guard lives"]
pub struct InFlight<'a>(&'a IntGauge);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl HttpMetrics {
    /// Registers the three metrics in `registry`, for requests to the
    /// route templates `routes` (such as `/ws/{id}`) and unmatched ones.
    pub fn register(registry: &Registry, routes: &[&'static str]) -> prometheus::Result<Self> {
        let labels = ["method", "path", "status"];
        let requests = IntCounterVec::new(
            Opts::new("http_requests_total", "HTTP requests served"),
            &labels,
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "http_request_duration_seconds",
                "HTTP request handling time in seconds",
            )
            .buckets(DURATION_BUCKETS.to_vec()),
            &labels,
        )?;
        let in_flight = IntGauge::new(
            "http_requests_in_flight",
            "HTTP requests being handled, this scrape included",
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(in_flight.clone()))?;

        let paths: Vec<_> = routes.iter().copied().chain([UNMATCHED]).collect();
        let slots = paths.len() * (METHODS.len() + 1) * STATUSES.len();
        let table = std::iter::repeat_with(OnceLock::new).take(slots).collect();
        Ok(HttpMetrics(Arc::new(Shared {
            paths,
            requests,
            duration,
            in_flight,
            table,
        })))
    }

    /// The route of `template`, one of those registered; `unmatched` for any
    /// other.
    pub fn route(&self, template: &str) -> Route {
        let paths = &self.0.paths;
        Route(
            paths
                .iter()
                .position(|path| *path == template)
                .unwrap_or(paths.len() - 1),
        )
    }

    /// The `unmatched` route, for a request no route took.
    pub fn unmatched(&self) -> Route {
        Route(self.0.paths.len() - 1)
    }

    /// Counts a request in flight until the guard is dropped.
    pub fn start(&self) -> InFlight<'_> {
        self.0.in_flight.inc();
        InFlight(&self.0.in_flight)
    }

    /// Records a request to `route` answered with `status` after `elapsed`.
    pub fn record(&self, route: Route, method: &Method, status: StatusCode, elapsed: Duration) {
        let shared = &self.0;
        let method_slot = METHODS
            .iter()
            .position(|known| known == method)
            .unwrap_or(METHODS.len());
        let labels = || {
            let method = METHODS.get(method_slot).map_or("other", Method::as_str);
            [method, shared.paths[route.0], status.as_str()]
        };
        let seconds = elapsed.as_secs_f64();
        match STATUSES.iter().position(|&known| known == status.as_u16()) {
            Some(status_slot) => {
                let slot =
                    (route.0 * (METHODS.len() + 1) + method_slot) * STATUSES.len() + status_slot;
                let (requests, duration) = shared.table[slot].get_or_init(|| {
                    let labels = labels();
                    (
                        shared.requests.with_label_values(&labels),
                        shared.duration.with_label_values(&labels),
                    )
                });
                requests.inc();
                duration.observe(seconds);
            }
            None => {
                let labels = labels();
                shared.requests.with_label_values(&labels).inc();
                shared.duration.with_label_values(&labels).observe(seconds);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROUTES: [&str; 2] = ["/some", "/ws/{id}"];

    /// The `http_requests_total` samples of `registry` as (method, path,
    /// status, count), and the duration histogram's sample count for each.
    fn gathered(registry: &Registry) -> Vec<(String, String, String, f64, u64)> {
        let families = registry.gather();
        let family = |name: &str| {
            families
                .iter()
                .find(|family| family.name() == name)
                .cloned()
        };
        let (Some(requests), Some(duration)) = (
            family("http_requests_total"),
            family("http_request_duration_seconds"),
        ) else {
            return Vec::new();
        };
        requests
            .get_metric()
            .iter()
            .zip(duration.get_metric())
            .map(|(counter, histogram)| {
                // Label pairs come sorted by name: method, path, status.
                let value = |i: usize| counter.get_label()[i].value().to_owned();
                assert_eq!(counter.get_label(), histogram.get_label());
                (
                    value(0),
                    value(1),
                    value(2),
                    counter.get_counter().value(),
                    histogram.get_histogram().get_sample_count(),
                )
            })
            .collect()
    }

    #[test]
    fn requests_are_counted_under_their_template_method_and_status() {
        let registry = Registry::new();
        let metrics = HttpMetrics::register(&registry, &ROUTES).unwrap();
        let websocket = metrics.route("/ws/{id}");
        let brew = Method::from_bytes(b"BREW").unwrap();

        for _ in 0..3 {
            metrics.record(
                websocket,
                &Method::GET,
                StatusCode::SWITCHING_PROTOCOLS,
                Duration::ZERO,
            );
        }
        // A status outside the table, an invented method, no route.
        metrics.record(
            metrics.unmatched(),
            &brew,
            StatusCode::IM_A_TEAPOT,
            Duration::ZERO,
        );
        metrics.record(
            metrics.route("/elsewhere"),
            &Method::PUT,
            StatusCode::NOT_FOUND,
            Duration::ZERO,
        );

        let row = |method: &str, path: &str, status: &str, count: u64| {
            (
                method.into(),
                path.into(),
                status.into(),
                count as f64,
                count,
            )
        };
        assert_eq!(
            gathered(&registry),
            [
                row("GET", "/ws/{id}", "101", 3),
                row("PUT", "unmatched", "404", 1),
                row("other", "unmatched", "418", 1),
            ]
        );
    }

    #[test]
    fn a_request_is_in_flight_while_its_guard_lives() {
        let registry = Registry::new();
        let metrics = HttpMetrics::register(&registry, &ROUTES).unwrap();

        let first = metrics.start();
        let second = metrics.start();
        assert_eq!(metrics.0.in_flight.get(), 2);
        drop(first);
        assert_eq!(metrics.0.in_flight.get(), 1);
        drop(second);
        assert_eq!(metrics.0.in_flight.get(), 0);
    }
}
