//! The `rust-web-prometheus-example` binary: reads the settings, starts
//! logging, and runs the service until SIGTERM or SIGINT. A failure to
//! start is one line on stderr and a non-zero exit: 64 (BSD's `EX_USAGE`)
//! for a bad argument or setting, 1 otherwise.

use std::process::ExitCode;

use clap::Parser;
use rust_web_prometheus_example::config::Config;
use rust_web_prometheus_example::{app, metrics, telemetry};

const EXIT_USAGE: u8 = 64;

#[tokio::main]
async fn main() -> ExitCode {
    let config = match Config::try_parse() {
        Ok(config) => config,
        Err(err) if !err.use_stderr() => {
            // `--help` or `--version`. `| head -1` closes the pipe early:
            // not worth a panic.
            let _ = err.print();
            return ExitCode::SUCCESS;
        }
        Err(err) => {
            // clap's first line names the setting and the value; the rest
            // are hints.
            let rendered = err.render().to_string();
            eprintln!(
                "{}",
                rendered.lines().next().unwrap_or("error: bad arguments")
            );
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let logs = match telemetry::init(&config.log, metrics::LOG_LINES_DROPPED.clone()) {
        Ok(logs) => logs,
        Err(err) => {
            eprintln!("error: cannot start logging: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = app::run(&config, &logs).await;
    // Every way out after logging started comes through here, so the lines
    // logged before a failure still reach stdout.
    logs.finish(telemetry::FLUSH_LIMIT);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}
