//! `/metrics` compressed as Prometheus asks for it: gzip when the scrape's
//! `Accept-Encoding` allows it, plain text otherwise, the same families
//! either way.

mod common;

use std::collections::BTreeSet;
use std::io::Read;

use common::{Exposition, TestServer};

/// Scrapes `/metrics`, sending `accept_encoding` if given.
async fn scrape(server: &TestServer, accept_encoding: Option<&str>) -> reqwest::Response {
    let mut request = reqwest::Client::new().get(server.url("/metrics"));
    if let Some(value) = accept_encoding {
        request = request.header("accept-encoding", value);
    }
    let response = request.send().await.expect("HTTP GET /metrics");
    assert_eq!(response.status(), 200);
    response
}

/// The header `name` of `response`, or "" if it has none.
fn header<'a>(response: &'a reqwest::Response, name: &str) -> &'a str {
    response
        .headers()
        .get(name)
        .map_or("", |value| value.to_str().expect("visible ASCII header"))
}

/// The families' `# HELP` and `# TYPE` lines and every series (name and
/// labels, without the value, which moves between two scrapes).
fn shape(metrics: &Exposition) -> BTreeSet<String> {
    metrics
        .0
        .lines()
        .map(|line| match line.starts_with('#') {
            true => line.to_owned(),
            false => line
                .rsplit_once(' ')
                .expect("sample has a value")
                .0
                .to_owned(),
        })
        .collect()
}

#[tokio::test]
async fn a_scrape_accepting_gzip_gets_the_same_exposition_compressed() {
    // No collector, so no series appears between the two scrapes.
    let server = TestServer::start_with(&[("COLLECT_INTERVAL_MS", "0")]);
    server.get("/some").await;
    // Counts a first scrape, so both below see the same `/metrics` series.
    server.metrics().await;

    let plain = scrape(&server, None).await;
    let compressed = scrape(&server, Some("gzip")).await;

    assert_eq!(header(&plain, "content-encoding"), "");
    assert_eq!(header(&compressed, "content-encoding"), "gzip");
    for response in [&plain, &compressed] {
        assert_eq!(
            header(response, "content-type"),
            "text/plain; version=0.0.4"
        );
        assert!(
            header(response, "vary")
                .to_ascii_lowercase()
                .contains("accept-encoding"),
            "Vary names Accept-Encoding: {:?}",
            response.headers()
        );
    }
    let plain = Exposition(plain.text().await.expect("plain body"));
    let compressed = compressed.bytes().await.expect("gzip body");
    let mut decoded = String::new();
    flate2::read::GzDecoder::new(&compressed[..])
        .read_to_string(&mut decoded)
        .expect("a valid gzip stream of UTF-8 text");
    let decoded = Exposition(decoded);

    assert!(
        compressed.len() < plain.0.len(),
        "gzip makes the scrape smaller"
    );
    assert_eq!(shape(&decoded), shape(&plain));
    assert_eq!(decoded.value("incoming_requests"), Some(1.0));
}

#[tokio::test]
async fn a_scrape_that_does_not_accept_gzip_gets_plain_text() {
    let server = TestServer::start_with(&[("COLLECT_INTERVAL_MS", "0")]);

    for accept_encoding in [None, Some("identity"), Some("gzip;q=0"), Some("br")] {
        let response = scrape(&server, accept_encoding).await;

        assert_eq!(
            header(&response, "content-encoding"),
            "",
            "Accept-Encoding: {accept_encoding:?}"
        );
        let body = response.text().await.expect("plain body");
        assert!(
            body.contains("# TYPE incoming_requests counter"),
            "Accept-Encoding: {accept_encoding:?} gets readable text"
        );
    }
}
