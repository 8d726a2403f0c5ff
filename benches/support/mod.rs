//! The benchmark's plumbing: server processes and their CPU time, and a
//! minimal keep-alive HTTP/1.1 client.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Runs `server` on a port of its own the way the service runs: on a
/// multi-threaded tokio runtime, announcing the port it bound.
pub fn serve<S: Future<Output = ()>>(server: impl FnOnce(TcpListener) -> S) {
    let runtime = tokio::runtime::Runtime::new().expect("start the server's runtime");
    runtime.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("bound address").port();
        println!("Started on port {port}");
        server(listener).await;
    });
}

/// A server process on `127.0.0.1:0`, killed when dropped.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
}

impl Server {
    /// Starts `command` and waits for its `Started on port N` line.
    pub fn start(mut command: Command) -> Server {
        let mut child = command
            .env("LISTEN_ADDR", "127.0.0.1:0")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start a server");
        let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        let port = lines
            .by_ref()
            .map_while(Result::ok)
            .find_map(|line| line.strip_prefix("Started on port ")?.parse::<u16>().ok())
            .expect("server printed `Started on port N`");
        // Keep draining, so that a server never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Server {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        }
    }

    /// The CPU time each of the process's threads has used so far, in ns.
    ///
    /// `/proc/<pid>/task/<tid>/schedstat` counts nanoseconds, where
    /// `/proc/<pid>/stat` counts 10 ms ticks, too coarse for short slices.
    pub fn cpu_snapshot(&self) -> HashMap<String, u64> {
        let tasks = format!("/proc/{}/task", self.child.id());
        std::fs::read_dir(&tasks)
            .expect("list the server's threads")
            .filter_map(|task| {
                let task = task.ok()?;
                let stat = std::fs::read_to_string(task.path().join("schedstat")).ok()?;
                let nanos = stat.split_whitespace().next()?.parse().ok()?;
                Some((task.file_name().to_string_lossy().into_owned(), nanos))
            })
            .collect()
    }

    /// CPU time used by the process since `before`. Threads are matched by
    /// id, so one that has exited in between (tokio ends idle blocking-pool
    /// threads after 10 s) loses only its own share of the interval instead
    /// of making the total go backwards.
    pub fn cpu_since(&self, before: &HashMap<String, u64>) -> Duration {
        let nanos = self
            .cpu_snapshot()
            .into_iter()
            .map(|(thread, now)| match before.get(&thread) {
                // A smaller count means the id now belongs to a new thread.
                Some(&then) if then <= now => now - then,
                _ => now,
            })
            .sum();
        Duration::from_nanos(nanos)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|line| line.strip_prefix("model name"))
                .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned())
}

/// A keep-alive HTTP/1.1 connection that reads responses framed by
/// `Content-Length`, which is all the servers here send.
pub struct Connection {
    stream: TcpStream,
    buffer: Vec<u8>,
}

impl Connection {
    pub async fn open(addr: SocketAddr) -> Connection {
        let stream = TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).expect("TCP_NODELAY");
        Connection {
            stream,
            buffer: Vec::with_capacity(64 * 1024),
        }
    }

    /// Sends `request` and returns the response's status and body.
    pub async fn exchange(&mut self, request: &[u8]) -> (u16, &[u8]) {
        self.stream.write_all(request).await.expect("send request");
        self.buffer.clear();
        let head_end = loop {
            if let Some(at) = find(&self.buffer, b"\r\n\r\n") {
                break at + 4;
            }
            self.read_more().await;
        };
        let head = std::str::from_utf8(&self.buffer[..head_end]).expect("ASCII head");
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|code| code.parse().ok())
            .expect("status line");
        let length: usize = head
            .lines()
            .filter_map(|line| line.split_once(':'))
            .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, value)| value.trim().parse().ok())
            .expect("Content-Length");
        while self.buffer.len() < head_end + length {
            self.read_more().await;
        }
        (status, &self.buffer[head_end..head_end + length])
    }

    async fn read_more(&mut self) {
        let read = self.stream.read_buf(&mut self.buffer).await.expect("read");
        assert_ne!(read, 0, "the server closed the connection");
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}
