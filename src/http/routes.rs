//! The warp filter trees of the two listeners, the small handlers behind
//! them, and the glue that records every request in the request metrics.
//!
//! Each route carries its template ([`Route`]) next to its response, so the
//! `path` label never depends on what the client sent, and [`instrument`]
//! turns rejections into responses itself, so the status recorded is by
//! construction the status sent. A known path asked with another method gets
//! 405 with the `Allow` header RFC 9110 requires; any other request, 404.

use std::convert::Infallible;
use std::time::Instant;

use http::header::ALLOW;
use http::{HeaderMap, Method, StatusCode};
use warp::hyper::upgrade::OnUpgrade;
use warp::reply::{Reply, Response};
use warp::{Filter, Rejection};

use super::health::{self, Readiness};
use crate::metrics::INCOMING_REQUESTS;
use crate::metrics::http::{HttpMetrics, InFlight, Route};
use crate::metrics::scrape::Scrapes;
use crate::ws::Sessions;

/// The route templates, as the `path` label shows them.
pub const ROUTES: [&str; 5] = ["/some", "/metrics", "/ws/{id}", "/healthz", "/readyz"];

/// What the handlers share. Clones share it too.
#[derive(Clone)]
pub struct Handlers {
    pub metrics: HttpMetrics,
    pub scrapes: Scrapes,
    pub readiness: Readiness,
    pub sessions: Sessions,
}

/// The main listener's routes: `/some`, `/ws/<id>`, the health checks and,
/// unless `METRICS_ADDR` gives it a listener of its own, `/metrics`.
pub fn public(
    handlers: &Handlers,
    with_metrics: bool,
) -> impl Filter<Extract = (Response,), Error = Infallible> + Clone + use<> {
    let metrics = &handlers.metrics;
    let some = warp::path!("some").and(get_or_head()).map(|| {
        INCOMING_REQUESTS.inc();
        "hello!".into_response()
    });
    let sessions = handlers.sessions.clone();
    let websocket = warp::path!("ws" / String)
        .and(warp::get())
        .and(warp::header::headers_cloned())
        .and(warp::ext::optional::<OnUpgrade>())
        .map(move |id, headers, upgrade| sessions.upgrade(id, &headers, upgrade));
    // Checked before the path, so that without it `/metrics` is a 404.
    let scrape = warp::any()
        .and_then(move || async move {
            match with_metrics {
                true => Ok(()),
                false => Err(warp::reject::not_found()),
            }
        })
        .untuple_one()
        .and(scrape(handlers));
    let routes = tagged(
        metrics.route("/some"),
        some.or(not_allowed("some", "GET, HEAD")).unify(),
    )
    .or(tagged(
        metrics.route("/ws/{id}"),
        websocket.or(not_allowed_ws()).unify(),
    ))
    .unify()
    .or(scrape)
    .unify()
    .or(health(handlers))
    .unify();
    instrument(metrics.clone(), routes)
}

/// The `METRICS_ADDR` listener's routes: `/metrics` and the health checks,
/// out of reach of whatever floods the main listener.
pub fn metrics_only(
    handlers: &Handlers,
) -> impl Filter<Extract = (Response,), Error = Infallible> + Clone + use<> {
    instrument(
        handlers.metrics.clone(),
        scrape(handlers).or(health(handlers)).unify(),
    )
}

/// `GET /metrics`.
fn scrape(
    handlers: &Handlers,
) -> impl Filter<Extract = (Route, Response), Error = Rejection> + Clone + use<> {
    let scrapes = handlers.scrapes.clone();
    let answer = warp::path!("metrics")
        .and(get_or_head())
        .and(warp::header::headers_cloned())
        .map(move |headers: HeaderMap| scrapes.answer(&headers).into_response());
    tagged(
        handlers.metrics.route("/metrics"),
        answer.or(not_allowed("metrics", "GET, HEAD")).unify(),
    )
}

/// `GET /healthz` and `GET /readyz`.
fn health(
    handlers: &Handlers,
) -> impl Filter<Extract = (Route, Response), Error = Rejection> + Clone + use<> {
    let healthz = warp::path!("healthz")
        .and(get_or_head())
        .map(health::healthz);
    let readiness = handlers.readiness.clone();
    let readyz = warp::path!("readyz")
        .and(get_or_head())
        .map(move || health::readyz(&readiness));
    let metrics = &handlers.metrics;
    tagged(
        metrics.route("/healthz"),
        healthz.or(not_allowed("healthz", "GET, HEAD")).unify(),
    )
    .or(tagged(
        metrics.route("/readyz"),
        readyz.or(not_allowed("readyz", "GET, HEAD")).unify(),
    ))
    .unify()
}

/// Passes a GET or a HEAD request (hyper answers a HEAD with the GET
/// response's headers and no body).
fn get_or_head() -> impl Filter<Extract = (), Error = Rejection> + Clone {
    warp::get().or(warp::head()).unify()
}

/// 405 for the one-segment path `segment` asked with another method.
fn not_allowed(
    segment: &'static str,
    allow: &'static str,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    warp::path(segment)
        .and(warp::path::end())
        .map(move || method_not_allowed(allow))
}

/// 405 for `/ws/<id>` asked with another method than GET.
fn not_allowed_ws() -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    warp::path!("ws" / String).map(|_| method_not_allowed("GET"))
}

fn method_not_allowed(allow: &'static str) -> Response {
    warp::reply::with_header(StatusCode::METHOD_NOT_ALLOWED, ALLOW, allow).into_response()
}

/// `filter`, extracting `route` next to its response.
fn tagged(
    route: Route,
    filter: impl Filter<Extract = (Response,), Error = Rejection> + Clone + Send + Sync,
) -> impl Filter<Extract = (Route, Response), Error = Rejection> + Clone {
    warp::any().map(move || route).and(filter)
}

/// Wraps `routes` so that every request is counted in flight while they
/// handle it and recorded when its response leaves, whether a route answered
/// or none did (404, with the status warp itself would give).
fn instrument<F>(
    metrics: HttpMetrics,
    routes: F,
) -> impl Filter<Extract = (Response,), Error = Infallible> + Clone
where
    F: Filter<Extract = (Route, Response), Error = Rejection> + Clone + Send + Sync,
{
    let unmatched = metrics.unmatched();
    let answered = routes.or_else(move |rejection: Rejection| async move {
        let status = match rejection.is_not_found() {
            true => StatusCode::NOT_FOUND,
            false => StatusCode::BAD_REQUEST,
        };
        Ok::<_, Infallible>((unmatched, status.into_response()))
    });
    let start = metrics.clone();
    warp::any()
        .map(move || (start.start(), Instant::now()))
        .untuple_one()
        .and(warp::method())
        .and(answered)
        .map(
            move |_in_flight: InFlight,
                  started: Instant,
                  method: Method,
                  route,
                  response: Response| {
                metrics.record(route, &method, response.status(), started.elapsed());
                response
            },
        )
}
