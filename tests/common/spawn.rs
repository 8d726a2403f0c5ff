//! Starting a server process on `127.0.0.1:0` and learning its port from its
//! `Started on port N` line (and its metrics port from `Metrics on port N`,
//! which comes first when `METRICS_ADDR` is set), which the service logs as
//! text or JSON; or, for a server whose stdout goes to `/dev/null`, on a
//! free port picked here. The one way the tests (`TestServer`) and the
//! benchmarks (`benches/support`, which includes this file by path) start
//! the binary, or a peer server.
//!
//! Errors are returned, not raised: a benchmark comparing several servers
//! reports a broken one and goes on, and a test panics with the message.

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What becomes of the server's stdout after the `Started on port N` line.
/// Unless handed over, it is drained for the server's whole life: a full
/// pipe would block its logging, and with it the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stdout {
    /// Drained, and every line kept (the port line included) for assertions.
    Keep,
    /// `/dev/null`, as a benchmark's servers write it: the port is picked
    /// here, and the server is up once it accepts a connection.
    Null,
    /// Handed to the caller, to read, leave unread or close.
    HandOver,
}

/// What becomes of the server's stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stderr {
    /// Every line kept for assertions, and passed on to this process's
    /// stderr marked `server:`, so a failing test shows it.
    Keep,
    /// Drained, with only its first line shown, so a real failure is visible
    /// without a thousand copies of it.
    FirstLineOnly,
}

/// A server process that has announced its port.
pub struct Started {
    pub child: Child,
    pub port: u16,
    /// The port of the listener `METRICS_ADDR` asks for, if any.
    pub metrics_port: Option<u16>,
    /// The stdout lines so far, with [`Stdout::Keep`].
    pub stdout_lines: Arc<Mutex<Vec<String>>>,
    /// The stdout pipe after the port line, with [`Stdout::HandOver`].
    pub stdout_pipe: Option<BufReader<ChildStdout>>,
    /// The stderr lines so far, with [`Stderr::Keep`].
    pub stderr_lines: Arc<Mutex<Vec<String>>>,
}

/// Starts `command` with `LISTEN_ADDR=127.0.0.1:0` and waits up to `patience`
/// for its `Started on port N` line. On failure the process is killed.
pub fn start(
    mut command: Command,
    stdout: Stdout,
    stderr: Stderr,
    patience: Duration,
) -> Result<Started, String> {
    let program = command.get_program().to_string_lossy().into_owned();
    let picked = match stdout {
        Stdout::Null => Some(free_port().map_err(|err| format!("pick a port: {err}"))?),
        _ => None,
    };
    let listen = format!("127.0.0.1:{}", picked.unwrap_or(0));
    let mut child = command
        .env("LISTEN_ADDR", &listen)
        .stdin(Stdio::null())
        .stdout(if picked.is_some() {
            Stdio::null()
        } else {
            Stdio::piped()
        })
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|err| format!("start {program}: {err}"))?;

    let stderr_lines = Arc::new(Mutex::new(Vec::new()));
    let reader = BufReader::new(child.stderr.take().expect("piped stderr"));
    let lines = Arc::clone(&stderr_lines);
    std::thread::spawn(move || {
        let mut lines_read = reader.lines().map_while(Result::ok);
        match stderr {
            Stderr::Keep => lines_read.for_each(|line| {
                eprintln!("server: {line}");
                lines.lock().unwrap().push(line);
            }),
            Stderr::FirstLineOnly => {
                if let Some(first) = lines_read.next() {
                    eprintln!("server stderr (first line shown): {first}");
                }
                lines_read.for_each(drop);
            }
        }
    });

    if let Some(port) = picked {
        let deadline = std::time::Instant::now() + patience;
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            let exited = child.try_wait().ok().flatten();
            if exited.is_some() || std::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{program} never listened on {listen}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        return Ok(Started {
            child,
            port,
            metrics_port: None,
            stdout_lines: Arc::default(),
            stdout_pipe: None,
            stderr_lines,
        });
    }

    // Read on a thread, so that a server that never prints the line fails
    // after `patience` instead of hanging; it ends early, disconnected, if
    // the server exits without the line.
    let (started_tx, started_rx) = mpsc::channel();
    let mut pipe = BufReader::new(child.stdout.take().expect("piped stdout"));
    std::thread::spawn(move || {
        let mut line = String::new();
        let mut lines = Vec::new();
        let mut metrics_port = None;
        while pipe.read_line(&mut line).is_ok_and(|read| read > 0) {
            let text = line.trim_end().to_owned();
            line.clear();
            if let Some(port) = port_after(&text, "Metrics on port ") {
                metrics_port = port.ok();
            }
            let port = port_after(&text, "Started on port ");
            lines.push(text);
            if let Some(port) = port {
                let _ = started_tx.send((port, metrics_port, lines, pipe));
                return;
            }
        }
    });
    let (port, metrics_port, lines_before, pipe) = match started_rx.recv_timeout(patience) {
        Ok((Ok(port), metrics_port, lines, pipe)) => (port, metrics_port, lines, pipe),
        failed => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(match failed {
                Ok((Err(err), ..)) => format!("{program} printed a bad port: {err}"),
                _ => format!("{program} never printed `Started on port N`"),
            });
        }
    };

    let stdout_lines = Arc::new(Mutex::new(Vec::new()));
    let stdout_pipe = match stdout {
        Stdout::HandOver => Some(pipe),
        Stdout::Keep | Stdout::Null => {
            // Keep, as Null returned above.
            let keep = stdout == Stdout::Keep;
            let lines = Arc::clone(&stdout_lines);
            if keep {
                *lines.lock().unwrap() = lines_before;
            }
            std::thread::spawn(move || {
                for line in pipe.lines().map_while(Result::ok) {
                    if keep {
                        lines.lock().unwrap().push(line);
                    }
                }
            });
            None
        }
    };
    Ok(Started {
        child,
        port,
        metrics_port,
        stdout_lines,
        stdout_pipe,
        stderr_lines,
    })
}

/// The port number right after `announcement` in `line`, if the line holds
/// it: the service logs it as a text or a JSON line, a peer prints it bare.
fn port_after(line: &str, announcement: &str) -> Option<Result<u16, std::num::ParseIntError>> {
    let (_, rest) = line.split_once(announcement)?;
    let digits = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    Some(rest[..digits].parse())
}

/// A port free on loopback now: bound and let go again.
fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}
