//! What an operator reads about the running binary: the tokio runtime's
//! workers and tasks, which build it is, and how many requests it is
//! handling, all on a real `/metrics`.

mod common;

use common::{Exposition, TestServer};

const QUIET: [(&str, &str); 1] = [("COLLECT_INTERVAL_MS", "0")];

/// The per-worker series of `name` as (worker, value), in worker order.
fn per_worker(metrics: &Exposition, name: &str) -> Vec<(usize, f64)> {
    let mut series: Vec<(usize, f64)> = metrics
        .samples()
        .into_iter()
        .filter(|(sample, _, _)| sample == name)
        .map(|(_, labels, value)| {
            assert_eq!(labels.len(), 1, "{name} has only the worker label");
            (labels["worker"].parse().expect("numeric worker"), value)
        })
        .collect();
    series.sort_by_key(|&(worker, _)| worker);
    series
}

#[tokio::test]
async fn the_runtime_reports_its_workers_tasks_and_how_busy_each_worker_is() {
    let server = TestServer::start_with(&QUIET);
    let before = server.metrics().await;

    // The binary runs tokio's default: a worker per core.
    let cores = std::thread::available_parallelism().unwrap().get();
    assert_eq!(before.value("tokio_workers"), Some(cores as f64));
    // The memory trimmer and this scrape's connection at least (the accept
    // loop runs in `main`'s own future, not as a task).
    assert!(before.value("tokio_alive_tasks").unwrap() >= 2.0);
    assert!(before.value("tokio_global_queue_depth").unwrap() >= 0.0);
    let types = before.types();
    for (name, kind) in [
        ("tokio_workers", "gauge"),
        ("tokio_alive_tasks", "gauge"),
        ("tokio_global_queue_depth", "gauge"),
        ("tokio_worker_busy_seconds_total", "counter"),
        ("tokio_worker_parks_total", "counter"),
        ("tokio_worker_park_unpark_total", "counter"),
    ] {
        assert_eq!(types.get(name).map(String::as_str), Some(kind), "{name}");
    }

    for _ in 0..200 {
        assert_eq!(server.get("/some").await.status(), 200);
    }
    let after = server.metrics().await;

    for name in [
        "tokio_worker_busy_seconds_total",
        "tokio_worker_parks_total",
        "tokio_worker_park_unpark_total",
    ] {
        let (then, now) = (per_worker(&before, name), per_worker(&after, name));
        let workers: Vec<usize> = now.iter().map(|&(worker, _)| worker).collect();
        assert_eq!(
            workers,
            (0..cores).collect::<Vec<_>>(),
            "{name}: one series per worker"
        );
        for ((_, then), (worker, now)) in then.iter().zip(&now) {
            assert!(
                now >= then,
                "{name} of worker {worker} went back: {then} -> {now}"
            );
        }
        let total = |series: &[(usize, f64)]| series.iter().map(|&(_, value)| value).sum::<f64>();
        assert!(
            total(&now) > total(&then),
            "200 requests moved no {name}: {then:?} -> {now:?}"
        );
    }
}

#[tokio::test]
async fn the_build_is_identified_by_version_revision_and_compiler() {
    let server = TestServer::start_with(&QUIET);

    let metrics = server.metrics().await;

    let build_info: Vec<_> = metrics
        .samples()
        .into_iter()
        .filter(|(name, _, _)| name == "rust_web_prometheus_example_build_info")
        .collect();
    assert_eq!(build_info.len(), 1, "one build_info series");
    let (_, labels, value) = &build_info[0];
    assert_eq!(*value, 1.0);
    assert_eq!(labels["version"], env!("CARGO_PKG_VERSION"));
    let rustc = std::process::Command::new(std::env::var("RUSTC").unwrap_or("rustc".into()))
        .arg("--version")
        .output()
        .map(|output| String::from_utf8_lossy(&output.stdout).into_owned());
    if let Ok(rustc) = rustc {
        assert!(
            rustc.contains(&labels["rustc_version"]),
            "{rustc:?} vs {labels:?}"
        );
    }
    let head = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned());
    match (head, std::env::var("BUILD_REVISION")) {
        (_, Ok(revision)) if !revision.is_empty() => assert_eq!(labels["revision"], revision),
        (Some(head), _) => assert!(
            head.starts_with(&labels["revision"]) && labels["revision"].len() == 12,
            "revision {:?} of HEAD {head}",
            labels["revision"]
        ),
        (None, _) => assert_eq!(labels["revision"], "unknown"),
    }
}

#[tokio::test]
async fn after_concurrent_traffic_a_scrape_sees_only_itself_in_flight() {
    let server = TestServer::start_with(&QUIET);
    let client = reqwest::Client::new();

    // Requests of every kind from 16 clients at once, on both workers.
    let clients: Vec<_> = (0..16)
        .map(|i| {
            let client = client.clone();
            let base = server.url("");
            tokio::spawn(async move {
                for round in 0..50 {
                    let path = ["/some", "/nope", "/metrics", "/ws/x"][(i + round) % 4];
                    let response = client.get(format!("{base}{path}")).send().await.unwrap();
                    response.bytes().await.unwrap();
                }
            })
        })
        .collect();
    for client in clients {
        client.await.unwrap();
    }
    let mut socket = server.connect_ws("visitor").await;
    socket.close(None).await.unwrap();

    let metrics = server.metrics().await;

    assert_eq!(metrics.value("http_requests_in_flight"), Some(1.0));
    assert_eq!(
        metrics
            .types()
            .get("http_requests_in_flight")
            .map(String::as_str),
        Some("gauge")
    );
}
