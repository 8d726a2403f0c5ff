//! What a log line costs the thread that logs, through the service's queue
//! and writer thread (`src/logging.rs`) and, side by side, through
//! `tracing-subscriber` writing straight to stdout, whatever reads stdout:
//!
//! - `/dev/null`: a reader that takes everything at once;
//! - a pipe read as fast as this process can (`| cat`);
//! - a pipe nobody reads for [`STALL`], then drained (a stalled log shipper);
//! - a pipe whose reader has gone (`| head -0`).
//!
//! Each measurement is a child process (this bench, run again with
//! [`CHILD_VARIANT`] set) whose stdout is wired to the sink; it logs
//! [`LINES`] lines like the service's "text message received" from one thread
//! and reports the time per line on that thread and the lines dropped. The
//! variants alternate over [`ROUNDS`] rounds; the median is printed.
//!
//! Run with `cargo bench --bench logging`.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rust_web_prometheus_example::config::Config;
use rust_web_prometheus_example::logging;
use rust_web_prometheus_example::metrics::LOG_LINES_DROPPED;

/// Set in a child to the variant it measures: `queue` or `direct`.
const CHILD_VARIANT: &str = "LOG_BENCH_VARIANT";

/// Lines each child logs.
const LINES: u32 = 100_000;

/// How long the stalled reader leaves the pipe unread.
const STALL: Duration = Duration::from_secs(2);

const ROUNDS: usize = 3;

const VARIANTS: [&str; 2] = ["queue", "direct"];

#[derive(Clone, Copy)]
enum Sink {
    DevNull,
    Reader,
    Stalled,
    Gone,
}

impl Sink {
    fn name(self) -> &'static str {
        match self {
            Sink::DevNull => "/dev/null",
            Sink::Reader => "pipe, read at once",
            Sink::Stalled => "pipe, unread for 2 s",
            Sink::Gone => "pipe, reader gone",
        }
    }
}

fn main() {
    if let Ok(variant) = std::env::var(CHILD_VARIANT) {
        child(&variant);
        return;
    }
    println!("{LINES} lines per run, median of {ROUNDS} runs; time per line on the logging thread");
    println!("| stdout | variant | µs per line | lines dropped |");
    println!("|--------|---------|------------:|--------------:|");
    for sink in [Sink::DevNull, Sink::Reader, Sink::Stalled, Sink::Gone] {
        let mut results: Vec<Vec<(f64, String)>> = vec![Vec::new(); VARIANTS.len()];
        for _ in 0..ROUNDS {
            for (slot, variant) in VARIANTS.iter().enumerate() {
                results[slot].push(run(variant, sink));
            }
        }
        for (variant, mut runs) in VARIANTS.iter().zip(results) {
            runs.sort_by(|a, b| a.0.total_cmp(&b.0));
            let (micros, dropped) = &runs[runs.len() / 2];
            println!("| {} | {variant} | {micros:.2} | {dropped} |", sink.name());
        }
    }
}

/// Runs one child with `variant` and its stdout on `sink`; returns its µs
/// per line and the lines it counted as dropped.
fn run(variant: &str, sink: Sink) -> (f64, String) {
    let stdout = match sink {
        Sink::DevNull => Stdio::null(),
        Sink::Reader | Sink::Stalled | Sink::Gone => Stdio::piped(),
    };
    let mut child = Command::new(std::env::current_exe().expect("this bench's path"))
        .env(CHILD_VARIANT, variant)
        .stdout(stdout)
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the child");
    let pipe = child.stdout.take();
    let drain = match (sink, pipe) {
        (Sink::Gone, pipe) => {
            drop(pipe);
            None
        }
        (Sink::Stalled, Some(mut pipe)) => Some(std::thread::spawn(move || {
            std::thread::sleep(STALL);
            let _ = std::io::copy(&mut pipe, &mut std::io::sink());
        })),
        (_, Some(mut pipe)) => Some(std::thread::spawn(move || {
            let _ = std::io::copy(&mut pipe, &mut std::io::sink());
        })),
        (_, None) => None,
    };
    let mut report = String::new();
    child
        .stderr
        .take()
        .expect("piped stderr")
        .read_to_string(&mut report)
        .expect("read the child's report");
    child.wait().expect("wait for the child");
    if let Some(drain) = drain {
        drain.join().expect("drain thread");
    }
    let mut fields = report.split_whitespace();
    let micros = fields.next().and_then(|f| f.parse().ok());
    let dropped = fields.next().map(str::to_owned);
    micros
        .zip(dropped)
        .unwrap_or_else(|| panic!("child report {report:?}"))
}

/// Logs [`LINES`] lines through `variant` and reports, on stderr, the µs
/// per line and the lines dropped (which writing straight to stdout does not
/// count: those it cannot write are lost without a trace).
fn child(variant: &str) {
    let logs = if variant == "queue" {
        let config = Config::from_lookup(|_| None).expect("default settings");
        Some(logging::init(&config.log).expect("install the logger"))
    } else {
        tracing_subscriber::fmt()
            .with_writer(std::io::stdout)
            .with_ansi(false)
            .log_internal_errors(false)
            .init();
        None
    };
    let started = Instant::now();
    for i in 0..LINES {
        tracing::info!(
            id = "client-1",
            bytes = i,
            text = "hello from client-1",
            "text message received"
        );
    }
    let micros = started.elapsed().as_secs_f64() * 1e6 / f64::from(LINES);
    let dropped = match logs {
        Some(logs) => {
            // Waits for the writer, so the count includes lines it failed to write.
            logs.flush(STALL * 5);
            LOG_LINES_DROPPED.get().to_string()
        }
        None => "not-counted".to_owned(),
    };
    eprintln!("{micros} {dropped}");
}
