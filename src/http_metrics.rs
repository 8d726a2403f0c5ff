//! Metrics of the service's own HTTP traffic: `http_requests_total` and
//! `http_request_duration_seconds` by `method`, `path` and `status`, recorded
//! for every request by one wrapper around the whole route tree.
//!
//! Every label is bounded, so no client can grow the number of series: `path`
//! is the route's template ([`RouteTemplate`]), never the raw path, `method` is
//! one of the standard methods or `other`, and `status` is the status sent.

use std::convert::Infallible;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use once_cell::sync::Lazy;
use prometheus::{Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts};
use warp::http::{Method, StatusCode};
use warp::reject::MethodNotAllowed;
use warp::reply::{Reply, Response};
use warp::{Filter, Rejection};

/// Upper bounds in seconds: 100 µs to 2.5 s. A local service answers in well
/// under a millisecond, where the default buckets (from 5 ms) would put every
/// request into the first one.
const DURATION_BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// The label names, in the order [`record`] passes the values.
const LABELS: [&str; 3] = ["method", "path", "status"];

/// HTTP requests served, by method, route template and status.
pub static HTTP_REQUESTS_TOTAL: Lazy<IntCounterVec> = Lazy::new(|| {
    IntCounterVec::new(
        Opts::new("http_requests_total", "HTTP requests served"),
        &LABELS,
    )
    .expect("valid metric definition")
});

/// Time from a request entering the routes to its response leaving them, by
/// method, route template and status.
pub static HTTP_REQUEST_DURATION_SECONDS: Lazy<HistogramVec> = Lazy::new(|| {
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
    /// No route accepted the request (404, 405, a failed upgrade, ...).
    Unmatched,
}

/// The `path` label of each [`RouteTemplate`], in declaration order.
const ROUTE_LABELS: [&str; 4] = ["/some", "/metrics", "/ws/{id}", "unmatched"];

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

/// The statuses this service sends, whose series are resolved once and kept.
/// Any other status is still recorded, through the slower label lookup.
const CACHED_STATUSES: [StatusCode; 6] = [
    StatusCode::OK,
    StatusCode::SWITCHING_PROTOCOLS,
    StatusCode::BAD_REQUEST,
    StatusCode::NOT_FOUND,
    StatusCode::METHOD_NOT_ALLOWED,
    StatusCode::INTERNAL_SERVER_ERROR,
];

/// The two metrics' children for one combination of labels.
struct Series {
    requests: IntCounter,
    duration: Histogram,
}

const METHOD_SLOTS: usize = STANDARD_METHODS.len() + 1;
const SERIES_SLOTS: usize = ROUTE_LABELS.len() * METHOD_SLOTS * CACHED_STATUSES.len();

/// One slot per (route, method, cached status), filled on first use: a
/// request then costs an index and two atomic updates instead of hashing the
/// label strings and taking the vectors' locks. Slots start empty because
/// creating a child exports it, and unused combinations must not show up as
/// zero series.
static SERIES: [OnceLock<Series>; SERIES_SLOTS] = [const { OnceLock::new() }; SERIES_SLOTS];

/// Records one request in both metrics.
pub fn record(route: RouteTemplate, method: &Method, status: StatusCode, elapsed: Duration) {
    let method = method_slot(method);
    let labels = [method_label(method), route.label(), status.as_str()];
    let seconds = elapsed.as_secs_f64();
    match CACHED_STATUSES.iter().position(|&cached| cached == status) {
        Some(status_slot) => {
            let slot =
                (route as usize * METHOD_SLOTS + method) * CACHED_STATUSES.len() + status_slot;
            let series = SERIES[slot].get_or_init(|| Series {
                requests: HTTP_REQUESTS_TOTAL.with_label_values(&labels),
                duration: HTTP_REQUEST_DURATION_SECONDS.with_label_values(&labels),
            });
            series.requests.inc();
            series.duration.observe(seconds);
        }
        None => {
            HTTP_REQUESTS_TOTAL.with_label_values(&labels).inc();
            HTTP_REQUEST_DURATION_SECONDS
                .with_label_values(&labels)
                .observe(seconds);
        }
    }
}

/// Wraps the route tree so that every request is recorded, whether a route
/// answered it or none did.
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
        .map(Instant::now)
        .and(warp::method())
        .and(answered)
        .map(
            |started: Instant, method: Method, route: RouteTemplate, response: Response| {
                record(route, &method, response.status(), started.elapsed());
                response
            },
        )
}

/// The answer to a request no route accepted, with the status warp itself
/// would give: 404 for an unknown path, 405 for a known path with the wrong
/// method, and 400 for anything else this tree rejects (a websocket request
/// without the upgrade headers).
fn unmatched_response(rejection: &Rejection) -> Response {
    if rejection.is_not_found() {
        StatusCode::NOT_FOUND.into_response()
    } else if rejection.find::<MethodNotAllowed>().is_some() {
        StatusCode::METHOD_NOT_ALLOWED.into_response()
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
            RouteTemplate::Unmatched,
        ]
        .map(RouteTemplate::label)
        .to_vec();
        assert_eq!(labels, ["/some", "/metrics", "/ws/{id}", "unmatched"]);
    }

    // The metrics are process-wide, so each test records a label combination
    // no other test uses.

    #[test]
    fn a_cached_status_is_recorded_in_both_metrics() {
        let before = HTTP_REQUESTS_TOTAL
            .with_label_values(&["PATCH", "/some", "404"])
            .get();

        for _ in 0..3 {
            let elapsed = Duration::from_micros(300);
            record(
                RouteTemplate::Some,
                &Method::PATCH,
                StatusCode::NOT_FOUND,
                elapsed,
            );
        }

        let requests = HTTP_REQUESTS_TOTAL.with_label_values(&["PATCH", "/some", "404"]);
        let duration = HTTP_REQUEST_DURATION_SECONDS.with_label_values(&["PATCH", "/some", "404"]);
        assert_eq!(requests.get() - before, 3);
        assert_eq!(duration.get_sample_count(), 3);
        assert!((duration.get_sample_sum() - 0.0009).abs() < 1e-9);
    }

    #[test]
    fn an_uncached_status_is_recorded_too() {
        let teapot = StatusCode::IM_A_TEAPOT;
        assert!(!CACHED_STATUSES.contains(&teapot));

        let brew = Method::from_bytes(b"BREW").unwrap();
        record(RouteTemplate::Metrics, &brew, teapot, Duration::ZERO);

        let labels = ["other", "/metrics", "418"];
        assert_eq!(HTTP_REQUESTS_TOTAL.with_label_values(&labels).get(), 1);
        assert_eq!(
            HTTP_REQUEST_DURATION_SECONDS
                .with_label_values(&labels)
                .get_sample_count(),
            1
        );
    }
}
