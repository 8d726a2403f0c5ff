//! The glue between warp and the request metrics of `src/metrics/http.rs`:
//! [`instrument`] wraps a service's whole filter tree so that every request
//! is counted in flight while the routes handle it and recorded, under its
//! route template, when its response leaves.
//!
//! It imports nothing of this crate but the metrics folder, so a warp
//! service that copies the folder copies this file too (docs/reuse.md).

use std::convert::Infallible;
use std::time::Instant;

use http::{Method, StatusCode};
use warp::reply::{Reply, Response};
use warp::{Filter, Rejection};

use crate::metrics::http::{HttpMetrics, InFlight, Route};

/// What each route answers: its template, so the `path` label never depends
/// on what the client sent, and its response.
pub type Answer = (Route, Response);

/// Wraps `routes` so that every request is counted in flight while they
/// handle it and recorded when its response leaves, whether a route answered
/// or none did. A rejection becomes the response here, 404 (or 400, the
/// status warp itself would give) recorded as `unmatched`, so the status
/// recorded is by construction the status sent.
///
/// `metrics` is a `&'static` reference because warp clones the filters not
/// yet tried for every request: a reference copies, a counted handle would
/// touch its count each time.
pub fn instrument<F>(
    metrics: &'static HttpMetrics,
    routes: F,
) -> impl Filter<Extract = (Response,), Error = Infallible> + Clone
where
    F: Filter<Extract = (Answer,), Error = Rejection> + Clone + Send + Sync,
{
    let unmatched = metrics.unmatched();
    let answered = routes.or_else(move |rejection: Rejection| async move {
        let status = match rejection.is_not_found() {
            true => StatusCode::NOT_FOUND,
            false => StatusCode::BAD_REQUEST,
        };
        Ok::<_, Infallible>(((unmatched, status.into_response()),))
    });
    warp::method()
        .map(move |method| (metrics.start(), Instant::now(), method))
        .untuple_one()
        .and(answered)
        .map(
            move |_in_flight: InFlight<'static>,
                  started: Instant,
                  method: Method,
                  answer: Answer| {
                let (route, response) = answer;
                metrics.record(route, &method, response.status(), started.elapsed());
                response
            },
        )
}
