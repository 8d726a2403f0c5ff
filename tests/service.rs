//! The tutorial's HTTP behaviour, over a real socket: `/some`, `/metrics`,
//! and unknown paths.

mod common;

use common::{Exposition, TestServer, raw_request};

/// Whether the simulated collector has recorded both a code and a time.
fn has_collector_samples(metrics: &Exposition) -> bool {
    !metrics.label_names("response_code").is_empty()
        && !metrics.label_names("response_time_count").is_empty()
}

#[tokio::test]
async fn some_answers_hello_and_counts_every_call() {
    let server = TestServer::start();

    for _ in 0..7 {
        let response = server.get("/some").await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.text().await.unwrap(), "hello!");
    }

    let metrics = server.metrics().await;
    assert_eq!(metrics.value("incoming_requests"), Some(7.0));
}

#[tokio::test]
async fn metrics_use_the_prometheus_text_content_type() {
    let server = TestServer::start();

    let response = server.get("/metrics").await;

    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; version=0.0.4"
    );
}

#[tokio::test]
async fn metrics_expose_the_four_tutorial_families_with_their_labels() {
    let server = TestServer::start();
    server.get("/some").await;

    let metrics = server
        .wait_for_metrics("collector samples", has_collector_samples)
        .await;
    let types = metrics.types();

    assert_eq!(types["incoming_requests"], "counter");
    assert_eq!(types["connected_clients"], "gauge");
    assert_eq!(types["response_code"], "counter");
    assert_eq!(types["response_time"], "histogram");

    assert_eq!(
        metrics.label_names("incoming_requests"),
        [Vec::<String>::new()]
    );
    assert_eq!(
        metrics.label_names("connected_clients"),
        [Vec::<String>::new()]
    );
    let code_labels = metrics.label_names("response_code");
    assert!(!code_labels.is_empty(), "response_code has samples");
    assert!(
        code_labels
            .iter()
            .all(|names| names == &["env", "statuscode", "type"])
    );
    let bucket_labels = metrics.label_names("response_time_bucket");
    assert!(!bucket_labels.is_empty(), "response_time has buckets");
    assert!(bucket_labels.iter().all(|names| names == &["env", "le"]));
    assert!(
        metrics
            .label_names("response_time_count")
            .iter()
            .all(|names| names == &["env"])
    );
}

/// The fields of `/proc/<pid>/stat` after the command name, which may hold
/// spaces: field 3 (state) is the first.
fn stat_fields(pid: u32) -> Vec<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let (_, after_name) = stat.rsplit_once(')').unwrap();
    after_name
        .split_whitespace()
        .skip(1)
        .map(|field| field.parse().unwrap_or(0))
        .collect()
}

/// A field of `/proc/<pid>/stat` by its number in proc_pid_stat(5).
fn stat_field(pid: u32, number: usize) -> u64 {
    stat_fields(pid)[number - 4]
}

fn entries(path: String) -> u64 {
    std::fs::read_dir(path).unwrap().count() as u64
}

#[tokio::test]
async fn the_process_metrics_say_what_proc_says_of_the_process() {
    let server = TestServer::start_with(&[("COLLECT_INTERVAL_MS", "0")]);
    let pid = server.pid();
    // One keep-alive connection for every scrape, so that the server's
    // descriptors stay the same from one to the next.
    let client = reqwest::Client::new();
    let scrape = || async {
        let response = client.get(server.url("/metrics")).send().await.unwrap();
        common::Exposition(response.text().await.unwrap())
    };
    scrape().await;
    // SAFETY: sysconf has no memory-safety preconditions.
    let (ticks, page) = unsafe {
        (
            libc::sysconf(libc::_SC_CLK_TCK),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    let (ticks, page) = (ticks as u64, page as u64);
    let threads_before = entries(format!("/proc/{pid}/task"));
    let fds_before = entries(format!("/proc/{pid}/fd"));
    let cpu_before = stat_field(pid, 14) + stat_field(pid, 15);
    let rss_before = stat_field(pid, 24) * page;

    let metrics = scrape().await;

    // A scrape gathers on a thread of tokio's blocking pool, which may start
    // one more that then idles for 10 s: counted during the scrape and
    // after it alike.
    let threads = entries(format!("/proc/{pid}/task"));
    let fds = entries(format!("/proc/{pid}/fd"));
    assert!(
        (threads_before..=threads_before + 1).contains(&threads),
        "a quiet server: {threads_before} threads, then {threads}"
    );
    assert_eq!(fds, fds_before, "a quiet server");
    let value = |name: &str| {
        metrics
            .value(name)
            .unwrap_or_else(|| panic!("{name} missing")) as u64
    };
    assert_eq!(value("process_threads"), threads);
    // While it counts, the collector holds a descriptor of /proc/self, and
    // before Linux 6.2, which gives the count as the directory's size, one
    // of the listing.
    let listed = std::fs::metadata(format!("/proc/{pid}/fd")).unwrap().len() == 0;
    assert_eq!(value("process_open_fds"), fds + 1 + u64::from(listed));
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let soft: u64 = limits
        .lines()
        .find_map(|line| line.strip_prefix("Max open files"))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap();
    assert_eq!(value("process_max_fds"), soft);
    let boot: u64 = std::fs::read_to_string("/proc/stat")
        .unwrap()
        .lines()
        .find_map(|line| line.strip_prefix("btime "))
        .and_then(|seconds| seconds.trim().parse().ok())
        .unwrap();
    assert_eq!(
        value("process_start_time_seconds"),
        boot + stat_field(pid, 22) / ticks
    );
    // Whole seconds, as the prometheus crate counts them.
    let cpu_after = stat_field(pid, 14) + stat_field(pid, 15);
    assert!((cpu_before / ticks..=cpu_after / ticks).contains(&value("process_cpu_seconds_total")));
    let rss_after = stat_field(pid, 24) * page;
    let rss = value("process_resident_memory_bytes");
    assert!(
        (rss_before.min(rss_after)..=rss_before.max(rss_after)).contains(&rss),
        "{rss}"
    );
    assert!(value("process_virtual_memory_bytes") > rss);
}

#[tokio::test]
async fn every_family_appears_once() {
    let server = TestServer::start();

    let body = server.metrics().await.0;

    let mut seen = std::collections::HashSet::new();
    for line in body.lines().filter(|line| line.starts_with("# TYPE ")) {
        assert!(
            seen.insert(line.to_owned()),
            "family declared twice: {line}"
        );
    }
}

#[tokio::test]
async fn simulated_status_codes_are_classified_by_their_hundred() {
    let server = TestServer::start();

    let metrics = server
        .wait_for_metrics("collector samples", has_collector_samples)
        .await;

    let codes: Vec<_> = metrics
        .samples()
        .into_iter()
        .filter(|(name, _, _)| name == "response_code")
        .collect();
    assert!(!codes.is_empty(), "the collector recorded codes");
    for (_, labels, _) in codes {
        let code: u16 = labels["statuscode"].parse().unwrap();
        assert!((100..599).contains(&code), "code {code} out of range");
        assert_eq!(labels["type"], format!("{}", code / 100 * 100));
        assert!(["testing", "production"].contains(&labels["env"].as_str()));
    }
}

#[tokio::test]
async fn the_collector_can_be_switched_off() {
    let quiet = TestServer::start_with(&[("COLLECT_INTERVAL_MS", "0")]);
    let busy = TestServer::start_with(&[("COLLECT_INTERVAL_MS", "1")]);

    // Once the busy server has samples, the quiet one has had as long to record any.
    busy.wait_for_metrics("collector samples", has_collector_samples)
        .await;
    let metrics = quiet.metrics().await;

    assert!(
        !has_collector_samples(&metrics),
        "no response codes or times without the collector"
    );
}

#[tokio::test]
async fn unknown_paths_answer_404() {
    let server = TestServer::start();

    for path in ["/", "/nope", "/some/more", "/metrics/x"] {
        assert_eq!(server.get(path).await.status(), 404, "GET {path}");
    }
}

#[tokio::test]
async fn connections_beyond_the_limit_wait_for_a_free_slot() {
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    let server = TestServer::start_with(&[("HTTP_MAX_CONNECTIONS", "2")]);
    // Two connections that send nothing hold both slots; the listen queue
    // hands connections to the server in order, so they are taken first.
    let first = TcpStream::connect(server.addr).await.unwrap();
    let _second = TcpStream::connect(server.addr).await.unwrap();
    let mut third = TcpStream::connect(server.addr).await.unwrap();
    third
        .write_all(b"GET /some HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();

    let mut response = String::new();
    let early = tokio::time::timeout(
        Duration::from_millis(500),
        third.read_to_string(&mut response),
    )
    .await;
    assert!(early.is_err(), "served beyond the limit: {response:?}");

    drop(first);
    tokio::time::timeout(common::PATIENCE, third.read_to_string(&mut response))
        .await
        .expect("served once a slot is free")
        .unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response:?}");
    assert!(response.ends_with("hello!"), "{response:?}");
}

#[tokio::test]
async fn connections_that_start_no_request_are_closed_after_the_idle_timeout() {
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    let server = TestServer::start_with(&[("HTTP_IDLE_TIMEOUT_SECS", "1")]);
    // A keep-alive connection that keeps making requests is not idle: it is
    // served across three idle periods. It starts one every 10 ms, so it
    // stays busy even if the machine holds it up for a hundred times that.
    let mut busy = TcpStream::connect(server.addr).await.unwrap();
    let busy = tokio::spawn(async move {
        let started = std::time::Instant::now();
        while started.elapsed() < Duration::from_secs(3) {
            busy.write_all(b"GET /some HTTP/1.1\r\nHost: test\r\n\r\n")
                .await
                .expect("the busy connection is still open");
            let mut response = Vec::new();
            while !response.ends_with(b"hello!") {
                let mut chunk = [0u8; 256];
                let read = busy.read(&mut chunk).await.unwrap();
                assert_ne!(read, 0, "the busy connection was closed");
                response.extend_from_slice(&chunk[..read]);
            }
            assert!(response.starts_with(b"HTTP/1.1 200"));
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    // A slow-loris client: a request head that never ends, a byte at a time.
    let mut trickling = TcpStream::connect(server.addr).await.unwrap();
    trickling
        .write_all(b"GET /some HTTP/1.1\r\n")
        .await
        .unwrap();
    let trickle = tokio::spawn(async move {
        while trickling.write_all(b"X").await.is_ok() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });

    let mut rest = Vec::new();
    let closed = tokio::time::timeout(common::PATIENCE, silent.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the silent connection was closed");
    assert!(rest.is_empty(), "and got no answer: {rest:?}");
    tokio::time::timeout(common::PATIENCE, trickle)
        .await
        .expect("the trickling connection was closed")
        .unwrap();
    busy.await
        .expect("the busy connection was served throughout");
}

#[tokio::test]
async fn head_is_answered_on_the_get_routes_without_a_body() {
    let server = TestServer::start_with(&[("COLLECT_INTERVAL_MS", "0")]);

    // On raw connections: reqwest would show an empty body for a HEAD
    // whatever the server sent after the head.
    for path in ["/some", "/metrics"] {
        let get = raw_request(server.addr, "GET", path).await;
        let head = raw_request(server.addr, "HEAD", path).await;

        assert_eq!(get.status, 200, "GET {path}");
        assert_eq!(head.status, 200, "HEAD {path}");
        assert_eq!(
            head.headers["content-type"], get.headers["content-type"],
            "HEAD {path} has the GET's headers"
        );
        assert_eq!(
            head.after_head, b"",
            "HEAD {path}: nothing may follow the head"
        );
        let announced: usize = head.headers["content-length"]
            .parse()
            .expect("HEAD announces the length a GET would have");
        if path == "/some" {
            assert_eq!(
                announced,
                get.after_head.len(),
                "HEAD {path}'s Content-Length"
            );
        } else {
            // Each request adds to the request metrics, so the next
            // exposition is a little longer; it is not empty.
            assert!(announced > 0, "HEAD {path}'s Content-Length: {announced}");
        }
    }
    // A HEAD on /some is served by /some, like a GET: both are counted.
    assert_eq!(server.metrics().await.value("incoming_requests"), Some(2.0));
}

#[tokio::test]
async fn a_wrong_method_gets_405_with_the_methods_the_path_allows() {
    let server = TestServer::start();
    let client = reqwest::Client::new();

    for (method, path, allow) in [
        ("POST", "/some", "GET, HEAD"),
        ("DELETE", "/metrics", "GET, HEAD"),
        ("PUT", "/ws/someone", "GET"),
        ("HEAD", "/ws/someone", "GET"),
    ] {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let response = client
            .request(method.clone(), server.url(path))
            .send()
            .await
            .unwrap();

        assert_eq!(response.status(), 405, "{method} {path}");
        assert_eq!(response.headers()["allow"], allow, "{method} {path}");
    }
    assert_eq!(server.get("/nowhere").await.status(), 404);
}
