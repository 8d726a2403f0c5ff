//! Every setting of the service: its environment variable, its default, and
//! how it is parsed and validated.
//!
//! The whole configuration is read once, at start-up, into [`Config`]. A bad
//! value is reported as a [`ConfigError`] that names the variable and the value,
//! so `main` can print one line and exit instead of panicking later.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::LevelFilter;

/// The settings, their defaults and their meaning, as printed by `--help` and
/// documented in the README.
pub const HELP: &str = "\
rust-web-prometheus-example: a warp service instrumented with Prometheus

Usage: rust-web-prometheus-example [--help]

Settings are read from environment variables:
  LISTEN_ADDR          address to listen on; port 0 picks a free port   [default: 0.0.0.0:8080]
  METRICS_ADDR         if set, a listener of its own for /metrics, /healthz
                       and /readyz; /metrics then leaves LISTEN_ADDR     [default: unset]
  COLLECT_INTERVAL_MS  period of the simulated data collector in ms;
                       0 switches it off                                [default: 10]
  HTTP_MAX_CONNECTIONS HTTP connections served at once; more wait in the
                       listen queue (1..=1000000)                       [default: 1024]
  HTTP_IDLE_TIMEOUT_SECS
                       a connection on which nothing moves towards the
                       client for this long is closed, checked once per
                       period (1..=3600)
                                                                        [default: 30]
  WS_MAX_CLIENTS       websocket clients held at once; more get 503
                       (1..=1000000)                                    [default: 20000]
  WS_HEARTBEAT_SECS    seconds between pings to websocket clients; a client
                       silent for two intervals is dropped (1..=3600)   [default: 30]
  WS_MAX_MESSAGE_BYTES largest websocket message or frame accepted; a larger
                       one closes the connection with code 1009
                       (128..=67108864)                                 [default: 65536]
  METRICS_MAX_IN_FLIGHT
                       scrapes of /metrics gathered and encoded at once;
                       more get 503 (1..=1000)                          [default: 4]
  SHUTDOWN_GRACE_SECS  on SIGTERM/SIGINT, how long to wait for requests and
                       websocket clients to finish (1..=3600); a second
                       signal exits at once                             [default: 10]
  SHUTDOWN_DRAIN_SECS  on SIGTERM/SIGINT, how long to go on serving with
                       /readyz at 503 before that (0..=3600)            [default: 0]
  RUST_LOG             which log lines to write: a level (error, warn, info,
                       debug, trace) or directives such as
                       info,rust_web_prometheus_example::ws=debug       [default: info]
  LOG_FORMAT           text (human-readable lines) or json (one object
                       per line, for log pipelines)                     [default: text]

Routes: GET /some, GET /metrics, GET /healthz, GET /readyz (HEAD too),
        websocket /ws/<id>
";

/// The service's configuration, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Where the server listens.
    pub listen_addr: SocketAddr,
    /// Where `/metrics` has a listener of its own, if anywhere; without one
    /// it is served on `listen_addr`.
    pub metrics_addr: Option<SocketAddr>,
    /// How often the simulated collector records a sample; `None` when it is off.
    pub collect_interval: Option<Duration>,
    /// Websocket heartbeat and limits.
    pub ws: WsSettings,
    /// HTTP connection limits.
    pub http: HttpSettings,
    /// How long shutdown waits for requests and websocket clients to finish.
    pub shutdown_grace: Duration,
    /// Scrapes of `/metrics` gathered and encoded at once.
    pub metrics_max_in_flight: usize,
    /// How long the service goes on serving, unready, between a stop signal
    /// and the start of shutdown.
    pub shutdown_drain: Duration,
    /// Which log lines are written, and how.
    pub log: LogSettings,
}

/// The log settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSettings {
    /// Which lines are written (`RUST_LOG`).
    pub filter: LogFilter,
    /// How they are written (`LOG_FORMAT`).
    pub format: LogFormat,
}

/// `RUST_LOG` directives that parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogFilter(String);

impl LogFilter {
    /// The directives as given.
    pub fn directives(&self) -> &str {
        &self.0
    }

    /// The filter they describe, with `info` for whatever they leave out.
    pub fn env_filter(&self) -> EnvFilter {
        parse_filter(&self.0).expect("validated when read")
    }
}

impl FromStr for LogFilter {
    type Err = tracing_subscriber::filter::ParseError;

    fn from_str(directives: &str) -> Result<LogFilter, Self::Err> {
        parse_filter(directives)?;
        Ok(LogFilter(directives.to_owned()))
    }
}

/// The one place the `RUST_LOG` syntax is read.
fn parse_filter(directives: &str) -> Result<EnvFilter, tracing_subscriber::filter::ParseError> {
    EnvFilter::builder()
        .with_default_directive(LevelFilter::INFO.into())
        .parse(directives)
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines: time, level, where, message and fields.
    Text,
    /// One JSON object per line, for log pipelines.
    Json,
}

impl FromStr for LogFormat {
    type Err = ();

    fn from_str(name: &str) -> Result<LogFormat, ()> {
        match name {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(()),
        }
    }
}

/// The HTTP connection settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpSettings {
    /// Connections served at once.
    pub max_connections: usize,
    /// How long a connection may go with nothing moving towards the client.
    pub idle_timeout: Duration,
}

/// The websocket settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WsSettings {
    /// Websocket clients held at once.
    pub max_clients: usize,
    /// Time between pings; a client silent for two of them is dropped.
    pub heartbeat: Duration,
    /// The largest message, and frame, a client may send.
    pub max_message_bytes: usize,
}

/// A setting whose value could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The environment variable, e.g. `LISTEN_ADDR`.
    pub variable: &'static str,
    /// The value as given (lossily decoded if it was not UTF-8).
    pub value: String,
    /// What a valid value looks like.
    pub expected: &'static str,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid {}={:?}: expected {}",
            self.variable, self.value, self.expected
        )
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Reads the configuration from the process environment.
    pub fn from_env() -> Result<Config, ConfigError> {
        Config::from_lookup(|name| {
            std::env::var_os(name).map(|value| value.to_string_lossy().into_owned())
        })
    }

    /// Reads the configuration through `lookup`, which returns the value of a
    /// variable if it is set. Tests pass a map instead of the real environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let listen_addr = setting(
            &lookup,
            "LISTEN_ADDR",
            "0.0.0.0:8080",
            "an IP address and port such as 0.0.0.0:8080",
            |_: &SocketAddr| true,
        )?;
        let metrics_addr = match lookup("METRICS_ADDR") {
            Some(value) if !value.trim().is_empty() => Some(setting(
                &lookup,
                "METRICS_ADDR",
                "",
                "an IP address and port such as 127.0.0.1:9090, or unset",
                |_: &SocketAddr| true,
            )?),
            _ => None,
        };
        let collect_interval_ms = setting(
            &lookup,
            "COLLECT_INTERVAL_MS",
            "10",
            "a whole number of milliseconds (0 switches the collector off)",
            |_: &u64| true,
        )?;
        let http_max_connections = setting(
            &lookup,
            "HTTP_MAX_CONNECTIONS",
            "1024",
            "a whole number of connections from 1 to 1000000",
            |count: &usize| (1..=1_000_000).contains(count),
        )?;
        let http_idle_timeout_secs = setting(
            &lookup,
            "HTTP_IDLE_TIMEOUT_SECS",
            "30",
            "a whole number of seconds from 1 to 3600",
            |secs: &u64| (1..=3600).contains(secs),
        )?;
        let ws_max_clients = setting(
            &lookup,
            "WS_MAX_CLIENTS",
            "20000",
            "a whole number of clients from 1 to 1000000",
            |count: &usize| (1..=1_000_000).contains(count),
        )?;
        let heartbeat_secs = setting(
            &lookup,
            "WS_HEARTBEAT_SECS",
            "30",
            "a whole number of seconds from 1 to 3600",
            |secs: &u64| (1..=3600).contains(secs),
        )?;
        let max_message_bytes = setting(
            &lookup,
            "WS_MAX_MESSAGE_BYTES",
            "65536",
            "a whole number of bytes from 128 to 67108864 (64 MiB)",
            |bytes: &usize| (128..=64 << 20).contains(bytes),
        )?;
        let shutdown_grace_secs = setting(
            &lookup,
            "SHUTDOWN_GRACE_SECS",
            "10",
            "a whole number of seconds from 1 to 3600",
            |secs: &u64| (1..=3600).contains(secs),
        )?;
        let metrics_max_in_flight = setting(
            &lookup,
            "METRICS_MAX_IN_FLIGHT",
            "4",
            "a whole number of scrapes from 1 to 1000",
            |count: &usize| (1..=1000).contains(count),
        )?;
        let shutdown_drain_secs = setting(
            &lookup,
            "SHUTDOWN_DRAIN_SECS",
            "0",
            "a whole number of seconds from 0 to 3600",
            |secs: &u64| (0..=3600).contains(secs),
        )?;
        let log_filter = setting(
            &lookup,
            "RUST_LOG",
            "info",
            "a level (error, warn, info, debug, trace) or tracing directives such as info,hyper=warn",
            |_: &LogFilter| true,
        )?;
        let log_format = setting(
            &lookup,
            "LOG_FORMAT",
            "text",
            "text or json",
            |_: &LogFormat| true,
        )?;
        Ok(Config {
            listen_addr,
            metrics_addr,
            collect_interval: (collect_interval_ms > 0)
                .then(|| Duration::from_millis(collect_interval_ms)),
            http: HttpSettings {
                max_connections: http_max_connections,
                idle_timeout: Duration::from_secs(http_idle_timeout_secs),
            },
            ws: WsSettings {
                max_clients: ws_max_clients,
                heartbeat: Duration::from_secs(heartbeat_secs),
                max_message_bytes,
            },
            shutdown_grace: Duration::from_secs(shutdown_grace_secs),
            metrics_max_in_flight,
            shutdown_drain: Duration::from_secs(shutdown_drain_secs),
            log: LogSettings {
                filter: log_filter,
                format: log_format,
            },
        })
    }
}

/// Reads one variable (or its default), parses it and checks it with `valid`,
/// which rejects values that parse but are out of range.
fn setting<T: FromStr>(
    lookup: &impl Fn(&str) -> Option<String>,
    variable: &'static str,
    default: &str,
    expected: &'static str,
    valid: impl Fn(&T) -> bool,
) -> Result<T, ConfigError> {
    let value = lookup(variable).unwrap_or_else(|| default.to_owned());
    value
        .trim()
        .parse::<T>()
        .ok()
        .filter(|parsed| valid(parsed))
        .ok_or(ConfigError {
            variable,
            value,
            expected,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn parse(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|name| vars.get(name).cloned())
    }

    #[test]
    fn defaults_match_the_tutorial() {
        let config = parse(&[]).unwrap();
        assert_eq!(config.listen_addr, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(config.metrics_addr, None);
        assert_eq!(config.collect_interval, Some(Duration::from_millis(10)));
        assert_eq!(config.ws.heartbeat, Duration::from_secs(30));
        assert_eq!(config.ws.max_message_bytes, 65536);
        assert_eq!(config.ws.max_clients, 20000);
        assert_eq!(config.http.max_connections, 1024);
        assert_eq!(config.http.idle_timeout, Duration::from_secs(30));
        assert_eq!(config.shutdown_grace, Duration::from_secs(10));
        assert_eq!(config.metrics_max_in_flight, 4);
        assert_eq!(config.shutdown_drain, Duration::ZERO);
        assert_eq!(config.log.filter.directives(), "info");
        assert_eq!(config.log.format, LogFormat::Text);
    }

    #[test]
    fn values_are_read_from_the_environment() {
        let config = parse(&[
            ("LISTEN_ADDR", "127.0.0.1:0"),
            ("METRICS_ADDR", "127.0.0.1:9090"),
            ("COLLECT_INTERVAL_MS", "250"),
            ("WS_HEARTBEAT_SECS", "1"),
            ("WS_MAX_MESSAGE_BYTES", "1024"),
            ("SHUTDOWN_GRACE_SECS", "1"),
            ("HTTP_MAX_CONNECTIONS", "8"),
            ("HTTP_IDLE_TIMEOUT_SECS", "2"),
            ("WS_MAX_CLIENTS", "3"),
            ("METRICS_MAX_IN_FLIGHT", "1"),
            ("SHUTDOWN_DRAIN_SECS", "15"),
            ("RUST_LOG", "warn,rust_web_prometheus_example::ws=debug"),
            ("LOG_FORMAT", "json"),
        ])
        .unwrap();
        assert_eq!(config.listen_addr, "127.0.0.1:0".parse().unwrap());
        assert_eq!(config.metrics_addr, Some("127.0.0.1:9090".parse().unwrap()));
        assert_eq!(config.collect_interval, Some(Duration::from_millis(250)));
        assert_eq!(config.ws.heartbeat, Duration::from_secs(1));
        assert_eq!(config.ws.max_message_bytes, 1024);
        assert_eq!(config.shutdown_grace, Duration::from_secs(1));
        assert_eq!(config.http.max_connections, 8);
        assert_eq!(config.http.idle_timeout, Duration::from_secs(2));
        assert_eq!(config.ws.max_clients, 3);
        assert_eq!(config.metrics_max_in_flight, 1);
        assert_eq!(config.shutdown_drain, Duration::from_secs(15));
        assert_eq!(
            config.log.filter.directives(),
            "warn,rust_web_prometheus_example::ws=debug"
        );
        assert_eq!(config.log.format, LogFormat::Json);
    }

    #[test]
    fn an_empty_metrics_addr_is_unset() {
        let config = parse(&[("METRICS_ADDR", "")]).unwrap();
        assert_eq!(config.metrics_addr, None);
    }

    #[test]
    fn zero_interval_switches_the_collector_off() {
        let config = parse(&[("COLLECT_INTERVAL_MS", "0")]).unwrap();
        assert_eq!(config.collect_interval, None);
    }

    #[test]
    fn a_bad_value_names_the_variable_and_the_value() {
        let cases = [
            ("LISTEN_ADDR", "localhost"),
            ("LISTEN_ADDR", "0.0.0.0:99999"),
            ("METRICS_ADDR", "9090"),
            ("COLLECT_INTERVAL_MS", "-5"),
            ("COLLECT_INTERVAL_MS", "ten"),
            ("WS_HEARTBEAT_SECS", "0"),
            ("WS_HEARTBEAT_SECS", "3601"),
            ("WS_MAX_MESSAGE_BYTES", "127"),
            ("WS_MAX_MESSAGE_BYTES", "1GiB"),
            ("SHUTDOWN_GRACE_SECS", "3601"),
            ("SHUTDOWN_GRACE_SECS", "0"),
            ("HTTP_MAX_CONNECTIONS", "0"),
            ("HTTP_IDLE_TIMEOUT_SECS", "0"),
            ("WS_MAX_CLIENTS", "lots"),
            ("SHUTDOWN_GRACE_SECS", "1.5"),
            ("METRICS_MAX_IN_FLIGHT", "0"),
            ("METRICS_MAX_IN_FLIGHT", "1001"),
            ("SHUTDOWN_DRAIN_SECS", "3601"),
            ("SHUTDOWN_DRAIN_SECS", "-1"),
            ("LOG_FORMAT", "JSON5"),
            ("LOG_FORMAT", "pretty"),
            ("RUST_LOG", "rust_web_prometheus_example=loud"),
            ("RUST_LOG", "info,[{"),
        ];
        for (variable, value) in cases {
            let err = parse(&[(variable, value)]).unwrap_err();
            assert_eq!(err.variable, variable);
            assert_eq!(err.value, value);
            let message = err.to_string();
            assert!(
                message.starts_with(&format!("invalid {variable}=\"{value}\"")),
                "message {message:?} should name {variable} and {value:?}"
            );
            assert!(!message.contains('\n'), "message must be one line");
        }
    }
}
