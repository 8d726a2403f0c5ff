//! Every setting of the service, parsed and validated once at start-up by
//! clap, from an environment variable (`WS_MAX_CLIENTS=5000`) or the flag of
//! the same name (`--ws-max-clients 5000`). A bad value is one line naming
//! the setting and the value (see `main`), never a panic later. `--help`
//! lists them all with their defaults.
//!
//! Each setting names its flag and variable, and takes the variable's name
//! as its value name too, so that an error about it names the variable.
//!
//! It imports nothing else of this crate.

use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::str::FromStr;
use std::time::Duration;

use clap::builder::TypedValueParser;
use clap::{Args, Parser, ValueEnum};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::{LevelFilter, ParseError};

/// The service's configuration.
#[derive(Debug, Clone, Parser)]
#[command(
    version,
    about = "A warp service instrumented with Prometheus",
    after_help = "Routes: GET /some, /metrics, /healthz, /readyz (HEAD too), websocket /ws/<id>"
)]
pub struct Config {
    /// Address to listen on; port 0 picks a free port
    #[arg(long, env, default_value = "0.0.0.0:8080")]
    pub listen_addr: SocketAddr,

    /// A listener of its own for /metrics, /healthz and /readyz; /metrics
    /// then leaves LISTEN_ADDR
    #[arg(long, env)]
    pub metrics_addr: Option<SocketAddr>,

    /// Period of the simulated data collector in ms; 0 switches it off
    #[arg(long = "collect-interval-ms", env = "COLLECT_INTERVAL_MS")]
    #[arg(value_name = "COLLECT_INTERVAL_MS")]
    #[arg(default_value = "10", value_parser = milliseconds())]
    pub collect_interval: Duration,

    /// Scrapes of /metrics gathered and encoded at once; more get 503
    #[arg(long, env, value_name = "METRICS_MAX_IN_FLIGHT")]
    #[arg(default_value = "4", value_parser = count(1..=1000))]
    pub metrics_max_in_flight: usize,

    /// On SIGTERM or SIGINT, how long to wait for requests and websocket
    /// clients to finish; a second signal exits at once
    #[arg(long = "shutdown-grace-secs", env = "SHUTDOWN_GRACE_SECS")]
    #[arg(value_name = "SHUTDOWN_GRACE_SECS")]
    #[arg(default_value = "10", value_parser = seconds(1..=3600))]
    pub shutdown_grace: Duration,

    /// On SIGTERM or SIGINT, how long to go on serving with /readyz at 503
    /// before that
    #[arg(long = "shutdown-drain-secs", env = "SHUTDOWN_DRAIN_SECS")]
    #[arg(value_name = "SHUTDOWN_DRAIN_SECS")]
    #[arg(default_value = "0", value_parser = seconds(0..=3600))]
    pub shutdown_drain: Duration,

    #[command(flatten)]
    pub http: HttpSettings,

    #[command(flatten)]
    pub ws: WsSettings,

    #[command(flatten)]
    pub log: LogSettings,
}

/// The HTTP connection limits.
#[derive(Debug, Clone, Copy, Args)]
pub struct HttpSettings {
    /// HTTP connections served at once; more wait in the listen queue
    #[arg(long = "http-max-connections", env = "HTTP_MAX_CONNECTIONS")]
    #[arg(value_name = "HTTP_MAX_CONNECTIONS")]
    #[arg(default_value = "1024", value_parser = count(1..=1_000_000))]
    pub max_connections: usize,

    /// A connection on which nothing moves towards the client for this long
    /// is closed, checked once per period
    #[arg(long = "http-idle-timeout-secs", env = "HTTP_IDLE_TIMEOUT_SECS")]
    #[arg(value_name = "HTTP_IDLE_TIMEOUT_SECS")]
    #[arg(default_value = "30", value_parser = seconds(1..=3600))]
    pub idle_timeout: Duration,
}

/// The websocket heartbeat and limits.
#[derive(Debug, Clone, Copy, Args)]
pub struct WsSettings {
    /// Websocket clients held at once; more get 503
    #[arg(
        long = "ws-max-clients",
        env = "WS_MAX_CLIENTS",
        value_name = "WS_MAX_CLIENTS"
    )]
    #[arg(default_value = "20000", value_parser = count(1..=1_000_000))]
    pub max_clients: usize,

    /// Seconds between pings to websocket clients; one silent for two is
    /// dropped
    #[arg(
        long = "ws-heartbeat-secs",
        env = "WS_HEARTBEAT_SECS",
        value_name = "WS_HEARTBEAT_SECS"
    )]
    #[arg(default_value = "30", value_parser = seconds(1..=3600))]
    pub heartbeat: Duration,

    /// Largest websocket message or frame accepted; a larger one closes the
    /// connection with 1009
    #[arg(long = "ws-max-message-bytes", env = "WS_MAX_MESSAGE_BYTES")]
    #[arg(value_name = "WS_MAX_MESSAGE_BYTES")]
    #[arg(default_value = "65536", value_parser = count(128..=64 << 20))]
    pub max_message_bytes: usize,

    /// Time a websocket message may take from its first byte to its last; a
    /// slower one closes the connection with 1008 [default: two heartbeats]
    #[arg(long = "ws-message-deadline-secs", env = "WS_MESSAGE_DEADLINE_SECS")]
    #[arg(value_name = "WS_MESSAGE_DEADLINE_SECS", value_parser = seconds(1..=86400))]
    pub message_deadline: Option<Duration>,

    /// Message lines logged per websocket client and second; the rest are
    /// counted, and one line a second says how many were left out
    #[arg(long = "ws-log-messages-per-sec", env = "WS_LOG_MESSAGES_PER_SEC")]
    #[arg(value_name = "WS_LOG_MESSAGES_PER_SEC")]
    #[arg(default_value = "20", value_parser = clap::value_parser!(u32))]
    pub log_messages_per_sec: u32,
}

impl WsSettings {
    /// How long a message may take: as set, or two heartbeats.
    pub fn message_deadline(&self) -> Duration {
        self.message_deadline.unwrap_or(2 * self.heartbeat)
    }
}

/// Which log lines are written, and how.
#[derive(Debug, Clone, Args)]
pub struct LogSettings {
    /// Which log lines to write: a level (error, warn, info, debug, trace)
    /// or directives such as info,rust_web_prometheus_example::ws=debug
    #[arg(
        long = "rust-log",
        env = "RUST_LOG",
        value_name = "RUST_LOG",
        default_value = "info"
    )]
    pub filter: LogFilter,

    /// Human-readable lines, or one JSON object per line for log pipelines
    #[arg(long = "log-format", env = "LOG_FORMAT", value_name = "LOG_FORMAT")]
    #[arg(default_value = "text")]
    pub format: LogFormat,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// `RUST_LOG` directives that parse.
#[derive(Debug, Clone)]
pub struct LogFilter(String);

impl LogFilter {
    /// The filter the directives describe, with `info` for what they leave
    /// out.
    pub fn env_filter(&self) -> EnvFilter {
        parse_filter(&self.0).expect("validated when read")
    }
}

impl FromStr for LogFilter {
    type Err = ParseError;

    fn from_str(directives: &str) -> Result<LogFilter, ParseError> {
        parse_filter(directives)?;
        Ok(LogFilter(directives.to_owned()))
    }
}

/// The one place the `RUST_LOG` syntax is read.
fn parse_filter(directives: &str) -> Result<EnvFilter, ParseError> {
    EnvFilter::builder()
        .with_default_directive(LevelFilter::INFO.into())
        .parse(directives)
}

/// A whole number of milliseconds.
fn milliseconds() -> impl TypedValueParser<Value = Duration> {
    clap::value_parser!(u64).map(Duration::from_millis)
}

/// A whole number of seconds in `range`.
fn seconds(range: RangeInclusive<u64>) -> impl TypedValueParser<Value = Duration> {
    clap::value_parser!(u64)
        .range(range)
        .map(Duration::from_secs)
}

/// A whole number in `range`.
fn count(range: RangeInclusive<u64>) -> impl TypedValueParser<Value = usize> {
    clap::value_parser!(u64)
        .range(range)
        .map(|count| count as usize)
}

impl Config {
    /// How often the simulated collector records a sample; `None` when it is
    /// off.
    pub fn collect_interval(&self) -> Option<Duration> {
        (!self.collect_interval.is_zero()).then_some(self.collect_interval)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, clap::Error> {
        Config::try_parse_from(std::iter::once("service").chain(args.iter().copied()))
    }

    #[test]
    fn every_setting_is_read_as_given() {
        let config = parse(&[
            "--listen-addr=127.0.0.1:0",
            "--metrics-addr=127.0.0.1:9090",
            "--collect-interval-ms=0",
            "--ws-heartbeat-secs=1",
            "--ws-max-message-bytes=1024",
            "--ws-message-deadline-secs=5",
            "--ws-log-messages-per-sec=0",
            "--shutdown-grace-secs=1",
            "--shutdown-drain-secs=15",
            "--http-max-connections=8",
            "--http-idle-timeout-secs=2",
            "--ws-max-clients=3",
            "--metrics-max-in-flight=1",
            "--rust-log=warn,rust_web_prometheus_example::ws=debug",
            "--log-format=json",
        ])
        .unwrap();
        assert_eq!(config.listen_addr, "127.0.0.1:0".parse().unwrap());
        assert_eq!(config.metrics_addr, Some("127.0.0.1:9090".parse().unwrap()));
        assert_eq!(config.collect_interval(), None);
        assert_eq!(config.ws.heartbeat, Duration::from_secs(1));
        assert_eq!(config.ws.max_message_bytes, 1024);
        assert_eq!(config.ws.message_deadline(), Duration::from_secs(5));
        assert_eq!(config.ws.log_messages_per_sec, 0);
        assert_eq!(config.ws.max_clients, 3);
        assert_eq!(config.shutdown_grace, Duration::from_secs(1));
        assert_eq!(config.shutdown_drain, Duration::from_secs(15));
        assert_eq!(config.http.max_connections, 8);
        assert_eq!(config.http.idle_timeout, Duration::from_secs(2));
        assert_eq!(config.metrics_max_in_flight, 1);
        assert_eq!(config.log.format, LogFormat::Json);
    }

    #[test]
    fn a_message_may_take_two_heartbeats_unless_set() {
        let config = parse(&["--ws-heartbeat-secs=7"]).unwrap();
        assert_eq!(config.ws.message_deadline(), Duration::from_secs(14));
        assert_eq!(config.ws.log_messages_per_sec, 20);
    }

    #[test]
    fn values_out_of_range_are_refused() {
        for arg in [
            "--ws-heartbeat-secs=0",
            "--ws-heartbeat-secs=3601",
            "--ws-max-message-bytes=127",
            "--ws-message-deadline-secs=0",
            "--ws-log-messages-per-sec=-1",
            "--shutdown-grace-secs=0",
            "--http-max-connections=0",
            "--metrics-max-in-flight=1001",
            "--rust-log=info,[{",
            "--log-format=pretty",
        ] {
            assert!(parse(&[arg]).is_err(), "{arg}");
        }
    }
}
