//! `GET /metrics` (and `HEAD`), protected as promhttp protects its handler:
//! at most `METRICS_MAX_IN_FLIGHT` scrapes gather and encode at once, a
//! scrape beyond that gets `503 Service Unavailable` at once, and an
//! exposition that cannot be encoded is answered with 500, logged and
//! counted in `metrics_encode_errors_total`.
//!
//! A scrape holds its slot while it gathers, encodes and compresses, which is
//! the CPU a scrape costs; the body is then written out like any response, so
//! a client that reads it slowly holds a connection, not a slot.

use std::sync::Arc;

use once_cell::sync::Lazy;
use prometheus::IntCounter;
use tokio::sync::Semaphore;
use warp::http::header::CONTENT_TYPE;
use warp::http::{HeaderMap, StatusCode};
use warp::reply::{Reply, Response};

use crate::{gzip, metrics};

/// Scrapes answered 500 because the exposition could not be encoded.
pub static ENCODE_ERRORS: Lazy<IntCounter> = Lazy::new(|| {
    IntCounter::new(
        "metrics_encode_errors_total",
        "Scrapes of /metrics that failed because the metrics could not be encoded",
    )
    .expect("valid metric definition")
});

/// The scrape handler and its limit. Clones share the slots: one permit
/// of the semaphore per scrape allowed at once, as the connection and
/// websocket limits count theirs.
#[derive(Debug, Clone)]
pub struct Scrapes {
    slots: Arc<Semaphore>,
    max_in_flight: usize,
}

impl Scrapes {
    /// Allows `max_in_flight` scrapes to gather and encode at once.
    pub fn new(max_in_flight: usize) -> Scrapes {
        Scrapes {
            slots: Arc::new(Semaphore::new(max_in_flight)),
            max_in_flight,
        }
    }

    /// Answers one scrape: the Prometheus text exposition, gzip-compressed
    /// when the request accepts it; 503 when the limit is reached; 500 when
    /// encoding fails (an empty 200 would look like a healthy target that
    /// lost all its series).
    pub fn answer(&self, request_headers: &HeaderMap) -> Response {
        // Held until the body is ready, given back when dropped.
        let Ok(_slot) = self.slots.try_acquire() else {
            let refusal = format!(
                "Limit of concurrent scrapes reached ({}), try again later.\n",
                self.max_in_flight
            );
            return warp::reply::with_status(refusal, StatusCode::SERVICE_UNAVAILABLE)
                .into_response();
        };
        match metrics::encode() {
            Ok(body) => warp::reply::with_header(
                gzip::negotiated(request_headers, body),
                CONTENT_TYPE,
                prometheus::TEXT_FORMAT,
            )
            .into_response(),
            Err(err) => {
                ENCODE_ERRORS.inc();
                tracing::error!(error = %err, "could not encode metrics");
                StatusCode::INTERNAL_SERVER_ERROR.into_response()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_beyond_the_limit_are_refused_until_one_is_given_back() {
        let scrapes = Scrapes::new(2);
        let take_slot = || scrapes.slots.try_acquire().ok();

        let first = take_slot().expect("first slot");
        let second = take_slot().expect("second slot");
        assert!(take_slot().is_none());
        drop(first);
        let third = take_slot().expect("a freed slot");
        assert!(take_slot().is_none());
        drop((second, third));
        assert_eq!(scrapes.slots.available_permits(), 2);
    }
}
