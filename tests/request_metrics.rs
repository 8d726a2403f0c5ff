//! The service's own traffic in `http_requests_total` and
//! `http_request_duration_seconds`: every request is counted by method,
//! route template and status, and no client can add series.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{Exposition, TestServer};
use futures::StreamExt;
use reqwest::Method;

/// The simulated collector off, so the only changing series are the ones a
/// test causes.
const QUIET: [(&str, &str); 1] = [("COLLECT_INTERVAL_MS", "0")];

/// Sends `method path` and returns the response status.
async fn send(client: &reqwest::Client, server: &TestServer, method: &str, path: &str) -> u16 {
    let method = Method::from_bytes(method.as_bytes()).expect("valid method token");
    client
        .request(method, server.url(path))
        .send()
        .await
        .expect("HTTP request")
        .status()
        .as_u16()
}

/// Opens a websocket to `/ws/<id>` and closes it cleanly.
async fn visit_ws(server: &TestServer, id: &str) {
    let mut socket = server.connect_ws(id).await;
    socket.close(None).await.expect("send close frame");
    // Drain until the server's answering close frame ends the stream.
    while let Some(Ok(_)) = socket.next().await {}
}

/// `http_requests_total` as (method, path, status) → count.
fn request_counts(metrics: &Exposition) -> BTreeMap<(String, String, String), f64> {
    metrics
        .samples()
        .into_iter()
        .filter(|(name, _, _)| name == "http_requests_total")
        .map(|(_, labels, value)| {
            let key = (
                labels["method"].clone(),
                labels["path"].clone(),
                labels["status"].clone(),
            );
            (key, value)
        })
        .collect()
}

#[tokio::test]
async fn every_request_is_counted_by_method_route_template_and_status() {
    let server = TestServer::start_with(&QUIET);
    let client = reqwest::Client::new();

    for _ in 0..3 {
        assert_eq!(send(&client, &server, "GET", "/some").await, 200);
    }
    assert_eq!(send(&client, &server, "GET", "/nope").await, 404);
    assert_eq!(send(&client, &server, "GET", "/some/more").await, 404);
    assert_eq!(send(&client, &server, "HEAD", "/some").await, 200);
    assert_eq!(send(&client, &server, "HEAD", "/metrics").await, 200);
    assert_eq!(send(&client, &server, "POST", "/some").await, 405);
    assert_eq!(send(&client, &server, "DELETE", "/metrics").await, 405);
    // A plain GET on the websocket route lacks the upgrade headers: 426.
    assert_eq!(send(&client, &server, "GET", "/ws/alice").await, 426);
    visit_ws(&server, "alice").await;
    visit_ws(&server, "bob").await;
    assert_eq!(send(&client, &server, "GET", "/metrics").await, 200);

    // This scrape is counted after its body is encoded, so it sees only the one before.
    let metrics = server.metrics().await;

    let expected: BTreeMap<_, _> = [
        (("GET", "/some", "200"), 3.0),
        (("HEAD", "/some", "200"), 1.0),
        (("HEAD", "/metrics", "200"), 1.0),
        (("GET", "unmatched", "404"), 2.0),
        // A known path asked with another method: its template, and 405.
        (("POST", "/some", "405"), 1.0),
        (("DELETE", "/metrics", "405"), 1.0),
        (("GET", "/ws/{id}", "426"), 1.0),
        (("GET", "/ws/{id}", "101"), 2.0),
        (("GET", "/metrics", "200"), 1.0),
    ]
    .into_iter()
    .map(|((method, path, status), count)| {
        let key = (method.to_owned(), path.to_owned(), status.to_owned());
        (key, count)
    })
    .collect();
    assert_eq!(request_counts(&metrics), expected);

    for ((method, path, status), count) in &expected {
        let labels = [("method", &**method), ("path", path), ("status", status)];
        assert_eq!(
            metrics.sample("http_request_duration_seconds_count", &labels),
            Some(*count),
            "duration observations for {labels:?}"
        );
    }
}

#[tokio::test]
async fn the_request_metrics_have_their_types_and_fine_buckets() {
    let server = TestServer::start_with(&QUIET);
    server.get("/some").await;

    let metrics = server.metrics().await;

    let types = metrics.types();
    assert_eq!(types["http_requests_total"], "counter");
    assert_eq!(types["http_request_duration_seconds"], "histogram");
    let bounds: Vec<String> = metrics
        .samples()
        .into_iter()
        .filter(|(name, labels, _)| {
            name == "http_request_duration_seconds_bucket" && labels["path"] == "/some"
        })
        .map(|(_, labels, _)| labels["le"].clone())
        .collect();
    let finest: f64 = bounds[0].parse().unwrap();
    assert!(
        finest <= 0.001,
        "the first bucket resolves sub-millisecond requests: {bounds:?}"
    );
    assert_eq!(bounds.last().map(String::as_str), Some("+Inf"));
}

#[tokio::test]
async fn distinct_junk_paths_and_websocket_ids_add_no_series() {
    let server = TestServer::start_with(&QUIET);
    let client = reqwest::Client::new();
    // One request of each kind first, so every series the burst can touch exists.
    send(&client, &server, "GET", "/junk-0").await;
    send(&client, &server, "GET", "/ws/id-0").await;
    visit_ws(&server, "id-0").await;
    server.metrics().await;
    let before = server.metrics().await.series();

    for i in 1..=300 {
        let path = format!("/junk-{i}/deeper-{i}?query={i}");
        assert_eq!(send(&client, &server, "GET", &path).await, 404);
    }
    for i in 1..=30 {
        assert_eq!(
            send(&client, &server, "GET", &format!("/ws/id-{i}")).await,
            426
        );
        visit_ws(&server, &format!("id-{i}")).await;
    }
    let metrics = server.metrics().await;

    assert_eq!(
        metrics.series(),
        before,
        "the burst added or removed series"
    );
    for token in ["junk-1", "id-1", "deeper", "query"] {
        assert!(!metrics.0.contains(token), "{token} leaked into a label");
    }
    let counts = request_counts(&metrics);
    let key = |path: &str, status: &str| ("GET".to_owned(), path.to_owned(), status.to_owned());
    assert_eq!(counts[&key("unmatched", "404")], 301.0);
    assert_eq!(counts[&key("/ws/{id}", "426")], 31.0);
    assert_eq!(counts[&key("/ws/{id}", "101")], 31.0);
}

#[tokio::test]
async fn unusual_methods_collapse_to_other() {
    let server = TestServer::start_with(&QUIET);
    let client = reqwest::Client::new();

    for method in ["BREW", "PROPFIND", "X-INVENTED"] {
        assert_eq!(send(&client, &server, method, "/some").await, 405);
        assert_eq!(send(&client, &server, method, "/nowhere").await, 404);
    }
    let metrics = server.metrics().await;

    let counts = request_counts(&metrics);
    let key = |path: &str, status: &str| ("other".to_owned(), path.to_owned(), status.to_owned());
    assert_eq!(counts[&key("/some", "405")], 3.0);
    assert_eq!(counts[&key("unmatched", "404")], 3.0);
    let methods: BTreeSet<&str> = counts.keys().map(|(method, _, _)| &**method).collect();
    assert_eq!(methods, BTreeSet::from(["other"]));
}
