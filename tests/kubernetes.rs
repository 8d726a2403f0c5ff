//! The Kubernetes objects of `deploy/kubernetes/` against what they describe:
//! the `PrometheusRule` carries exactly the promtool-tested groups of
//! `prom/rules.yml`, the kustomization applies every file, the Deployment's
//! settings are valid and its probes, ports and scrapes are the real
//! binary's, the worst case of memory fits under the memory limit, a
//! draining pod turns unready within the drain, and the pods get more time
//! to stop than the service takes. Their schemas are checked by
//! `kubernetes-validate` in `.ci/run`.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::TestServer;
use rust_web_prometheus_example::config::Config;
use serde_yaml_ng::Value as Yaml;

/// Time the service may take after its grace period for websocket sessions
/// to see the notice (`SESSION_SLACK` in `src/lib.rs`), rounded up.
const SESSION_SLACK: Duration = Duration::from_secs(1);

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

/// The idle process: 5.2–5.4 MiB of RSS measured fresh in
/// docs/websockets.md, rounded up for the metrics' encoding buffers and the
/// runtime's threads.
const IDLE_PROCESS_BYTES: u64 = 8 * MIB;

/// What a websocket client costs besides the message it is sending, which
/// is up to `WS_MAX_MESSAGE_BYTES`: measured as 67.1 to 67.5 KiB per client holding
/// a 64 KiB message (docs/websockets.md, "Worst case at the defaults"), so
/// 3.5 KiB, rounded up with a margin.
const WS_CLIENT_BYTES_BESIDES_MESSAGE: u64 = 6 * KIB;

/// What an HTTP connection costs at most: a request head just under the
/// 16 KiB read buffer's limit, measured as 22.9 to 24.4 KiB per connection in
/// docs/http-limits.md.
const HTTP_CONNECTION_BYTES: u64 = 25 * KIB;

/// Connections of the `METRICS_ADDR` listener (`METRICS_MAX_CONNECTIONS` in
/// `src/lib.rs`).
const METRICS_CONNECTIONS: u64 = 16;

/// The share of the memory limit the worst case may take: the rest is for
/// the allocator's fragmentation and what the figures above miss.
const WORST_CASE_SHARE_OF_LIMIT: f64 = 0.8;

fn repository() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn manifests() -> PathBuf {
    repository().join("deploy/kubernetes")
}

fn read_yaml(path: &Path) -> Yaml {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|err| panic!("read {}: {err}", path.display()));
    serde_yaml_ng::from_str(&text).unwrap_or_else(|err| panic!("{} is YAML: {err}", path.display()))
}

/// The one container of the Deployment.
fn container(deployment: &Yaml) -> &Yaml {
    let containers = deployment["spec"]["template"]["spec"]["containers"]
        .as_sequence()
        .expect("the Deployment has containers");
    assert_eq!(containers.len(), 1, "one container");
    &containers[0]
}

/// The container's environment as a map.
fn env(container: &Yaml) -> HashMap<String, String> {
    container["env"]
        .as_sequence()
        .expect("the container sets env")
        .iter()
        .map(|var| {
            let name = var["name"].as_str().expect("an env var has a name");
            let value = var["value"]
                .as_str()
                .unwrap_or_else(|| panic!("{name} has a string value"));
            (name.to_owned(), value.to_owned())
        })
        .collect()
}

#[test]
fn the_prometheus_rule_deploys_exactly_the_groups_promtool_tests() {
    let rules = read_yaml(&repository().join("prom/rules.yml"));
    let prometheus_rule = read_yaml(&manifests().join("prometheusrule.yaml"));

    assert_eq!(prometheus_rule["kind"], "PrometheusRule");
    assert!(rules["groups"].as_sequence().is_some_and(|g| !g.is_empty()));
    assert_eq!(
        prometheus_rule["spec"]["groups"], rules["groups"],
        "copy the groups of prom/rules.yml into deploy/kubernetes/prometheusrule.yaml"
    );
}

#[test]
fn the_kustomization_applies_every_manifest_in_the_directory() {
    let kustomization = read_yaml(&manifests().join("kustomization.yaml"));
    let listed: BTreeSet<String> = kustomization["resources"]
        .as_sequence()
        .expect("the kustomization lists resources")
        .iter()
        .map(|resource| resource.as_str().expect("a resource is a path").to_owned())
        .collect();
    let present: BTreeSet<String> = std::fs::read_dir(manifests())
        .expect("list deploy/kubernetes")
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".yaml") && name != "kustomization.yaml")
        .collect();

    assert_eq!(listed, present);
}

#[test]
fn pods_get_longer_to_stop_than_drain_and_grace_take() {
    let deployment = read_yaml(&manifests().join("deployment.yaml"));
    let env = env(container(&deployment));
    let config = settings(&env);
    let termination_grace = Duration::from_secs(
        deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
            .as_u64()
            .expect("terminationGracePeriodSeconds is set"),
    );

    assert!(
        config.shutdown_drain > Duration::ZERO,
        "the pods drain before they stop accepting"
    );
    let needed = config.shutdown_drain + config.shutdown_grace + SESSION_SLACK;
    assert!(
        termination_grace > needed,
        "terminationGracePeriodSeconds {termination_grace:?} must exceed drain + grace + slack, {needed:?}"
    );
}

/// A Kubernetes memory quantity in bytes: a number with an optional binary
/// suffix, as the Deployment writes them.
fn bytes(quantity: &str) -> u64 {
    let (number, unit) = match quantity.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => quantity.split_at(at),
        None => (quantity, ""),
    };
    let unit = match unit {
        "" => 1,
        "Ki" => KIB,
        "Mi" => MIB,
        "Gi" => 1024 * MIB,
        other => panic!("memory quantity {quantity}: unit {other} not handled here"),
    };
    number.parse::<u64>().expect("a whole number") * unit
}

/// The most memory the service can need with `config`: every websocket
/// client in the middle of a message of the largest size, every HTTP
/// connection of both listeners holding a request head of the largest size.
fn worst_case_bytes(config: &Config) -> u64 {
    let websockets = config.ws.max_clients as u64
        * (config.ws.max_message_bytes as u64 + WS_CLIENT_BYTES_BESIDES_MESSAGE);
    let connections =
        (config.http.max_connections as u64 + METRICS_CONNECTIONS) * HTTP_CONNECTION_BYTES;
    IDLE_PROCESS_BYTES + websockets + connections
}

#[test]
fn the_worst_case_of_memory_fits_under_the_memory_limit() {
    let deployment = read_yaml(&manifests().join("deployment.yaml"));
    let container = container(&deployment);
    let env = env(container);
    let config = settings(&env);
    let limit = bytes(
        container["resources"]["limits"]["memory"]
            .as_str()
            .expect("the container has a memory limit"),
    );

    let worst = worst_case_bytes(&config);
    assert!(
        worst as f64 <= limit as f64 * WORST_CASE_SHARE_OF_LIMIT,
        "the worst case, {} MiB, is more than {WORST_CASE_SHARE_OF_LIMIT} of the memory limit \
         of {} MiB: lower WS_MAX_CLIENTS, WS_MAX_MESSAGE_BYTES or HTTP_MAX_CONNECTIONS, or \
         raise the limit",
        worst / MIB,
        limit / MIB
    );
}

#[test]
fn a_draining_pod_fails_its_readiness_probe_within_the_drain() {
    let deployment = read_yaml(&manifests().join("deployment.yaml"));
    let container = container(&deployment);
    let env = env(container);
    let config = settings(&env);
    let readiness = &container["readinessProbe"];
    let seconds = |field: &str| {
        Duration::from_secs(
            readiness[field]
                .as_u64()
                .unwrap_or_else(|| panic!("readinessProbe.{field} is set")),
        )
    };

    // The last probe that sees 200 may start just before the 503; then
    // failureThreshold probes, one per period, each waiting its timeout.
    let unready_after = seconds("periodSeconds")
        * u32::try_from(readiness["failureThreshold"].as_u64().unwrap()).unwrap()
        + seconds("timeoutSeconds");
    assert!(
        unready_after <= config.shutdown_drain,
        "the kubelet may take {unready_after:?} to see the pod unready, longer than the drain \
         of {:?}",
        config.shutdown_drain
    );
}

/// Which of the service's listeners a named port of the container is, by
/// its number: `LISTEN_ADDR`'s or `METRICS_ADDR`'s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Listener {
    Main,
    Metrics,
}

fn listener(container: &Yaml, port_name: &Yaml, config: &Config) -> Listener {
    let number = container["ports"]
        .as_sequence()
        .expect("the container declares its ports")
        .iter()
        .find(|port| &port["name"] == port_name)
        .unwrap_or_else(|| panic!("the container has no port named {port_name:?}"))["containerPort"]
        .as_u64()
        .expect("a port has a number");
    if number == u64::from(config.listen_addr.port()) {
        Listener::Main
    } else if config.metrics_addr.map(|addr| u64::from(addr.port())) == Some(number) {
        Listener::Metrics
    } else {
        panic!("port {port_name:?} ({number}) is neither LISTEN_ADDR's nor METRICS_ADDR's")
    }
}

#[tokio::test]
async fn the_binary_started_as_the_deployment_says_answers_its_probes_and_scrapes() {
    let deployment = read_yaml(&manifests().join("deployment.yaml"));
    let pod_monitor = read_yaml(&manifests().join("podmonitor.yaml"));
    let container = container(&deployment);
    let env = env(container);
    let config = settings(&env);
    // The test binds free loopback ports rather than the Deployment's; the
    // declared port numbers were matched with the settings' above.
    let mut env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    env.retain(|(name, _)| *name != "METRICS_ADDR");
    if config.metrics_addr.is_some() {
        env.push(("METRICS_ADDR", "127.0.0.1:0"));
    }
    let server = TestServer::start_with(&env);
    let addr = |listener| match listener {
        Listener::Main => server.addr,
        Listener::Metrics => server.metrics_addr.expect("the metrics listener is up"),
    };

    for probe in ["livenessProbe", "readinessProbe"] {
        let path = container[probe]["httpGet"]["path"]
            .as_str()
            .unwrap_or_else(|| panic!("{probe} is an HTTP GET"));
        let probed = listener(container, &container[probe]["httpGet"]["port"], &config);
        // Out of reach of a flood of the main port (tests/metrics_addr.rs).
        assert_eq!(
            probed,
            Listener::Metrics,
            "{probe} goes to METRICS_ADDR's port"
        );
        let at = addr(probed);
        let response = reqwest::get(format!("http://{at}{path}")).await.unwrap();
        assert_eq!(
            response.status(),
            200,
            "{probe} GET {path} on a serving instance"
        );
    }

    let endpoint = &pod_monitor["spec"]["podMetricsEndpoints"][0];
    let path = endpoint["path"]
        .as_str()
        .expect("the PodMonitor scrapes a path");
    let at = addr(listener(container, &endpoint["port"], &config));
    let scrape = reqwest::get(format!("http://{at}{path}")).await.unwrap();
    assert_eq!(scrape.status(), 200, "the PodMonitor's GET {path}");
    assert!(
        scrape.text().await.unwrap().contains("connected_clients"),
        "the PodMonitor's scrape has the service's metrics"
    );
}

#[test]
fn the_service_and_the_pod_monitor_find_the_deployments_pods_and_ports() {
    let deployment = read_yaml(&manifests().join("deployment.yaml"));
    let service = read_yaml(&manifests().join("service.yaml"));
    let pod_monitor = read_yaml(&manifests().join("podmonitor.yaml"));
    let pod_labels = &deployment["spec"]["template"]["metadata"]["labels"];
    let container = container(&deployment);
    let env = env(container);
    let config = settings(&env);

    assert_eq!(&deployment["spec"]["replicas"], &Yaml::from(2));
    assert_eq!(&service["spec"]["selector"], pod_labels);
    assert_eq!(
        listener(
            container,
            &service["spec"]["ports"][0]["targetPort"],
            &config
        ),
        Listener::Main,
        "the Service sends clients to the main port"
    );
    assert_eq!(&pod_monitor["spec"]["selector"]["matchLabels"], pod_labels);
    let endpoint = &pod_monitor["spec"]["podMetricsEndpoints"][0];
    assert_eq!(
        listener(container, &endpoint["port"], &config),
        Listener::Metrics,
        "the PodMonitor scrapes METRICS_ADDR's listener, which a flood of the main port \
         does not reach"
    );
    assert_eq!(endpoint["path"], "/metrics");
}

/// The service's configuration under the Deployment's `env`.
fn settings(env: &HashMap<String, String>) -> Config {
    let pairs: Vec<(&str, &str)> = env
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_str()))
        .collect();
    common::config(&pairs)
}
