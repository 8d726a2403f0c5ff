//! A real browser as the websocket client: headless Chromium sends messages
//! over the limit and must read the server's 1009 close, whatever the size.
//! Library clients read the close frame quickly enough to hide a close that
//! a browser loses to a TCP reset, so only a browser proves this.
//!
//! Needs `chromium` (Debian's package), so it is `#[ignore]`d;
//! `cargo test -- --include-ignored` (what `.ci/run` runs) includes it.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::TestServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// Text messages the page sends, each over the default 64 KiB limit: just
/// over it, and far over it.
const SIZES: [usize; 3] = [70_000, 1_000_000, 8_000_000];

/// Times the page tries each size.
const ROUNDS: usize = 3;

/// Far more than a browser needs to start and run every round.
const BROWSER_PATIENCE: Duration = Duration::from_secs(120);

/// The page: for every round and size, opens `/ws/browser-<n>`, sends one
/// text message of that size once open, and reports the close event to
/// `/report`, one after the other.
fn page(server: SocketAddr) -> String {
    let sizes: Vec<String> = SIZES.iter().map(usize::to_string).collect();
    format!(
        r#"<!doctype html><meta charset="utf-8"><script>
const sizes = [{sizes}];
function attempt(size, n) {{
  return new Promise(done => {{
    const socket = new WebSocket("ws://{server}/ws/browser-" + n);
    socket.onopen = () => socket.send("x".repeat(size));
    socket.onclose = event => done(event);
  }});
}}
(async () => {{
  let n = 0;
  for (let round = 0; round < {ROUNDS}; round++) {{
    for (const size of sizes) {{
      const event = await attempt(size, n++);
      const query = new URLSearchParams({{
        size, code: event.code, reason: event.reason, clean: event.wasClean,
      }});
      await fetch("/report?" + query);
    }}
  }}
}})();
</script>"#,
        sizes = sizes.join(", ")
    )
}

/// Headless Chromium showing `url`, with a profile of its own; killed when
/// dropped.
struct Browser {
    child: Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    fn open(url: &str) -> Browser {
        let profile = tempfile::tempdir().expect("a profile directory");
        let child = Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(url)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromium (Debian: apt-get install chromium)");
        Browser {
            child,
            _profile: profile,
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Serves the page at `/` and passes every `/report?...` query on to
/// `reports`, as a map.
async fn serve_page(
    listener: TcpListener,
    page: String,
    reports: mpsc::UnboundedSender<HashMap<String, String>>,
) {
    loop {
        let Ok((connection, _)) = listener.accept().await else {
            return;
        };
        tokio::spawn(answer(connection, page.clone(), reports.clone()));
    }
}

/// Answers one request, then closes the connection.
async fn answer(
    mut connection: TcpStream,
    page: String,
    reports: mpsc::UnboundedSender<HashMap<String, String>>,
) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match connection.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
    let head = String::from_utf8_lossy(&head);
    let target = head.split(' ').nth(1).unwrap_or("/");
    let (status, body) = match target.strip_prefix("/report?") {
        Some(query) => {
            let _ = reports.send(parse_query(query));
            ("204 No Content", String::new())
        }
        None if target == "/" => ("200 OK", page),
        None => ("404 Not Found", String::new()),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/html\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = connection.write_all(response.as_bytes()).await;
}

/// `a=1&b=x%20y` as a map, percent-decoded.
fn parse_query(query: &str) -> HashMap<String, String> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(name, value)| (name.to_owned(), percent_decode(value)))
        .collect()
}

fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut decoded = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => decoded.push(b' '),
            b'%' if i + 3 <= bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                decoded.push(u8::from_str_radix(hex, 16).unwrap_or(b'?'));
                i += 2;
            }
            other => decoded.push(other),
        }
        i += 1;
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

#[tokio::test]
#[ignore = "needs chromium; .ci/run installs it"]
async fn a_browser_sees_1009_with_its_reason_for_every_oversized_message() {
    let server = TestServer::start();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let page_addr = listener.local_addr().unwrap();
    let (reports_tx, mut reports) = mpsc::unbounded_channel();
    tokio::spawn(serve_page(listener, page(server.addr), reports_tx));

    let _browser = Browser::open(&format!("http://{page_addr}/"));

    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + BROWSER_PATIENCE;
    while seen.len() < SIZES.len() * ROUNDS {
        let report = tokio::time::timeout_at(deadline, reports.recv())
            .await
            .unwrap_or_else(|_| panic!("the browser reported only {seen:#?}"))
            .expect("the page server runs");
        seen.push(report);
    }

    for report in &seen {
        assert_eq!(
            (report["code"].as_str(), report["reason"].as_str()),
            ("1009", "message too big"),
            "the browser read the server's close for every size: {seen:#?}"
        );
    }
    server.wait_for_sample("connected_clients", 0.0).await;
}
