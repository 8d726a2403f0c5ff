//! The warp filter tree of the service and the small handlers behind it.

use std::convert::Infallible;

use warp::http::header::CONTENT_TYPE;
use warp::http::{HeaderMap, StatusCode};
use warp::reply::{Reply, Response};
use warp::{Filter, Rejection};

use crate::gzip;
use crate::health::{self, Readiness};
use crate::http_metrics::{self, RouteTemplate};
use crate::metrics::{self, INCOMING_REQUESTS};
use crate::ws::Sessions;

/// Every route of the service, each tagged with its template for the request
/// metrics that wrap them all. A request no route takes is answered with 404
/// (or 405 for a known path with the wrong method).
pub fn routes(
    sessions: Sessions,
    readiness: Readiness,
) -> impl Filter<Extract = (Response,), Error = Infallible> + Clone {
    let some = warp::path!("some").and(warp::get()).map(some_handler);
    let websocket = warp::path!("ws" / String)
        .and(warp::get())
        .and(warp::header::headers_cloned())
        .and(warp::ext::optional())
        .map(move |id, headers, on_upgrade| sessions.upgrade(id, &headers, on_upgrade));
    let metrics = warp::path!("metrics")
        .and(warp::get())
        .and(warp::header::headers_cloned())
        .map(metrics_handler);
    let healthz = warp::path!("healthz")
        .and(warp::get())
        .map(health::healthz_handler);
    let readyz = warp::path!("readyz")
        .and(warp::get())
        .map(move || health::readyz_handler(&readiness));
    http_metrics::instrument(
        tagged(RouteTemplate::Some, some)
            .or(tagged(RouteTemplate::Websocket, websocket))
            .unify()
            .or(tagged(RouteTemplate::Metrics, metrics))
            .unify()
            .or(tagged(RouteTemplate::Healthz, healthz))
            .unify()
            .or(tagged(RouteTemplate::Readyz, readyz))
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

/// `GET /some`: counts the request and says hello.
fn some_handler() -> Response {
    INCOMING_REQUESTS.inc();
    "hello!".into_response()
}

/// `GET /metrics`: the Prometheus text exposition, gzip-compressed when the
/// request accepts it. A failure to encode is a 500 with the reason logged:
/// an empty 200 would look like a healthy target that lost all its series.
fn metrics_handler(request_headers: HeaderMap) -> Response {
    match metrics::encode() {
        Ok(body) => warp::reply::with_header(
            gzip::negotiated(&request_headers, body),
            CONTENT_TYPE,
            prometheus::TEXT_FORMAT,
        )
        .into_response(),
        Err(err) => {
            eprintln!("could not encode metrics: {err}");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}
