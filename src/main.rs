//! The `rust-web-prometheus-example` binary: reads the configuration from
//! the environment, binds the listening sockets, and runs the service until
//! SIGTERM or SIGINT. Every failure is one line on stderr and a non-zero exit.

use std::process::ExitCode;

use rust_web_prometheus_example::config::{Config, HELP};
use rust_web_prometheus_example::{serve, server, shutdown};
use tokio::net::TcpListener;

/// Exit status for a bad command line or setting (as in BSD's sysexits `EX_USAGE`).
const EXIT_USAGE: u8 = 64;

#[tokio::main]
async fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    match args.next() {
        None => {}
        Some(arg) if (arg == "--help" || arg == "-h") && args.next().is_none() => {
            print!("{HELP}");
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

    // Best effort: at the old limit the service still runs, and accepting
    // beyond it fails and is reported then.
    if let Err(err) = server::raise_open_file_limit() {
        eprintln!("warning: cannot raise the open-file limit: {err}");
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
    let stop_signal = match shutdown::signal() {
        Ok(stop_signal) => stop_signal,
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
    // Before `Started`, so that whoever waits for that line has both ports.
    if let Some(metrics_listener) = &metrics_listener {
        match metrics_listener.local_addr() {
            Ok(addr) => println!("Metrics on port {}", addr.port()),
            Err(err) => {
                eprintln!("error: cannot read the bound METRICS_ADDR: {err}");
                return ExitCode::FAILURE;
            }
        }
    }
    // Tests and scripts wait for exactly this line.
    println!("Started on port {port}");

    match serve(listener, metrics_listener, &config, stop_signal).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}
