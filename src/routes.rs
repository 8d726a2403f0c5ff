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

/// Every route of the service, each tagged with its template for the request
/// metrics that wrap them all. A known path with another method is answered
/// with 405 and the `Allow` header that RFC 9110 requires; any other request
/// no route takes, with 404.
pub fn routes(
    sessions: Sessions,
    readiness: Readiness,
    scrapes: Scrapes,
) -> impl Filter<Extract = (Response,), Error = Infallible> + Clone {
    let get_or_head = || warp::get().or(warp::head()).unify();
    let some = warp::path!("some").and(get_or_head()).map(some_handler);
    // A websocket opens with a GET; a HEAD could not be upgraded.
    let websocket = warp::path!("ws" / String)
        .and(warp::get())
        .and(warp::header::headers_cloned())
        .and(warp::ext::optional())
        .map(move |id, headers, on_upgrade| sessions.upgrade(id, &headers, on_upgrade));
    let metrics = warp::path!("metrics")
        .and(get_or_head())
        .and(warp::header::headers_cloned())
        .map(move |headers| scrapes.answer(&headers));
    let healthz = warp::path!("healthz")
        .and(get_or_head())
        .map(health::healthz_handler);
    let readyz = warp::path!("readyz")
        .and(get_or_head())
        .map(move || health::readyz_handler(&readiness));
    // Reached only when the routes above refused the method.
    let other_method = warp::path!("some")
        .map(|| GET_OR_HEAD)
        .or(warp::path!("metrics").map(|| GET_OR_HEAD))
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
