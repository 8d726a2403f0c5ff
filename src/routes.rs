//! The warp filter tree of the service and the small handlers behind it.

use std::convert::Infallible;

use warp::reply::{Reply, Response};
use warp::{Filter, Rejection};

use crate::http_metrics::{self, RouteTemplate};
use crate::metrics::INCOMING_REQUESTS;
use crate::scrape::Scrapes;
use crate::ws::Sessions;

/// Every route of the service, each tagged with its template for the request
/// metrics that wrap them all. A request no route takes is answered with 404
/// (or 405 for a known path with the wrong method).
pub fn routes(
    sessions: Sessions,
    scrapes: Scrapes,
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
        .map(move |headers| scrapes.answer(&headers));
    http_metrics::instrument(
        tagged(RouteTemplate::Some, some)
            .or(tagged(RouteTemplate::Websocket, websocket))
            .unify()
            .or(tagged(RouteTemplate::Metrics, metrics))
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
