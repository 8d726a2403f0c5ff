//! The service's Prometheus metrics: the custom registry, the tutorial's four
//! metrics, the count of dropped log lines, their registration (with the request metrics of
//! [`http_metrics`](crate::http_metrics)), and encoding everything for
//! `GET /metrics`.
//!
//! The metrics are process-wide `Lazy` statics, as in the tutorial, so any
//! module can record into them without passing handles around. They live in
//! a registry of our own; the process metrics (CPU, memory, file descriptors)
//! that the `prometheus` crate's `process` feature registers in its default
//! registry are added at encoding time.

use once_cell::sync::{Lazy, OnceCell};
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

use crate::http_metrics::RequestMetrics;

// Creating a metric fails only for an invalid name, help text or label set.
// Those are the literals below, so a failure is a bug in this file and
// `expect` reports it at first use.

/// The registry that holds the service's own metrics.
pub static REGISTRY: Lazy<Registry> = Lazy::new(Registry::new);

/// Requests served by `GET /some`.
pub static INCOMING_REQUESTS: Lazy<IntCounter> = Lazy::new(|| {
    IntCounter::new("incoming_requests", "Incoming Requests").expect("valid metric definition")
});

/// Websocket clients connected right now.
pub static CONNECTED_CLIENTS: Lazy<IntGauge> = Lazy::new(|| {
    IntGauge::new("connected_clients", "Connected Clients").expect("valid metric definition")
});

/// Simulated response codes by environment, code and class (`type`).
pub static RESPONSE_CODE: Lazy<IntCounterVec> = Lazy::new(|| {
    IntCounterVec::new(
        Opts::new("response_code", "Response Codes"),
        &["env", "statuscode", "type"],
    )
    .expect("valid metric definition")
});

/// Simulated response times by environment, with the default buckets.
pub static RESPONSE_TIME: Lazy<HistogramVec> = Lazy::new(|| {
    HistogramVec::new(
        HistogramOpts::new("response_time", "Response Times"),
        &["env"],
    )
    .expect("valid metric definition")
});

/// Log lines lost because stdout's reader was too slow or gone: dropped
/// from the full queue, or failed to write (see [`logging`](crate::logging)).
pub static LOG_LINES_DROPPED: Lazy<IntCounter> = Lazy::new(|| {
    IntCounter::new(
        "log_lines_dropped_total",
        "Log lines dropped because stdout could not take them",
    )
    .expect("valid metric definition")
});

/// Registers every metric in [`REGISTRY`]. Safe to call more than once: after
/// a successful call, later ones do nothing.
pub fn register() -> Result<(), prometheus::Error> {
    static REGISTERED: OnceCell<()> = OnceCell::new();
    REGISTERED
        .get_or_try_init(|| {
            REGISTRY.register(Box::new(INCOMING_REQUESTS.clone()))?;
            REGISTRY.register(Box::new(CONNECTED_CLIENTS.clone()))?;
            REGISTRY.register(Box::new(RESPONSE_CODE.clone()))?;
            REGISTRY.register(Box::new(RESPONSE_TIME.clone()))?;
            REGISTRY.register(Box::new(RequestMetrics))?;
            REGISTRY.register(Box::new(LOG_LINES_DROPPED.clone()))?;
            Ok(())
        })
        .copied()
}

/// Encodes the service's metrics and the default registry's process metrics
/// as one Prometheus text exposition, whose Content-Type is
/// [`prometheus::TEXT_FORMAT`].
pub fn encode() -> Result<Vec<u8>, prometheus::Error> {
    let mut families = REGISTRY.gather();
    families.extend(prometheus::gather());
    let mut body = Vec::new();
    TextEncoder::new().encode(&families, &mut body)?;
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registering_twice_is_harmless() {
        register().unwrap();
        register().unwrap();
        let names: Vec<String> = REGISTRY
            .gather()
            .iter()
            .map(|family| family.name().to_owned())
            .collect();
        // Vectors without any child yet are not gathered, so only the plain
        // metrics are certain to appear here.
        assert!(names.contains(&"incoming_requests".to_owned()), "{names:?}");
        assert!(names.contains(&"connected_clients".to_owned()), "{names:?}");
    }
}
