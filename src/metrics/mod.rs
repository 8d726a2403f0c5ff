//! The instrumentation: what a reader copies into a service of their own.
//!
//! This folder imports nothing else of this crate, only `prometheus`,
//! `http`, `tokio`, `once_cell`, `flate2` and `tracing`, so it can be copied
//! as it is (`docs/reuse.md`; `tests/reuse.rs` builds the copy into an axum
//! and a warp service of their own).
//!
//! - this file: the service's own [`REGISTRY`] and the metrics it records:
//!   the tutorial's four, the build information, and the counters of
//!   websocket messages and closes, panicked tasks and dropped log lines
//!   (which `telemetry` counts);
//! - [`http`]: `http_requests_total`, `http_request_duration_seconds` and
//!   `http_requests_in_flight`, by route template from a list passed in;
//! - [`runtime`]: what the tokio runtime is doing (`tokio_*`);
//! - [`scrape`]: `GET /metrics`, with a limit on scrapes at once and gzip.
//!
//! The metrics are process-wide `Lazy` statics, as in the tutorial, so any
//! module records into them without passing handles around. [`register`]
//! puts them, the runtime collector and (on Linux) the standard process
//! metrics in [`REGISTRY`]; [`http::HttpMetrics`] registers itself there too.

pub mod http;
pub mod runtime;
pub mod scrape;

use std::any::Any;

use once_cell::sync::{Lazy, OnceCell};
use prometheus::core::Collector;
use prometheus::{
    HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
};

// Creating a metric fails only for an invalid name, help text or label set.
// Those are the literals below, so a failure is a bug in this file, and
// `expect` reports it at first use.

/// The registry that holds everything a scrape shows.
pub static REGISTRY: Lazy<Registry> = Lazy::new(Registry::new);

/// Requests served by `GET /some`.
pub static INCOMING_REQUESTS: Lazy<IntCounter> =
    Lazy::new(|| IntCounter::new("incoming_requests", "Incoming Requests").expect("valid metric"));

/// Websocket clients connected right now.
pub static CONNECTED_CLIENTS: Lazy<IntGauge> =
    Lazy::new(|| IntGauge::new("connected_clients", "Connected Clients").expect("valid metric"));

/// Simulated response codes by environment, code and class (`type`).
pub static RESPONSE_CODE: Lazy<IntCounterVec> = Lazy::new(|| {
    let opts = Opts::new("response_code", "Response Codes");
    IntCounterVec::new(opts, &["env", "statuscode", "type"]).expect("valid metric")
});

/// Simulated response times in seconds by environment, with the default
/// buckets. The name keeps the tutorial's spelling, without the `_seconds`
/// Prometheus's conventions would add, so that its queries work; the help
/// text says the unit, which no query sees.
pub static RESPONSE_TIME: Lazy<HistogramVec> = Lazy::new(|| {
    let opts = HistogramOpts::new("response_time", "Response Times in seconds");
    HistogramVec::new(opts, &["env"]).expect("valid metric")
});

/// Websocket sessions ended, by the close code the server sent, or 1006
/// (RFC 6455's code for "no close frame") when the connection ended without
/// one. The codes are the server's own, so the label is bounded.
pub static WEBSOCKET_CLOSES: Lazy<IntCounterVec> = Lazy::new(|| {
    let opts = Opts::new(
        "websocket_closes_total",
        "Websocket sessions ended, by the close code the server sent (1006: none)",
    );
    IntCounterVec::new(opts, &["code"]).expect("valid metric")
});

/// Websocket messages received whole, by `type` (`text`, `binary`): every
/// one, whether its log line was written or left out.
pub static WEBSOCKET_MESSAGES_RECEIVED: Lazy<IntCounterVec> = Lazy::new(|| {
    let help = "Websocket messages received, by type";
    by_message_type(Opts::new("websocket_messages_received_total", help))
});

/// The payload bytes of those messages, by `type`.
pub static WEBSOCKET_RECEIVED_BYTES: Lazy<IntCounterVec> = Lazy::new(|| {
    let help = "Payload bytes of the websocket messages received, by type";
    by_message_type(Opts::new("websocket_received_bytes_total", help))
});

/// A counter by websocket message `type`, with both types shown from the
/// start, at 0: a rate over a series that appears with its first message
/// would miss that message.
fn by_message_type(opts: Opts) -> IntCounterVec {
    let counter = IntCounterVec::new(opts, &["type"]).expect("valid metric");
    for kind in ["text", "binary"] {
        counter.with_label_values(&[kind]);
    }
    counter
}

/// Tasks that ended in a panic, by kind (`http_connection`,
/// `websocket_session`): a bug, logged with its message as it happens.
pub static TASK_PANICS: Lazy<IntCounterVec> = Lazy::new(|| {
    let opts = Opts::new("task_panics_total", "Tasks that ended in a panic, by kind");
    IntCounterVec::new(opts, &["task"]).expect("valid metric")
});

/// Log lines lost because stdout's reader was slow or gone (see
/// `src/telemetry.rs`, which counts them here).
pub static LOG_LINES_DROPPED: Lazy<IntCounter> = Lazy::new(|| {
    let help = "Log lines dropped because stdout could not take them";
    IntCounter::new("log_lines_dropped_total", help).expect("valid metric")
});

/// Always 1, labelled with what tells one build from another, as
/// Prometheus's own `prometheus_build_info`: the package `version`, the git
/// commit (`revision`) and the `rustc_version`. The last two come from this
/// crate's `build.rs`; elsewhere they read `unknown`.
pub static BUILD_INFO: Lazy<IntGauge> = Lazy::new(|| {
    let opts = Opts::new(
        "rust_web_prometheus_example_build_info",
        "A metric with a constant '1' value labeled by version, revision and rustc version",
    )
    .const_label("version", env!("CARGO_PKG_VERSION"))
    .const_label(
        "revision",
        option_env!("BUILD_REVISION").unwrap_or("unknown"),
    )
    .const_label(
        "rustc_version",
        option_env!("BUILD_RUSTC_VERSION").unwrap_or("unknown"),
    );
    let gauge = IntGauge::with_opts(opts).expect("valid metric");
    gauge.set(1);
    gauge
});

/// Registers every metric above in [`REGISTRY`], with the runtime's and,
/// on Linux, the standard process metrics (`process_cpu_seconds_total`,
/// `process_resident_memory_bytes`, ...). Later calls do nothing.
pub fn register() -> prometheus::Result<()> {
    static REGISTERED: OnceCell<()> = OnceCell::new();
    REGISTERED
        .get_or_try_init(|| {
            let metrics: [Box<dyn Collector>; 12] = [
                Box::new(INCOMING_REQUESTS.clone()),
                Box::new(CONNECTED_CLIENTS.clone()),
                Box::new(RESPONSE_CODE.clone()),
                Box::new(RESPONSE_TIME.clone()),
                Box::new(WEBSOCKET_CLOSES.clone()),
                Box::new(WEBSOCKET_MESSAGES_RECEIVED.clone()),
                Box::new(WEBSOCKET_RECEIVED_BYTES.clone()),
                Box::new(TASK_PANICS.clone()),
                Box::new(LOG_LINES_DROPPED.clone()),
                Box::new(BUILD_INFO.clone()),
                Box::new(scrape::ENCODE_ERRORS.clone()),
                Box::new(runtime::RuntimeCollector::new()),
            ];
            // prometheus reads the process metrics from `/proc`, so it offers
            // them only on Linux; elsewhere a scrape has no `process_*`.
            #[cfg(target_os = "linux")]
            let process: Option<Box<dyn Collector>> = Some(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ));
            #[cfg(not(target_os = "linux"))]
            let process: Option<Box<dyn Collector>> = None;
            metrics
                .into_iter()
                .chain(process)
                .try_for_each(|metric| REGISTRY.register(metric))
        })
        .copied()
}

/// Logs a panic that ended a task of kind `task`, with its message, and
/// counts it in `task_panics_total`.
pub fn record_panic(task: &'static str, panic: &(dyn Any + Send)) {
    tracing::error!(task, panic = panic_message(panic), "a task panicked");
    TASK_PANICS.with_label_values(&[task]).inc();
}

/// The message a panic was raised with.
pub fn panic_message(panic: &(dyn Any + Send)) -> &str {
    let message = panic.downcast_ref::<&str>().copied();
    message
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(not a string)")
}
