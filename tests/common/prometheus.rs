//! A real Prometheus server for end-to-end tests, run on the repository's own
//! `prom/prometheus.yml` and `prom/rules.yml` and read through its HTTP API,
//! and `promtool`. Both come from Debian's `prometheus` package.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value as Json;
use serde_yaml_ng::Value as Yaml;
use tempfile::TempDir;

use super::PATIENCE;

/// How often, in seconds, the test Prometheus scrapes and evaluates rules:
/// the shipped 5 s would make every test wait for several of them.
const INTERVAL_SECS: u64 = 1;

/// What Grafana's `$__rate_interval` comes to on the test Prometheus, in
/// seconds: at least four scrape intervals, so that every rate window holds
/// several samples.
pub const RATE_INTERVAL_SECS: u64 = 4 * INTERVAL_SECS;

/// The pause between two polls of Prometheus.
const POLL: Duration = Duration::from_millis(100);

/// A running Prometheus on a free loopback port, with its configuration and
/// storage in a temporary directory; killed, and the directory removed, when
/// dropped.
pub struct TestPrometheus {
    child: Child,
    addr: SocketAddr,
    dir: TempDir,
    /// The (job, instance) of every target the configuration names.
    targets: Vec<(String, String)>,
}

/// One element of an instant vector.
#[derive(Debug)]
pub struct Sample {
    pub labels: HashMap<String, String>,
    pub value: f64,
}

impl TestPrometheus {
    /// Starts Prometheus on [`test_config`] and waits until it is ready to
    /// answer queries.
    pub async fn start(services: &[SocketAddr]) -> TestPrometheus {
        let dir = tempfile::tempdir().expect("create a temporary directory");
        let addr = free_loopback_addr();
        let (config, targets) = test_config(addr, services);
        let config_file = dir.path().join("prometheus.yml");
        std::fs::write(&config_file, config).expect("write the test configuration");
        let log = File::create(dir.path().join("prometheus.log")).expect("create the log file");

        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config_file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start prometheus (Debian's prometheus package; see README)");
        let mut prometheus = TestPrometheus {
            child,
            addr,
            dir,
            targets,
        };
        prometheus.wait_until_ready().await;
        prometheus
    }

    /// Everything Prometheus has logged so far, for failure messages.
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    async fn wait_until_ready(&mut self) {
        let ready = format!("http://{}/-/ready", self.addr);
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().expect("poll prometheus") {
                panic!("prometheus exited with {status}:\n{}", self.log());
            }
            if let Ok(response) = reqwest::get(&ready).await
                && response.status() == 200
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "prometheus not ready after {PATIENCE:?}:\n{}",
                self.log()
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until every target of the configuration has been scraped
    /// successfully, panicking with the targets' state if that takes longer
    /// than [`PATIENCE`].
    pub async fn wait_for_targets_up(&self) {
        let mut expected = self.targets.clone();
        expected.sort();
        poll("every target up", PATIENCE, async || {
            let data = self.api("/api/v1/targets", &[("state", "active")]).await;
            let targets = data["activeTargets"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let mut up: Vec<(String, String)> = targets
                .iter()
                .filter(|target| target["health"] == "up")
                .map(|target| {
                    let label =
                        |name: &str| target["labels"][name].as_str().unwrap_or("").to_owned();
                    (label("job"), label("instance"))
                })
                .collect();
            up.sort();
            if up == expected {
                Ok(())
            } else {
                Err(format!("{targets:#?}"))
            }
        })
        .await
    }

    /// Evaluates `promql` now and returns the instant vector it yields.
    pub async fn query(&self, promql: &str) -> Vec<Sample> {
        let data = self.api("/api/v1/query", &[("query", promql)]).await;
        assert_eq!(
            data["resultType"], "vector",
            "{promql} is an instant vector"
        );
        data["result"]
            .as_array()
            .expect("a vector result is an array")
            .iter()
            .map(|element| Sample {
                labels: serde_json::from_value(element["metric"].clone())
                    .expect("labels are strings"),
                value: element["value"][1]
                    .as_str()
                    .and_then(|value| value.parse().ok())
                    .expect("a sample value is a number in a string"),
            })
            .collect()
    }

    /// Evaluates `promql` until `condition` holds for its result and returns
    /// that result; panics, naming `what` and the last result, if it does not
    /// within `patience`.
    pub async fn wait_for_query(
        &self,
        promql: &str,
        what: &str,
        patience: Duration,
        condition: impl Fn(&[Sample]) -> bool,
    ) -> Vec<Sample> {
        poll(&format!("{what} ({promql})"), patience, async || {
            let samples = self.query(promql).await;
            if condition(&samples) {
                Ok(samples)
            } else {
                Err(format!("{samples:#?}"))
            }
        })
        .await
    }

    /// The values of `label` on the series that `selector` matches, as
    /// Grafana's `label_values(selector, label)` asks for them; waits until
    /// there is at least one.
    pub async fn label_values(&self, label: &str, selector: &str) -> Vec<String> {
        let path = format!("/api/v1/label/{label}/values");
        poll(
            &format!("values of {label} on {selector}"),
            PATIENCE,
            async || {
                let data = self.api(&path, &[("match[]", selector)]).await;
                let values: Vec<String> =
                    serde_json::from_value(data.clone()).expect("label values are strings");
                if values.is_empty() {
                    Err(format!("{data:#}"))
                } else {
                    Ok(values)
                }
            },
        )
        .await
    }

    /// Every loaded rule as `/api/v1/rules` describes it (`name`, `type`,
    /// `health`, `lastError`, ...), across all groups, once each has been
    /// evaluated: until then a rule's health is "unknown".
    pub async fn evaluated_rules(&self) -> Vec<Json> {
        poll("every rule evaluated", PATIENCE, async || {
            let data = self.api("/api/v1/rules", &[]).await;
            let rules: Vec<Json> = data["groups"]
                .as_array()
                .expect("rule groups are an array")
                .iter()
                .flat_map(|group| group["rules"].as_array().cloned().unwrap_or_default())
                .collect();
            if rules.iter().any(|rule| rule["health"] == "unknown") {
                Err(format!("{rules:#?}"))
            } else {
                Ok(rules)
            }
        })
        .await
    }

    /// GETs an API endpoint and returns the `data` of its successful answer.
    async fn api(&self, path: &str, params: &[(&str, &str)]) -> Json {
        let url = reqwest::Url::parse_with_params(&format!("http://{}{path}", self.addr), params)
            .expect("a valid API URL");
        let response = reqwest::get(url).await.expect("HTTP GET to prometheus");
        let status = response.status();
        let body = response.text().await.expect("prometheus API body");
        let mut answer: Json = serde_json::from_str(&body).unwrap_or_else(|err| {
            panic!("GET {path} {params:?}: {status}, not JSON ({err}): {body}")
        });
        assert_eq!(
            answer["status"], "success",
            "GET {path} {params:?}: {status} {body}"
        );
        answer["data"].take()
    }
}

impl Drop for TestPrometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Calls `probe` until it returns `Ok`; panics, naming `what` and the last
/// `Err` (what was seen instead), once `patience` is spent.
async fn poll<T>(
    what: &str,
    patience: Duration,
    mut probe: impl AsyncFnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + patience;
    loop {
        match probe().await {
            Ok(found) => return found,
            Err(seen) => assert!(
                Instant::now() < deadline,
                "waited {patience:?} in vain for {what}; last seen:\n{seen}"
            ),
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The directory of the shipped Prometheus configuration and rules.
fn prom_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("prom")
}

/// The shipped `prom/prometheus.yml` made fit for a test, and the (job,
/// instance) of every target it names: scrapes and rule evaluations every
/// [`INTERVAL_SECS`], the `prometheus` job aimed at the test Prometheus itself and
/// `service-collector` at `services`. Rule files become absolute paths,
/// resolved against `prom/` as Prometheus would resolve them, because the
/// test configuration is written to a temporary directory.
fn test_config(prometheus: SocketAddr, services: &[SocketAddr]) -> (String, Vec<(String, String)>) {
    let shipped_file = prom_dir().join("prometheus.yml");
    let shipped = std::fs::read_to_string(&shipped_file).expect("read prom/prometheus.yml");
    let mut config: Yaml = serde_yaml_ng::from_str(&shipped).expect("prom/prometheus.yml is YAML");

    let interval = format!("{INTERVAL_SECS}s");
    config["global"]["scrape_interval"] = interval.clone().into();
    config["global"]["evaluation_interval"] = interval.into();

    for rule_file in config["rule_files"]
        .as_sequence_mut()
        .expect("prom/prometheus.yml lists rule_files")
    {
        let relative = rule_file.as_str().expect("a rule file is a path");
        let absolute = prom_dir().join(relative);
        *rule_file = absolute.to_str().expect("a UTF-8 path").into();
    }

    let mut targets = Vec::new();
    for job in config["scrape_configs"]
        .as_sequence_mut()
        .expect("prom/prometheus.yml lists scrape_configs")
    {
        let name = job["job_name"]
            .as_str()
            .expect("a job has a name")
            .to_owned();
        let addrs: Vec<String> = match name.as_str() {
            "prometheus" => vec![prometheus.to_string()],
            "service-collector" => services.iter().map(SocketAddr::to_string).collect(),
            other => panic!("prom/prometheus.yml has a job {other:?} the tests cannot retarget"),
        };
        targets.extend(addrs.iter().map(|addr| (name.clone(), addr.clone())));
        let mut static_config = serde_yaml_ng::Mapping::new();
        static_config.insert("targets".into(), addrs.into());
        job["static_configs"] = vec![Yaml::Mapping(static_config)].into();
    }

    let text = serde_yaml_ng::to_string(&config).expect("serialise the test configuration");
    (text, targets)
}

/// A loopback address with a port that was free a moment ago. Prometheus
/// must be told its port up front, because its own scrape target names it;
/// another process taking the port in between would make start-up fail
/// loudly, not wrongly.
fn free_loopback_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("bind a free loopback port")
}

/// The metric names of the recording rules in `prom/rules.yml`.
pub fn recording_rules() -> Vec<String> {
    let text = std::fs::read_to_string(prom_dir().join("rules.yml")).expect("read prom/rules.yml");
    let rules: Yaml = serde_yaml_ng::from_str(&text).expect("prom/rules.yml is YAML");
    rules["groups"]
        .as_sequence()
        .expect("prom/rules.yml has groups")
        .iter()
        .flat_map(|group| group["rules"].as_sequence().cloned().unwrap_or_default())
        .filter_map(|rule| rule["record"].as_str().map(str::to_owned))
        .collect()
}

/// Runs `promtool check metrics` on `exposition` and returns its lint
/// report, one problem a line (promtool writes it to stderr).
pub fn promtool_check_metrics(exposition: &str) -> Vec<String> {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start promtool (Debian's prometheus package; see README)");
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(exposition.as_bytes())
        .expect("write the exposition to promtool");
    let output = child.wait_with_output().expect("wait for promtool");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.trim().is_empty(), "promtool stdout: {stdout}");
    String::from_utf8_lossy(&output.stderr)
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(str::to_owned)
        .collect()
}
