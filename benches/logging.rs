//! What a log line costs the whole process, writer thread included, through
//! the service's writer (`src/telemetry.rs`) and through
//! `tracing-appender`'s non-blocking writer: `cargo bench --bench logging`.
//!
//! Each variant runs in a child process of this bench with its stdout on
//! `/dev/null`, and logs the service's "text message received" line
//! 100,000 times: back to back, and with a sleep of 20 µs after each line
//! (as a busy service logs). The figure is the process's CPU time per line,
//! from `getrusage`, less that of a process that sleeps as often and logs
//! nothing: the median of three runs.

use std::process::{Command, Stdio};
use std::time::Duration;

use prometheus::IntCounter;
use rust_web_prometheus_example::config::{LogFilter, LogFormat, LogSettings};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

const LINES: u32 = 100_000;
const PACE: Duration = Duration::from_micros(20);

fn main() {
    let mut args = std::env::args().skip(1);
    if let (Some(writer), Some(paced)) = (args.next(), args.next()) {
        return log_lines(&writer, paced == "paced");
    }
    println!("CPU per log line, whole process, µs (median of 3):");
    for paced in ["back-to-back", "paced"] {
        let median = |writer| {
            let mut runs: Vec<f64> = (0..3).map(|_| run(writer, paced)).collect();
            runs.sort_by(f64::total_cmp);
            runs[1]
        };
        let nothing = median("nothing");
        for writer in ["service", "tracing-appender"] {
            println!(
                "  {paced:>12}  {writer:>16}  {:.2}",
                median(writer) - nothing
            );
        }
    }
}

/// Runs one variant in a child process; its CPU per line, in µs.
fn run(writer: &str, paced: &str) -> f64 {
    let output = Command::new(std::env::current_exe().expect("this bench"))
        .args([writer, paced])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .expect("run a variant");
    let figure = String::from_utf8_lossy(&output.stderr);
    figure
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("{writer}: {figure}"))
}

/// In the child: installs `writer`, logs the lines, and prints the CPU per
/// line on stderr.
fn log_lines(writer: &str, paced: bool) {
    let _writer = match writer {
        "nothing" => Box::new(()) as Box<dyn Send>,
        "service" => {
            let settings = LogSettings {
                filter: "info".parse::<LogFilter>().unwrap(),
                format: LogFormat::Text,
            };
            let logs = rust_web_prometheus_example::telemetry::init(
                &settings,
                IntCounter::new("d", "d").unwrap(),
            );
            Box::new(logs.expect("the service's logger"))
        }
        _ => {
            let (stdout, guard) = tracing_appender::non_blocking(std::io::stdout());
            let layer = tracing_subscriber::fmt::layer().with_writer(stdout);
            tracing_subscriber::registry().with(layer).init();
            Box::new(guard)
        }
    };
    let cpu_before = process_cpu();
    for i in 0..LINES {
        let id = if i % 2 == 0 { "alice" } else { "bob" };
        tracing::info!(
            id,
            bytes = 16,
            text = "hello, websocket",
            "text message received"
        );
        if paced {
            std::thread::sleep(PACE);
        }
    }
    // Let the writer thread finish its work before the reading.
    std::thread::sleep(Duration::from_millis(200));
    let per_line = (process_cpu() - cpu_before) * 1e6 / f64::from(LINES);
    eprintln!("{per_line}");
}

/// This process's user and system CPU time, in seconds.
fn process_cpu() -> f64 {
    // SAFETY: rusage is plain data, and getrusage only writes into it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let seconds = |time: libc::timeval| time.tv_sec as f64 + time.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}
