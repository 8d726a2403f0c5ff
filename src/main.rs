//! The `rust-web-prometheus-example` binary: reads the settings from the
//! environment, starts logging, and runs the service until SIGTERM or
//! SIGINT. A failure to start is one line on stderr and a non-zero exit:
//! 64 (`EX_USAGE`) for a bad argument or setting, 1 otherwise.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use rust_web_prometheus_example::config::{Config, HELP};
use rust_web_prometheus_example::{app, telemetry};

const EXIT_USAGE: u8 = 64;

/// How long exit waits for the last log lines to reach stdout: a reader
/// that has stalled must not hold the process up.
const LOG_FLUSH_LIMIT: Duration = Duration::from_millis(500);

#[tokio::main]
async fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    match (args.next(), args.next()) {
        (None, _) => {}
        (Some(arg), None) if arg == "--help" || arg == "-h" => {
            // `--help | head -1` closes the pipe early: not worth a panic.
            let _ = write!(std::io::stdout(), "{HELP}");
            return ExitCode::SUCCESS;
        }
        (Some(arg), _) => {
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
    let logs = match telemetry::init(&config.log) {
        Ok(logs) => logs,
        Err(err) => {
            eprintln!("error: cannot start logging: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = app::run(&config, &logs).await;
    // Every way out after logging started comes through here, so the lines
    // logged before a failure still reach stdout.
    logs.finish(LOG_FLUSH_LIMIT);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}
