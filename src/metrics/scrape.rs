//! `GET /metrics`, protected as promhttp protects its handler: at most a
//! set number of scrapes gather and encode at once, and one more gets
//! `503 Service Unavailable` at once; an exposition that cannot be encoded
//! is answered 500, logged, and counted in `metrics_encode_errors_total`.
//! The body is gzip-compressed when the scrape asks for it, as Prometheus
//! does.
//!
//! A scrape holds its slot while it gathers, encodes and compresses, the
//! CPU a scrape costs; the body is then sent like any response, so a client
//! that reads slowly holds a connection, not a slot.

use std::io::Write;
use std::sync::Arc;

use flate2::Compression;
use flate2::write::GzEncoder;
use http::header::{ACCEPT_ENCODING, CONTENT_ENCODING, CONTENT_TYPE, VARY};
use http::{HeaderMap, Response, StatusCode};
use once_cell::sync::Lazy;
use prometheus::{Encoder, IntCounter, Registry, TextEncoder};
use tokio::sync::Semaphore;

/// Scrapes answered 500 because the exposition could not be encoded.
pub static ENCODE_ERRORS: Lazy<IntCounter> = Lazy::new(|| {
    IntCounter::new(
        "metrics_encode_errors_total",
        "Scrapes of /metrics that failed because the metrics could not be encoded",
    )
    .expect("valid metric")
});

/// The scrape handler of one registry, and its limit. Clones share both.
#[derive(Clone)]
pub struct Scrapes {
    registry: Registry,
    /// One permit per scrape allowed at once.
    slots: Arc<Semaphore>,
    max_in_flight: usize,
}

impl Scrapes {
    /// Answers scrapes of `registry`, `max_in_flight` at a time.
    pub fn new(registry: Registry, max_in_flight: usize) -> Scrapes {
        Scrapes {
            registry,
            slots: Arc::new(Semaphore::new(max_in_flight)),
            max_in_flight,
        }
    }

    /// Answers one scrape whose request carried `headers`.
    pub async fn answer(&self, headers: &HeaderMap) -> Response<Vec<u8>> {
        // Held until the body is ready.
        let Ok(slot) = Arc::clone(&self.slots).try_acquire_owned() else {
            let refusal = format!(
                "Limit of concurrent scrapes reached ({}), try again later.\n",
                self.max_in_flight
            );
            return reply(StatusCode::SERVICE_UNAVAILABLE, refusal.into_bytes());
        };
        let (registry, gzip) = (self.registry.clone(), accepts_gzip(headers));
        // Off the async workers: gathering reads `/proc` (the process
        // collector lists every open file, a socket per client) and gzip is
        // CPU work, either of which would hold up the connections a worker
        // serves.
        let encoded = tokio::task::spawn_blocking(move || {
            let _slot = slot;
            encode(&registry, gzip)
        });
        match encoded.await {
            Ok(response) => response,
            // A collector's panic is the scrape's, as if it had run here.
            Err(err) if err.is_panic() => std::panic::resume_unwind(err.into_panic()),
            Err(_) => reply(StatusCode::SERVICE_UNAVAILABLE, Vec::new()),
        }
    }
}

/// The exposition of `registry`, gzip-compressed if `gzip`.
fn encode(registry: &Registry, gzip: bool) -> Response<Vec<u8>> {
    let mut body = Vec::new();
    if let Err(err) = TextEncoder::new().encode(&registry.gather(), &mut body) {
        ENCODE_ERRORS.inc();
        tracing::error!(error = %err, "could not encode the metrics");
        // Not an empty 200, which would look like a healthy target that
        // lost all its series.
        return reply(StatusCode::INTERNAL_SERVER_ERROR, Vec::new());
    }
    let mut response = reply(StatusCode::OK, if gzip { compress(&body) } else { body });
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        prometheus::TEXT_FORMAT.parse().expect("valid header"),
    );
    // Caches between client and service must not hand the gzip body to a
    // client that did not ask for it.
    headers.insert(VARY, "accept-encoding".parse().expect("valid header"));
    if gzip {
        headers.insert(CONTENT_ENCODING, "gzip".parse().expect("valid header"));
    }
    response
}

fn reply(status: StatusCode, body: Vec<u8>) -> Response<Vec<u8>> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response
}

/// Whether `Accept-Encoding` lists gzip with a weight above 0, as
/// Prometheus's `Accept-Encoding: gzip` does. Codings match in any case.
fn accepts_gzip(headers: &HeaderMap) -> bool {
    let codings = headers
        .get_all(ACCEPT_ENCODING)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','));
    codings.into_iter().any(|coding| {
        let mut parts = coding.split(';').map(str::trim);
        let named = parts
            .next()
            .is_some_and(|name| name.eq_ignore_ascii_case("gzip"));
        let refused = parts.any(|parameter| {
            let weight = parameter
                .strip_prefix("q=")
                .or_else(|| parameter.strip_prefix("Q="));
            weight.is_some_and(|weight| weight.parse::<f32>().map_or(true, |q| q <= 0.0))
        });
        named && !refused
    })
}

/// `body` gzip-compressed at the fastest level, which already takes most of
/// the gain on a text exposition.
fn compress(body: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::with_capacity(body.len() / 4), Compression::fast());
    // Writing into a Vec fails only when memory runs out.
    encoder.write_all(body).expect("gzip into memory");
    encoder.finish().expect("gzip into memory")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept_encoding(values: &[&str]) -> HeaderMap {
        values
            .iter()
            .map(|value| (ACCEPT_ENCODING, value.parse().unwrap()))
            .collect()
    }

    #[test]
    fn gzip_is_used_when_listed_with_a_weight_above_zero() {
        for value in [
            "gzip",
            "GZip",
            "deflate, gzip",
            "gzip;q=0.5",
            "br, gzip ; q=1.0",
        ] {
            assert!(accepts_gzip(&accept_encoding(&[value])), "{value}");
        }
        for value in [
            "",
            "identity",
            "br, deflate",
            "gzip;q=0",
            "gzip;q=0.000",
            "gzip;q=x",
            "gzipx",
        ] {
            assert!(!accepts_gzip(&accept_encoding(&[value])), "{value}");
        }
        assert!(!accepts_gzip(&HeaderMap::new()));
        assert!(accepts_gzip(&accept_encoding(&["br", "gzip"])));
    }

    #[tokio::test]
    async fn a_scrape_beyond_the_limit_is_refused_until_a_slot_frees() {
        let scrapes = Scrapes::new(Registry::new(), 1);
        let held = scrapes.slots.try_acquire().unwrap();

        let refused = scrapes.answer(&HeaderMap::new()).await;
        drop(held);
        let answered = scrapes.answer(&HeaderMap::new()).await;

        assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(String::from_utf8_lossy(refused.body()).contains("(1)"));
        assert_eq!(answered.status(), StatusCode::OK);
    }
}
