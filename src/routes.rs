//! The warp filter tree of the service and the small handlers behind it.

use std::convert::Infallible;

use warp::http::StatusCode;
use warp::http::header::ALLOW;
use warp::reply::{Reply, Response};
use warp::{Filter, Rejection};

use crate::health::{self, Readiness};
use crate::http_metrics::{self, RouteTemplate};
use crate::metrics::INCOMING_REQUESTS;
use crate::scrape::Scrapes;
use crate::ws::Sessions;

/// What `Allow` lists for the routes that answer GET, which answer HEAD too
/// (hyper sends the headers of the GET response without its body).
const GET_OR_HEAD: &str = "GET, HEAD";

/// Whether the main listener serves `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricsRoute {
    /// Yes, as in the tutorial.
    Included,
    /// No: `METRICS_ADDR` gives it a listener of its own, served by
    /// [`metrics_only`], and here it is a 404 like any unknown path.
    Elsewhere,
}

/// Every route of the service, each tagged with its template for the request
/// metrics that wrap them all. A known path with another method is answered
/// with 405 and the `Allow` header that RFC 9110 requires; any other request
/// no route takes, with 404.
pub fn routes(
    sessions: Sessions,
    readiness: Readiness,
    metrics_route: MetricsRoute,
    scrapes: Scrapes,
) -> impl Filter<Extract = (Response,), Error = Infallible> + Clone {
    let some = warp::path!("some").and(get_or_head()).map(some_handler);
    // A websocket opens with a GET; a HEAD could not be upgraded.
    let websocket = warp::path!("ws" / String)
        .and(warp::get())
        .and(warp::header::headers_cloned())
        .and(warp::ext::optional())
        .map(move |id, headers, on_upgrade| sessions.upgrade(id, &headers, on_upgrade));
    let metrics_here = || only_if(metrics_route == MetricsRoute::Included);
    let metrics = metrics_here().and(metrics(scrapes));
    let healthz = warp::path!("healthz")
        .and(get_or_head())
        .map(health::healthz_handler);
    let readyz = warp::path!("readyz")
        .and(get_or_head())
        .map(move || health::readyz_handler(&readiness));
    // Reached only when the routes above refused the method.
    let other_method = warp::path!("some")
        .map(|| GET_OR_HEAD)
        .or(metrics_here()
            .and(warp::path!("metrics"))
            .map(|| GET_OR_HEAD))
        .unify()
        .or(warp::path!("healthz").map(|| GET_OR_HEAD))
        .unify()
        .or(warp::path!("readyz").map(|| GET_OR_HEAD))
        .unify()
        .or(warp::path!("ws" / String).map(|_| "GET"))
        .unify()
        .map(method_not_allowed);
    http_metrics::instrument(
        tagged(RouteTemplate::Some, some)
            .or(tagged(RouteTemplate::Websocket, websocket))
            .unify()
            .or(tagged(RouteTemplate::Metrics, metrics))
            .unify()
            .or(tagged(RouteTemplate::Healthz, healthz))
            .unify()
            .or(tagged(RouteTemplate::Readyz, readyz))
            .unify()
            .or(tagged(RouteTemplate::Unmatched, other_method))
            .unify(),
    )
}

/// `/metrics` and nothing else, for the listener that `METRICS_ADDR` gives
/// it: no websockets or anything else that a client could hold or flood.
pub fn metrics_only(
    scrapes: Scrapes,
) -> impl Filter<Extract = (Response,), Error = Infallible> + Clone {
    // Reached only when `metrics` refused the method.
    let other_method = warp::path!("metrics")
        .map(|| GET_OR_HEAD)
        .map(method_not_allowed);
    http_metrics::instrument(
        tagged(RouteTemplate::Metrics, metrics(scrapes))
            .or(tagged(RouteTemplate::Unmatched, other_method))
            .unify(),
    )
}

/// `GET /metrics`, and `HEAD`, answered within the limit of `scrapes`.
fn metrics(scrapes: Scrapes) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    warp::path!("metrics")
        .and(get_or_head())
        .and(warp::header::headers_cloned())
        .map(move |headers| scrapes.answer(&headers))
}

/// Passes a GET or a HEAD request.
fn get_or_head() -> impl Filter<Extract = (), Error = Rejection> + Clone {
    warp::get().or(warp::head()).unify()
}

/// Lets every request through when `open`, and turns every one away as not
/// found otherwise.
fn only_if(open: bool) -> impl Filter<Extract = (), Error = Rejection> + Clone {
    warp::any()
        .and_then(move || async move {
            if open {
                Ok(())
            } else {
                Err(warp::reject::not_found())
            }
        })
        .untuple_one()
}

/// `route`, extracting `template` next to its response.
fn tagged(
    template: RouteTemplate,
    route: impl Filter<Extract = (Response,), Error = Rejection> + Clone + Send + Sync,
) -> impl Filter<Extract = (RouteTemplate, Response), Error = Rejection> + Clone {
    warp::any().map(move || template).and(route)
}

/// 405 for a known path, with the methods it accepts.
fn method_not_allowed(allow: &'static str) -> Response {
    warp::reply::with_header(StatusCode::METHOD_NOT_ALLOWED, ALLOW, allow).into_response()
}

/// `GET /some` (or `HEAD`, which is served the same and so counted the
/// same): counts the request and says hello.
fn some_handler() -> Response {
    INCOMING_REQUESTS.inc();
    "hello!".into_response()
}
