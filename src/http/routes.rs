//! The warp filter trees of the two listeners and the small handlers behind
//! them, each tree wrapped in [`instrument`], which records every request
//! in the request metrics.
//!
//! Each route extracts its template next to its response (an [`Answer`]),
//! so the `path` label never depends on what the client sent. A known path
//! asked with another method gets 405 with the `Allow` header RFC 9110
//! requires; any other request, 404 from `instrument`.
//!
//! warp clones the routes not yet tried for every request, so each route
//! is as few filters as it can be, and the 405 answers come after them all.

use std::convert::Infallible;

use http::header::ALLOW;
use http::{HeaderMap, StatusCode};
use warp::hyper::upgrade::OnUpgrade;
use warp::reply::{Reply, Response};
use warp::{Filter, Rejection};

use super::health::{self, Readiness};
use super::instrument::{Answer, instrument};
use crate::metrics::INCOMING_REQUESTS;
use crate::metrics::http::HttpMetrics;
use crate::metrics::scrape::Scrapes;
use crate::ws::Sessions;

/// The route templates, as the `path` label shows them.
pub const ROUTES: [&str; 5] = ["/some", "/metrics", "/ws/{id}", "/healthz", "/readyz"];

/// What the handlers share. The routes hold a `&'static` one: a reference,
/// not counted handles, is what warp's clones copy.
pub struct Handlers {
    pub metrics: HttpMetrics,
    pub scrapes: Scrapes,
    pub readiness: Readiness,
    pub sessions: Sessions,
}

/// The main listener's routes: `/some`, `/ws/<id>`, the health checks and,
/// unless `METRICS_ADDR` gives it a listener of its own, `/metrics`.
pub fn public(
    handlers: &'static Handlers,
    with_metrics: bool,
) -> impl Filter<Extract = (Response,), Error = Infallible> + Clone {
    let route = |template| handlers.metrics.route(template);
    let (some, websocket) = (route("/some"), route("/ws/{id}"));
    let hello = warp::path!("some").and(get_or_head()).map(move || {
        INCOMING_REQUESTS.inc();
        (some, "hello!".into_response())
    });
    let upgrade = warp::path!("ws" / String)
        .and(warp::get())
        .and(warp::header::headers_cloned())
        .and(warp::ext::optional::<OnUpgrade>())
        .map(move |id, headers, upgrade| {
            (websocket, handlers.sessions.upgrade(id, &headers, upgrade))
        });
    let ws_wrong_method = warp::path!("ws" / String).map(move |_| (websocket, not_allowed("GET")));
    // Without it, `/metrics` is a path like any unknown one.
    let scrape = warp::any()
        .and_then(move || async move {
            with_metrics
                .then_some(())
                .ok_or_else(warp::reject::not_found)
        })
        .untuple_one()
        .and(scrape(handlers));
    let routes = hello
        .or(upgrade)
        .unify()
        .or(health(handlers))
        .unify()
        .or(scrape)
        .unify()
        .or(wrong_method(handlers, "some", "/some"))
        .unify()
        .or(ws_wrong_method)
        .unify();
    instrument(&handlers.metrics, routes)
}

/// The `METRICS_ADDR` listener's routes: `/metrics` and the health checks,
/// out of reach of whatever floods the main listener.
pub fn metrics_only(
    handlers: &'static Handlers,
) -> impl Filter<Extract = (Response,), Error = Infallible> + Clone {
    instrument(
        &handlers.metrics,
        scrape(handlers).or(health(handlers)).unify(),
    )
}

/// `GET /metrics`, and 405 for other methods.
fn scrape(
    handlers: &'static Handlers,
) -> impl Filter<Extract = (Answer,), Error = Rejection> + Clone {
    let metrics = handlers.metrics.route("/metrics");
    warp::path!("metrics")
        .and(get_or_head())
        .and(warp::header::headers_cloned())
        .then(move |headers: HeaderMap| async move {
            (
                metrics,
                handlers.scrapes.answer(&headers).await.into_response(),
            )
        })
        .or(wrong_method(handlers, "metrics", "/metrics"))
        .unify()
}

/// `GET /healthz` and `GET /readyz`, and 405 for other methods.
fn health(
    handlers: &'static Handlers,
) -> impl Filter<Extract = (Answer,), Error = Rejection> + Clone {
    let (healthz, readyz) = (
        handlers.metrics.route("/healthz"),
        handlers.metrics.route("/readyz"),
    );
    let live = warp::path!("healthz")
        .and(get_or_head())
        .map(move || (healthz, health::healthz()));
    let ready = warp::path!("readyz")
        .and(get_or_head())
        .map(move || (readyz, health::readyz(&handlers.readiness)));
    live.or(ready)
        .unify()
        .or(wrong_method(handlers, "healthz", "/healthz"))
        .unify()
        .or(wrong_method(handlers, "readyz", "/readyz"))
        .unify()
}

/// Passes a GET or a HEAD request (hyper answers a HEAD with the GET
/// response's headers and no body).
fn get_or_head() -> impl Filter<Extract = (), Error = Rejection> + Clone {
    warp::get().or(warp::head()).unify()
}

/// 405 for the one-segment path `segment`, a route answering GET and HEAD,
/// asked with another method.
fn wrong_method(
    handlers: &'static Handlers,
    segment: &'static str,
    template: &'static str,
) -> impl Filter<Extract = (Answer,), Error = Rejection> + Clone {
    let route = handlers.metrics.route(template);
    warp::path(segment)
        .and(warp::path::end())
        .map(move || (route, not_allowed("GET, HEAD")))
}

fn not_allowed(allow: &'static str) -> Response {
    warp::reply::with_header(StatusCode::METHOD_NOT_ALLOWED, ALLOW, allow).into_response()
}
