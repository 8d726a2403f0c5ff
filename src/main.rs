//! The `rust-web-prometheus-example` binary: reads the configuration from
//! the environment, starts logging, binds the listening sockets, and runs the
//! service until SIGTERM or SIGINT; a second signal during the shutdown exits
//! at once. Every failure to start is one line on stderr and a non-zero exit.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use rust_web_prometheus_example::config::{Config, HELP};
use rust_web_prometheus_example::logging::{self, Logs};
use rust_web_prometheus_example::shutdown::Signals;
use rust_web_prometheus_example::{serve, server};
use tokio::net::TcpListener;

/// Exit status for a bad command line or setting (as in BSD's sysexits `EX_USAGE`).
const EXIT_USAGE: u8 = 64;

/// How long exit waits for the last log lines to reach stdout: a reader
/// that has stalled must not hold the process up.
const LOG_FLUSH_LIMIT: Duration = Duration::from_millis(500);

#[tokio::main]
async fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    match args.next() {
        None => {}
        Some(arg) if (arg == "--help" || arg == "-h") && args.next().is_none() => {
            // `--help | head -1` closes the pipe early: not worth a panic.
            let _ = write!(std::io::stdout(), "{HELP}");
            return ExitCode::SUCCESS;
        }
        Some(arg) => {
            eprintln!(
                "error: unexpected argument {arg:?}; settings come from the environment, see --help"
            );
            return ExitCode::from(EXIT_USAGE);
        }
    }

    let config = match Config::from_env() {
        Ok(config) => config,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let logs = match logging::init(&config.log) {
        Ok(logs) => logs,
        Err(err) => {
            eprintln!("error: cannot start logging: {err}");
            return ExitCode::FAILURE;
        }
    };
    let status = run(&config, &logs).await;
    // Every way out once logging has started comes through here, so a line
    // logged just before a failure (the open-file-limit warning before a
    // failed bind) still reaches stdout.
    logs.flush(LOG_FLUSH_LIMIT);
    status
}

/// Binds the listening sockets and serves until a signal. A failure to
/// start is one line on stderr and the exit status returned.
async fn run(config: &Config, logs: &Logs) -> ExitCode {
    // Best effort: at the old limit the service still runs, and accepting
    // beyond it fails and is reported then.
    if let Err(err) = server::raise_open_file_limit() {
        tracing::warn!(error = %err, "cannot raise the open-file limit");
    }
    let listener = match TcpListener::bind(config.listen_addr).await {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!(
                "error: cannot listen on LISTEN_ADDR={}: {err}",
                config.listen_addr
            );
            return ExitCode::FAILURE;
        }
    };
    let metrics_listener = match config.metrics_addr {
        None => None,
        Some(addr) => match TcpListener::bind(addr).await {
            Ok(listener) => Some(listener),
            Err(err) => {
                eprintln!("error: cannot listen on METRICS_ADDR={addr}: {err}");
                return ExitCode::FAILURE;
            }
        },
    };
    let mut signals = match Signals::install() {
        Ok(signals) => signals,
        Err(err) => {
            eprintln!("error: cannot install the SIGTERM/SIGINT handlers: {err}");
            return ExitCode::FAILURE;
        }
    };
    let port = match listener.local_addr() {
        Ok(addr) => addr.port(),
        Err(err) => {
            eprintln!("error: cannot read the bound address: {err}");
            return ExitCode::FAILURE;
        }
    };
    let metrics_port = match metrics_listener.as_ref().map(TcpListener::local_addr) {
        None => None,
        Some(Ok(addr)) => Some(addr.port()),
        Some(Err(err)) => {
            eprintln!("error: cannot read the bound METRICS_ADDR: {err}");
            return ExitCode::FAILURE;
        }
    };
    // Tests and scripts wait for exactly the `Started` line; the metrics
    // port comes first, so that whoever waits for it has both. The log lines
    // go to stdout through a thread of their own; flushing them first puts
    // any start-up warning before these lines, in the order it happened. If
    // the reader of stdout is already gone, nobody is waiting: serve anyway.
    logs.flush(LOG_FLUSH_LIMIT);
    let mut stdout = std::io::stdout();
    let _ = metrics_port
        .map_or(Ok(()), |port| writeln!(stdout, "Metrics on port {port}"))
        .and_then(|()| writeln!(stdout, "Started on port {port}"))
        .and_then(|()| stdout.flush());

    // The first signal starts the graceful shutdown; a second one, while
    // that may still wait up to SHUTDOWN_GRACE_SECS, exits at once with the
    // status a shell gives a process killed by that signal.
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn({
        let logs = logs.clone();
        async move {
            let first = signals.recv().await;
            tracing::info!(signal = first.name(), "shutting down");
            let _ = stop.send(());
            let second = signals.recv().await;
            tracing::error!(
                signal = second.name(),
                "second signal during shutdown, exiting at once"
            );
            // Off the worker thread: the flush may wait for the pipe.
            let _ = tokio::task::spawn_blocking(move || logs.flush(LOG_FLUSH_LIMIT)).await;
            std::process::exit(128 + second.number());
        }
    });
    let served = serve(listener, metrics_listener, config, async {
        let _ = stopped.await;
    })
    .await;
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}
