//! The warp filter tree of the service and the small handlers behind it.

use warp::http::StatusCode;
use warp::http::header::CONTENT_TYPE;
use warp::reply::{Reply, Response};
use warp::{Filter, Rejection};

use crate::metrics::{self, INCOMING_REQUESTS};
use crate::ws::Sessions;

/// Every route of the service. Anything else is rejected, which warp answers
/// with 404 (or 405 for a known path with the wrong method).
pub fn routes(sessions: Sessions) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    let some = warp::path!("some").and(warp::get()).map(some_handler);
    let websocket = warp::path!("ws" / String)
        .and(warp::get())
        .and(warp::header::headers_cloned())
        .and(warp::ext::optional())
        .map(move |id, headers, on_upgrade| sessions.upgrade(id, &headers, on_upgrade));
    let metrics = warp::path!("metrics").and(warp::get()).map(metrics_handler);
    some.or(websocket).unify().or(metrics).unify()
}

/// `GET /some`: counts the request and says hello.
fn some_handler() -> Response {
    INCOMING_REQUESTS.inc();
    "hello!".into_response()
}

/// `GET /metrics`: the Prometheus text exposition. A failure to encode is a
/// 500 with the reason logged: an empty 200 would look like a healthy target
/// that lost all its series.
fn metrics_handler() -> Response {
    match metrics::encode() {
        Ok(body) => {
            warp::reply::with_header(body, CONTENT_TYPE, prometheus::TEXT_FORMAT).into_response()
        }
        Err(err) => {
            eprintln!("could not encode metrics: {err}");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}
