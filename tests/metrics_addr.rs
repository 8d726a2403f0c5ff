//! `METRICS_ADDR`: `/metrics` and the health checks on a listener of their
//! own, so scrapes and probes keep answering while the public port is
//! flooded, over real sockets.

mod common;

use common::{Exposition, TestServer, run_to_exit};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// `GET path` on `addr`, returning the status and body.
async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let response = reqwest::get(format!("http://{addr}{path}"))
        .await
        .expect("HTTP GET");
    let status = response.status().as_u16();
    (status, response.text().await.expect("response body"))
}

#[tokio::test]
async fn without_metrics_addr_the_main_port_serves_metrics_as_in_the_tutorial() {
    let server = TestServer::start();

    assert_eq!(server.metrics_addr, None, "no `Metrics on port` line");
    let (status, _) = get(server.addr, "/metrics").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn with_metrics_addr_metrics_are_served_there_and_only_there() {
    let server = TestServer::start_with(&[("METRICS_ADDR", "127.0.0.1:0")]);
    let metrics_addr = server.metrics_addr.expect("a `Metrics on port N` line");
    assert_ne!(metrics_addr.port(), server.addr.port());

    let (status, body) = get(server.addr, "/some").await;
    assert_eq!((status, body.as_str()), (200, "hello!"));
    assert_eq!(get(server.addr, "/metrics").await.0, 404, "main port");
    assert_eq!(get(metrics_addr, "/some").await.0, 404, "metrics port");

    // Other methods as on the main port without the setting: 405 with
    // `Allow` where /metrics is served, 404 where it is not.
    let client = reqwest::Client::new();
    let post = |addr| client.post(format!("http://{addr}/metrics")).send();
    let refused = post(metrics_addr).await.expect("POST");
    assert_eq!(refused.status(), 405, "metrics port");
    assert_eq!(refused.headers()["allow"], "GET, HEAD");
    assert_eq!(
        post(server.addr).await.expect("POST").status(),
        404,
        "main port"
    );

    let (status, body) = get(metrics_addr, "/metrics").await;
    assert_eq!(status, 200);
    let metrics = Exposition(body);
    assert_eq!(metrics.value("incoming_requests"), Some(1.0));
    assert_eq!(
        metrics.sample(
            "http_requests_total",
            &[("method", "GET"), ("path", "/some"), ("status", "200")]
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn scrapes_and_probes_answer_while_the_main_port_is_flooded_with_silent_connections() {
    let server = TestServer::start_with(&[
        ("METRICS_ADDR", "127.0.0.1:0"),
        ("HTTP_MAX_CONNECTIONS", "8"),
        // The flood holds for the whole test.
        ("HTTP_IDLE_TIMEOUT_SECS", "3600"),
    ]);
    let metrics_addr = server.metrics_addr.expect("a `Metrics on port N` line");

    // Every slot taken by a connection that sends nothing, and more waiting
    // in the listen queue behind them.
    let mut flood = Vec::new();
    for _ in 0..16 {
        flood.push(TcpStream::connect(server.addr).await.unwrap());
    }
    // A request on the main port now waits for a slot.
    let mut waiting = TcpStream::connect(server.addr).await.unwrap();
    waiting
        .write_all(b"GET /some HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let public = tokio::spawn(async move {
        let mut response = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut waiting, &mut response)
            .await
            .map(|_| response)
    });

    for scrape in 0..5 {
        let (status, body) = tokio::time::timeout(common::PATIENCE, get(metrics_addr, "/metrics"))
            .await
            .unwrap_or_else(|_| panic!("scrape {scrape} answered during the flood"));
        assert_eq!(status, 200, "scrape {scrape}");
        assert!(Exposition(body).value("connected_clients").is_some());
        for probe in ["/healthz", "/readyz"] {
            let answer = tokio::time::timeout(common::PATIENCE, get(metrics_addr, probe)).await;
            let (status, _) =
                answer.unwrap_or_else(|_| panic!("{probe} answered during the flood"));
            assert_eq!(status, 200, "{probe}");
        }
    }
    assert!(
        !public.is_finished(),
        "the flood held the main port throughout the scrapes"
    );

    drop(flood);
    let response = tokio::time::timeout(common::PATIENCE, public)
        .await
        .expect("the waiting request was served once the flood left")
        .unwrap()
        .unwrap();
    assert!(response.starts_with("HTTP/1.1 200 "), "{response:?}");
}

#[test]
fn a_taken_metrics_address_is_one_line_naming_the_variable() {
    let first = TestServer::start();
    let taken = first.addr.to_string();

    let (status, stdout, stderr) = run_to_exit(&[("METRICS_ADDR", &taken)], &[]);

    assert!(!status.success());
    assert_eq!(stderr.lines().count(), 1, "one line on stderr: {stderr:?}");
    assert!(
        stderr.contains("METRICS_ADDR") && stderr.contains(&taken),
        "stderr names METRICS_ADDR and {taken}: {stderr:?}"
    );
    assert!(!stdout.contains("Started"), "did not start: {stdout:?}");
}
