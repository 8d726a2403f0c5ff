//! The tutorial end to end: a real Prometheus, run on the shipped
//! `prom/prometheus.yml` and `prom/rules.yml`, scrapes two instances of the
//! service, and the README's queries answer what the README says they do.
//! Also: `promtool check metrics` on the live exposition, and every query of
//! the Grafana dashboard in `deploy/grafana/dashboards/`.
//!
//! These need Debian's `prometheus` package, so plain `cargo test` skips them
//! and `cargo test -- --include-ignored` (what `.ci/run` runs) includes them.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::prometheus::{
    RATE_INTERVAL_SECS, Sample, TestPrometheus, promtool_check_metrics, recording_rules,
};
use common::{PATIENCE, TestServer};
use serde_json::Value as Json;

/// The README's query for the 90th percentile of response times.
const P90_QUERY: &str =
    r#"histogram_quantile(0.90, sum(rate(response_time_bucket{env="testing"}[2m])) by (le))"#;

/// The README's query for the response codes by class.
const CODES_BY_TYPE_QUERY: &str = r#"sum(increase(response_code{env="testing"}[5m])) by (type)"#;

/// `env="testing"` samples, across both instances, that the distribution
/// checks wait for: enough for tight tolerances (see [`P90_TOLERANCE`] and
/// [`SHARE_TOLERANCE`]).
const MIN_SAMPLES: f64 = 10_000.0;

/// The collector's fastest pace, 1 ms, ten times the default. Two instances
/// then record about 1000 `testing` samples a second, so [`MIN_SAMPLES`]
/// arrive in about ten seconds rather than a hundred.
const FAST_COLLECTOR: (&str, &str) = ("COLLECT_INTERVAL_MS", "1");

/// How long [`MIN_SAMPLES`] may take on a machine busy with other work.
const SAMPLES_PATIENCE: Duration = Duration::from_secs(90);

/// How far the measured p90 may be from 9.0.
///
/// The estimate is `5 + 5 (0.9 - p) / (1 - p)`, where `p` is the share of
/// samples at or below 5 s: rank 0.9 lies in the (5, 10] bucket and
/// `histogram_quantile` interpolates linearly inside it. At `p = 0.5` that is
/// 9.0, and it moves by -2 for every unit of `p`. With `N` samples `p` has a
/// standard deviation of `0.5 / sqrt(N)`, so the estimate has `1 / sqrt(N)`:
/// 0.01 at [`MIN_SAMPLES`]. On top of that, `rate` extrapolates each bucket
/// series on its own: at the start of the data it stretches a series by half
/// a scrape interval or by up to 1.1 intervals, depending on how far back the
/// series would reach zero. The le="5" and le="+Inf" buckets can fall on
/// different sides of that line, a 0.6 s difference over the at least 10 s
/// of data that [`MIN_SAMPLES`] take at the collector's fastest pace: up to
/// 6% on `p`'s numerator, or 0.06 on the estimate. 0.12 covers that worst
/// case plus six standard deviations.
const P90_TOLERANCE: f64 = 0.12;

/// How far each class's share of the codes may be from its share of the code
/// range. A share near 0.2 of `N` samples has a standard deviation of
/// `sqrt(0.2 * 0.8 / N)`, 0.004 at [`MIN_SAMPLES`]; 0.025 is six of them.
/// `increase` extrapolates each of the ~200 series per class (a code on an
/// instance) on its own, but alike for every class: that adds no bias, only
/// a little spread (about a fifth more, in trial runs).
const SHARE_TOLERANCE: f64 = 0.025;

/// Prometheus may move a scrape's timestamp by up to 2 ms
/// (`--scrape.timestamp-tolerance`) to keep it on schedule.
const TIMESTAMP_TOLERANCE: f64 = 0.002;

/// Two instances of the service, started with `env`, and a Prometheus
/// scraping both and itself, with every target up.
async fn two_instances_behind_prometheus(
    env: &[(&str, &str)],
) -> ([TestServer; 2], TestPrometheus) {
    let servers = [TestServer::start_with(env), TestServer::start_with(env)];
    let prometheus = TestPrometheus::start(&servers.each_ref().map(|server| server.addr)).await;
    prometheus.wait_for_targets_up().await;
    (servers, prometheus)
}

/// The value of a query that yields exactly one sample.
fn only_value(promql: &str, samples: &[Sample]) -> f64 {
    assert_eq!(samples.len(), 1, "{promql} yields one sample: {samples:#?}");
    samples[0].value
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is past 1970")
        .as_secs_f64()
}

#[tokio::test]
#[ignore = "needs prometheus and promtool; see README"]
async fn prometheus_sums_requests_and_clients_across_instances() {
    let (servers, prometheus) = two_instances_behind_prometheus(&[]).await;
    let calls = [3, 5];
    let clients = [2, 1];

    let mut held = Vec::new();
    for ((server, calls), clients) in servers.iter().zip(calls).zip(clients) {
        for _ in 0..calls {
            assert_eq!(server.get("/some").await.status(), 200);
        }
        for client in 0..clients {
            held.push(server.connect_ws(&format!("client-{client}")).await);
        }
        server
            .wait_for_sample("connected_clients", f64::from(clients))
            .await;
    }
    let done = unix_now();
    // Samples scraped after `done` have seen every call and client.
    prometheus
        .wait_for_query(
            "timestamp(incoming_requests)",
            "both instances scraped after the calls",
            PATIENCE,
            |samples| {
                samples.len() == servers.len()
                    && samples
                        .iter()
                        .all(|sample| sample.value > done + TIMESTAMP_TOLERANCE)
            },
        )
        .await;

    let requests = prometheus.query("sum(incoming_requests)").await;
    let connected = prometheus.query("sum(connected_clients)").await;
    let connected_by_instance = prometheus
        .query("sum by (instance) (connected_clients)")
        .await;

    assert_eq!(
        only_value("sum(incoming_requests)", &requests),
        f64::from(calls.iter().sum::<u32>()),
        "every /some call on either instance is counted once"
    );
    assert_eq!(
        only_value("sum(connected_clients)", &connected),
        f64::from(clients.iter().sum::<u32>()),
        "every held websocket client is counted once"
    );
    let by_instance: BTreeMap<String, f64> = connected_by_instance
        .iter()
        .map(|sample| (sample.labels["instance"].clone(), sample.value))
        .collect();
    let expected: BTreeMap<String, f64> = servers
        .iter()
        .zip(clients)
        .map(|(server, clients)| (server.addr.to_string(), f64::from(clients)))
        .collect();
    assert_eq!(
        by_instance, expected,
        "each instance counts only its own clients"
    );
    drop(held);
}

#[tokio::test]
#[ignore = "needs prometheus and promtool; see README"]
async fn the_tutorial_queries_show_a_p90_near_9s_and_five_code_classes() {
    let (_servers, prometheus) = two_instances_behind_prometheus(&[FAST_COLLECTOR]).await;
    let count_query = r#"sum(increase(response_time_count{env="testing"}[2m]))"#;
    prometheus
        .wait_for_query(
            count_query,
            "enough testing samples",
            SAMPLES_PATIENCE,
            |samples| samples.len() == 1 && samples[0].value >= MIN_SAMPLES,
        )
        .await;

    let p90 = only_value(P90_QUERY, &prometheus.query(P90_QUERY).await);
    assert!(
        (p90 - 9.0).abs() <= P90_TOLERANCE,
        "p90 {p90} should be 9.0 ± {P90_TOLERANCE}"
    );

    let by_type = prometheus
        .wait_for_query(
            CODES_BY_TYPE_QUERY,
            "enough testing codes",
            SAMPLES_PATIENCE,
            |samples| samples.iter().map(|sample| sample.value).sum::<f64>() >= MIN_SAMPLES,
        )
        .await;
    // Codes are uniform on [100, 599) and a code's class is its hundred.
    let mut codes_per_class = BTreeMap::<String, u32>::new();
    for code in 100..599 {
        *codes_per_class
            .entry((code / 100 * 100).to_string())
            .or_default() += 1;
    }
    let total_codes: u32 = codes_per_class.values().sum();
    let counts: BTreeMap<String, f64> = by_type
        .iter()
        .map(|sample| (sample.labels["type"].clone(), sample.value))
        .collect();
    assert_eq!(
        counts.keys().collect::<BTreeSet<_>>(),
        codes_per_class.keys().collect::<BTreeSet<_>>(),
        "exactly the five classes: {by_type:#?}"
    );
    let total: f64 = counts.values().sum();
    for (class, codes) in codes_per_class {
        let share = counts[&class] / total;
        let expected = f64::from(codes) / f64::from(total_codes);
        assert!(
            (share - expected).abs() <= SHARE_TOLERANCE,
            "class {class}: share {share} should be {expected} ± {SHARE_TOLERANCE} ({counts:?})"
        );
    }
}

#[tokio::test]
#[ignore = "needs prometheus and promtool; see README"]
async fn the_rules_evaluate_and_record_every_env() {
    let (_servers, prometheus) = two_instances_behind_prometheus(&[]).await;
    let envs = BTreeSet::from(["production", "testing"]);

    let names = recording_rules();
    assert!(!names.is_empty(), "prom/rules.yml has recording rules");
    for name in names {
        prometheus
            .wait_for_query(&name, "a number for every env", PATIENCE, |samples| {
                let recorded: BTreeSet<&str> = samples
                    .iter()
                    .filter(|sample| sample.value.is_finite())
                    .filter_map(|sample| sample.labels.get("env").map(String::as_str))
                    .collect();
                recorded == envs
            })
            .await;
    }

    let rules = prometheus.evaluated_rules().await;
    assert!(!rules.is_empty(), "the rules are loaded");
    for rule in rules {
        assert_eq!(
            rule["health"], "ok",
            "rule evaluates without error: {rule:#}"
        );
    }
}

#[tokio::test]
#[ignore = "needs prometheus and promtool; see README"]
async fn promtool_finds_only_the_tutorial_counter_names_lacking_total() {
    let server = TestServer::start();
    server.get("/some").await;
    // Vectors appear in the exposition once they have a sample.
    let metrics = server
        .wait_for_metrics("every family", |metrics| {
            let types = metrics.types();
            types.contains_key("response_code") && types.contains_key("response_time")
        })
        .await;

    let mut lints = promtool_check_metrics(&metrics.0);
    lints.sort();

    assert_eq!(
        lints,
        [
            r#"incoming_requests counter metrics should have "_total" suffix"#,
            r#"response_code counter metrics should have "_total" suffix"#,
        ],
        "promtool reports only the names the tutorial's queries depend on"
    );
}

/// The dashboard that Grafana is provisioned with.
const DASHBOARD: &str = "deploy/grafana/dashboards/service.json";

/// `value` as Grafana puts one of several selected values into a PromQL
/// regex: each regex metacharacter escaped with a backslash, itself escaped
/// for the PromQL string.
fn grafana_regex_escape(value: &str) -> String {
    value
        .chars()
        .flat_map(|c| {
            let special = r"\^$.|?*+()[]{}".contains(c);
            special
                .then_some(['\\', '\\'])
                .into_iter()
                .flatten()
                .chain([c])
        })
        .collect()
}

/// `text` with every `$name` of `variables` replaced by its value, longest
/// names first so that no name is taken for the start of a longer one.
fn substitute(text: &str, variables: &[(String, String)]) -> String {
    let mut by_length: Vec<&(String, String)> = variables.iter().collect();
    by_length.sort_by_key(|(name, _)| std::cmp::Reverse(name.len()));
    by_length
        .into_iter()
        .fold(text.to_owned(), |text, (name, value)| {
            text.replace(&format!("${name}"), value)
        })
}

/// The selector and label of a Grafana `label_values(selector, label)`.
fn parse_label_values(query: &str) -> (&str, &str) {
    query
        .strip_prefix("label_values(")
        .and_then(|rest| rest.strip_suffix(')'))
        .and_then(|args| args.rsplit_once(','))
        .map(|(selector, label)| (selector.trim(), label.trim()))
        .unwrap_or_else(|| panic!("a variable query is label_values(selector, label): {query}"))
}

#[tokio::test]
#[ignore = "needs prometheus and promtool; see README"]
async fn every_dashboard_query_answers_with_data_from_two_instances() {
    let (servers, prometheus) = two_instances_behind_prometheus(&[]).await;
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(DASHBOARD))
        .expect("read the dashboard");
    let dashboard: Json = serde_json::from_str(&text).expect("the dashboard is JSON");

    // Grafana's built-in variable first, then the dashboard's own, in
    // order: a variable's query may use those before it.
    let mut variables = vec![(
        "__rate_interval".to_owned(),
        format!("{RATE_INTERVAL_SECS}s"),
    )];
    let mut resolved = BTreeMap::new();
    for variable in dashboard["templating"]["list"]
        .as_array()
        .expect("the dashboard has variables")
    {
        let name = variable["name"].as_str().expect("a variable has a name");
        let query = variable["query"]["query"]
            .as_str()
            .unwrap_or_else(|| panic!("variable {name} has a query"));
        let query = substitute(query, &variables);
        let (selector, label) = parse_label_values(&query);
        let mut values = prometheus.label_values(label, selector).await;
        values.sort();
        // With several values selected ("All"), Grafana joins them into one
        // regex alternation.
        let value = if variable["multi"] == true || variable["includeAll"] == true {
            let escaped: Vec<String> = values.iter().map(|v| grafana_regex_escape(v)).collect();
            format!("({})", escaped.join("|"))
        } else {
            values[0].clone()
        };
        resolved.insert(name.to_owned(), values);
        variables.push((name.to_owned(), value));
    }
    let mut instances: Vec<String> = servers.iter().map(|s| s.addr.to_string()).collect();
    instances.sort();
    assert_eq!(
        resolved.get("job"),
        Some(&vec!["service-collector".to_owned()]),
        "$job finds the service's job and nothing else"
    );
    assert_eq!(
        resolved.get("instance"),
        Some(&instances),
        "$instance offers both instances"
    );

    let panels = dashboard["panels"]
        .as_array()
        .expect("the dashboard has panels");
    assert!(!panels.is_empty(), "the dashboard has panels");
    for panel in panels {
        let title = panel["title"].as_str().expect("a panel has a title");
        let targets = panel["targets"].as_array().cloned().unwrap_or_default();
        assert!(!targets.is_empty(), "panel {title:?} has queries");
        for target in targets {
            let expr = target["expr"]
                .as_str()
                .unwrap_or_else(|| panic!("panel {title:?} has a PromQL expr: {target:#}"));
            let promql = substitute(expr, &variables);
            assert!(
                !promql.contains('$'),
                "panel {title:?} uses a variable the dashboard does not define: {promql}"
            );
            // An invalid query fails in `query` with Prometheus's error.
            prometheus
                .wait_for_query(
                    &promql,
                    &format!("data for panel {title:?}"),
                    PATIENCE,
                    |samples| !samples.is_empty(),
                )
                .await;
        }
    }
}
