//! Starting a server process on `127.0.0.1:0` and learning its port from its
//! `Started on port N` line: the one way the tests (`TestServer`) and the
//! benchmarks (`benches/support`, which includes this file by path) start
//! the binary, or a peer server.
//!
//! Errors are returned, not raised: a benchmark comparing several servers
//! reports a broken one and goes on, and a test panics with the message.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What becomes of the server's stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stderr {
    /// Shared with this process, so a failing test shows it in full.
    Inherit,
    /// Drained, with only its first line shown: a benchmark's server may log
    /// every one of thousands of connections.
    FirstLineOnly,
}

/// A server process that has announced its port.
pub struct Started {
    pub child: Child,
    pub port: u16,
    /// The stdout lines so far, if they are kept.
    pub stdout: Arc<Mutex<Vec<String>>>,
}

/// Starts `command` with `LISTEN_ADDR=127.0.0.1:0` and waits up to `patience`
/// for its `Started on port N` line. Stdout is drained for the server's
/// whole life (a full pipe would block its logging, and with it the service)
/// and its lines kept if `keep_stdout`. On failure the process is killed.
pub fn start(
    mut command: Command,
    stderr: Stderr,
    keep_stdout: bool,
    patience: Duration,
) -> Result<Started, String> {
    let program = command.get_program().to_string_lossy().into_owned();
    let mut child = command
        .env("LISTEN_ADDR", "127.0.0.1:0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(match stderr {
            Stderr::Inherit => Stdio::inherit(),
            Stderr::FirstLineOnly => Stdio::piped(),
        })
        .spawn()
        .map_err(|err| format!("start {program}: {err}"))?;

    let stdout = Arc::new(Mutex::new(Vec::new()));
    let (port_tx, port_rx) = mpsc::channel();
    let reader = BufReader::new(child.stdout.take().expect("piped stdout"));
    let lines = Arc::clone(&stdout);
    std::thread::spawn(move || {
        for line in reader.lines().map_while(Result::ok) {
            if let Some(port) = line.strip_prefix("Started on port ") {
                let _ = port_tx.send(port.trim().parse::<u16>());
            }
            if keep_stdout {
                lines.lock().unwrap().push(line);
            }
        }
    });
    if let Some(piped) = child.stderr.take() {
        std::thread::spawn(move || {
            let mut lines = BufReader::new(piped).lines().map_while(Result::ok);
            if let Some(first) = lines.next() {
                eprintln!("server stderr (first line shown): {first}");
            }
            lines.for_each(drop);
        });
    }

    // Ends early, disconnected, if the server exits without the line.
    let port = match port_rx.recv_timeout(patience) {
        Ok(Ok(port)) => port,
        failed => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(match failed {
                Ok(Err(err)) => format!("{program} printed a bad port: {err}"),
                _ => format!("{program} never printed `Started on port N`"),
            });
        }
    };
    Ok(Started {
        child,
        port,
        stdout,
    })
}
