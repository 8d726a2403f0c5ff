//! Health checks over real sockets: `/healthz` and `/readyz` answer 200 while
//! the service serves, and after SIGTERM `/readyz` turns 503 while the
//! service goes on accepting and serving for `SHUTDOWN_DRAIN_SECS`, then
//! shuts down as before. Both routes are counted under their templates.

mod common;

use std::time::{Duration, Instant};

use common::{Exposition, TestServer, raw_request, wait_until_refused};

/// The drain period of the drain test. What the test does during it takes a
/// fraction of a second; five seconds leave room for a busy machine. Every
/// request of the drain checks that it ended within it, so a machine too slow
/// for the test is told so rather than seeing a refused connection.
const DRAIN: Duration = Duration::from_secs(5);

/// The labels of `GET path` answered with `status`.
fn get_labels<'a>(path: &'a str, status: &'a str) -> [(&'a str, &'a str); 3] {
    [("method", "GET"), ("path", path), ("status", status)]
}

/// `GET path` on a new connection during the drain that began at
/// `signalled`. A failure after the drain's end says so: the machine was too
/// slow for the test, which is no fault of the service.
async fn get_during_drain(
    server: &TestServer,
    path: &str,
    signalled: Instant,
) -> reqwest::Response {
    let result = reqwest::get(server.url(path)).await;
    let elapsed = signalled.elapsed();
    assert!(
        elapsed < DRAIN,
        "GET {path} ended {elapsed:?} after SIGTERM, after the drain of {DRAIN:?}: \
         the test ran too slowly to check the drain ({result:?})"
    );
    result.unwrap_or_else(|err| panic!("GET {path} during the drain: {err}"))
}

#[tokio::test]
async fn healthz_and_readyz_answer_200_and_are_counted_under_their_templates() {
    let server = TestServer::start();

    for _ in 0..3 {
        let response = server.get("/healthz").await;
        assert_eq!(response.status(), 200, "GET /healthz");
        assert_eq!(response.text().await.unwrap(), "ok");
    }
    for _ in 0..2 {
        let response = server.get("/readyz").await;
        assert_eq!(response.status(), 200, "GET /readyz");
        assert_eq!(response.text().await.unwrap(), "ready");
    }

    // Like the other GET routes: HEAD answered, other methods refused.
    let client = reqwest::Client::new();
    // On a raw connection: reqwest would show an empty body for a HEAD
    // whatever the server sent after the head.
    let head = raw_request(server.addr, "HEAD", "/readyz").await;
    assert_eq!(head.status, 200, "HEAD /readyz");
    assert_eq!(
        head.after_head, b"",
        "HEAD /readyz: nothing may follow the head"
    );
    assert_eq!(
        head.headers["content-length"],
        "ready".len().to_string(),
        "HEAD /readyz announces the GET's length"
    );
    let post = client.post(server.url("/healthz")).send().await.unwrap();
    assert_eq!(post.status(), 405, "POST /healthz");
    assert_eq!(post.headers()["allow"], "GET, HEAD");

    let metrics = server.metrics().await;
    for (path, count) in [("/healthz", 3.0), ("/readyz", 2.0)] {
        let labels = get_labels(path, "200");
        assert_eq!(
            metrics.sample("http_requests_total", &labels),
            Some(count),
            "http_requests_total for {path}"
        );
        assert_eq!(
            metrics.sample("http_request_duration_seconds_count", &labels),
            Some(count),
            "http_request_duration_seconds for {path}"
        );
    }
    assert_eq!(
        metrics.sample(
            "http_requests_total",
            &[("method", "HEAD"), ("path", "/readyz"), ("status", "200")]
        ),
        Some(1.0)
    );
    assert_eq!(
        metrics.value("incoming_requests"),
        Some(0.0),
        "probes are not calls to /some"
    );
}

#[tokio::test]
async fn after_sigterm_readyz_is_503_while_the_service_serves_through_the_drain() {
    let drain_secs = DRAIN.as_secs().to_string();
    let mut server = TestServer::start_with(&[("SHUTDOWN_DRAIN_SECS", &drain_secs)]);
    assert_eq!(server.get("/readyz").await.status(), 200);
    let mut readyz_ok = 1.0;

    let signalled = Instant::now();
    server.signal(libc::SIGTERM);

    // The signal reaches the server a moment after it is sent.
    let mut readyz_unavailable = 0.0;
    while readyz_unavailable == 0.0 {
        let result = reqwest::get(server.url("/readyz")).await;
        let elapsed = signalled.elapsed();
        let response = match result {
            Ok(response) if elapsed < DRAIN => response,
            other => panic!(
                "no 503 from /readyz within the drain of {DRAIN:?} after SIGTERM ({elapsed:?}, \
                 last answer {other:?}): /readyz did not turn 503, or the machine was too \
                 slow for the test"
            ),
        };
        match response.status().as_u16() {
            200 => readyz_ok += 1.0,
            503 => {
                readyz_unavailable += 1.0;
                assert_eq!(response.text().await.unwrap(), "draining");
            }
            other => panic!("GET /readyz after SIGTERM: {other}"),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Every `get` opens a connection of its own, so each of these is a new
    // connection accepted during the drain.
    for _ in 0..3 {
        let response = get_during_drain(&server, "/some", signalled).await;
        assert_eq!(response.status(), 200, "GET /some during the drain");
        assert_eq!(response.text().await.unwrap(), "hello!");
    }
    assert_eq!(
        get_during_drain(&server, "/healthz", signalled)
            .await
            .status(),
        200,
        "alive while draining"
    );
    assert_eq!(
        get_during_drain(&server, "/readyz", signalled)
            .await
            .status(),
        503,
        "unready for good"
    );
    readyz_unavailable += 1.0;
    let metrics = get_during_drain(&server, "/metrics", signalled).await;
    let metrics = Exposition(metrics.text().await.unwrap());

    assert_eq!(
        metrics.sample("http_requests_total", &get_labels("/readyz", "200")),
        Some(readyz_ok)
    );
    assert_eq!(
        metrics.sample("http_requests_total", &get_labels("/readyz", "503")),
        Some(readyz_unavailable)
    );
    assert_eq!(
        metrics.sample("http_requests_total", &get_labels("/healthz", "200")),
        Some(1.0)
    );
    assert_eq!(metrics.value("incoming_requests"), Some(3.0));

    wait_until_refused(server.addr).await;
    assert!(
        signalled.elapsed() >= DRAIN,
        "the listener closed {:?} after SIGTERM, before the drain of {DRAIN:?} was over",
        signalled.elapsed()
    );
    let status = server.wait_for_exit();
    assert!(status.success(), "exit status {status:?}");
}
