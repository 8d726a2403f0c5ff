//! The service's Prometheus metrics: the custom registry, the tutorial's four
//! metrics, the build information, the count of dropped log lines, their
//! registration with every collector of the other modules (request,
//! in-flight, process and runtime metrics), and encoding everything for
//! `GET /metrics`.
//!
//! The metrics are process-wide `Lazy` statics, as in the tutorial, so any
//! module can record into them without passing handles around. They live in
//! a registry of our own, which holds everything a scrape shows.

use std::collections::HashMap;

use once_cell::sync::{Lazy, OnceCell};
use prometheus::core::Desc;
use prometheus::proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType};
use prometheus::{
    HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
};

use crate::exposition::{self, EncodeError};
use crate::http_metrics::RequestMetrics;
use crate::in_flight::RequestsInFlight;
use crate::process_metrics::ProcessMetrics;
use crate::runtime_metrics::RuntimeMetrics;
use crate::scrape;

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

/// Always 1, with the labels that tell one build of the service from
/// another, as Prometheus's own `prometheus_build_info`: the package
/// `version`, the git commit it was built from (`revision`, `unknown` outside
/// a git checkout; see `build.rs`) and the `rustc_version`. Join it to any
/// series on `instance` to see which build reported it.
pub static BUILD_INFO: Lazy<IntGauge> = Lazy::new(|| {
    let opts = Opts::new(
        "rust_web_prometheus_example_build_info",
        "A metric with a constant '1' value labeled by the version, revision and rustc version the service was built with",
    )
    .const_label("version", env!("CARGO_PKG_VERSION"))
    .const_label("revision", env!("BUILD_REVISION"))
    .const_label("rustc_version", env!("BUILD_RUSTC_VERSION"));
    let gauge = IntGauge::with_opts(opts).expect("valid metric definition");
    gauge.set(1);
    gauge
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
            REGISTRY.register(Box::new(BUILD_INFO.clone()))?;
            REGISTRY.register(Box::new(RequestMetrics))?;
            REGISTRY.register(Box::new(RequestsInFlight::new()))?;
            REGISTRY.register(Box::new(scrape::ENCODE_ERRORS.clone()))?;
            REGISTRY.register(Box::new(ProcessMetrics::new()))?;
            REGISTRY.register(Box::new(RuntimeMetrics::new()))?;
            REGISTRY.register(Box::new(LOG_LINES_DROPPED.clone()))?;
            Ok(())
        })
        .copied()
}

/// Encodes every metric in [`REGISTRY`] as a Prometheus text exposition,
/// whose Content-Type is [`prometheus::TEXT_FORMAT`].
pub fn encode() -> Result<Vec<u8>, EncodeError> {
    let families = REGISTRY.gather();
    let mut body = Vec::with_capacity(ENCODED_SIZE_HINT);
    exposition::encode(&families, &mut body)?;
    Ok(body)
}

/// Room for a quiet service's exposition, so that encoding it rarely has to
/// grow the buffer.
const ENCODED_SIZE_HINT: usize = 8 * 1024;

/// The description of a metric that a collector of this crate builds at
/// gather time, with `labels` as its label names.
pub(crate) fn desc(name: &str, help: &str, labels: &[&str]) -> Desc {
    let labels = labels.iter().map(|label| label.to_string()).collect();
    Desc::new(name.to_owned(), help.to_owned(), labels, HashMap::new())
        .expect("valid metric definition")
}

/// A family of `kind` (a counter or a gauge) described by `desc`, with one
/// series for each pair of label values (in the order of `desc`'s label
/// names) and value.
pub(crate) fn family(
    desc: &Desc,
    kind: MetricType,
    series: impl IntoIterator<Item = (Vec<String>, f64)>,
) -> MetricFamily {
    let metrics = series
        .into_iter()
        .map(|(values, value)| {
            let labels = desc
                .variable_labels
                .iter()
                .zip(values)
                .map(|(name, value)| {
                    let mut pair = LabelPair::default();
                    pair.set_name(name.clone());
                    pair.set_value(value);
                    pair
                })
                .collect();
            let mut metric = Metric::from_label(labels);
            if kind == MetricType::COUNTER {
                let mut counter = Counter::default();
                counter.set_value(value);
                metric.set_counter(counter);
            } else {
                let mut gauge = Gauge::default();
                gauge.set_value(value);
                metric.set_gauge(gauge);
            }
            metric
        })
        .collect();
    let mut family = MetricFamily::default();
    family.set_name(desc.fq_name.clone());
    family.set_help(desc.help.clone());
    family.set_field_type(kind);
    family.set_metric(metrics);
    family
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
