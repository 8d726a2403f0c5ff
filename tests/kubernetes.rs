//! The Kubernetes objects of `deploy/kubernetes/` against what they describe:
//! the `PrometheusRule` carries exactly the promtool-tested groups of
//! `prom/rules.yml`, the kustomization applies every file, the Deployment's
//! settings are valid and its probes and port are the real binary's, and the
//! pods get more time to stop than the service takes. Their schemas are
//! checked by `kubernetes-validate` in `.ci/run`.

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
    let config = Config::from_lookup(|name| env.get(name).cloned())
        .expect("the Deployment's settings are valid");
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

#[tokio::test]
async fn the_binary_started_as_the_deployment_says_answers_its_probes() {
    let deployment = read_yaml(&manifests().join("deployment.yaml"));
    let container = container(&deployment);
    let env = env(container);
    let port = container["ports"][0]["containerPort"]
        .as_u64()
        .expect("the container declares its port");
    let config = Config::from_lookup(|name| env.get(name).cloned()).unwrap();
    assert_eq!(
        u64::from(config.listen_addr.port()),
        port,
        "the service listens on the declared containerPort"
    );
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let server = TestServer::start_with(&env);

    for probe in ["livenessProbe", "readinessProbe"] {
        let path = container[probe]["httpGet"]["path"]
            .as_str()
            .unwrap_or_else(|| panic!("{probe} is an HTTP GET"));
        assert_eq!(container[probe]["httpGet"]["port"], "http");
        assert_eq!(
            server.get(path).await.status(),
            200,
            "{probe} GET {path} on a serving instance"
        );
    }
}

#[test]
fn the_service_and_the_pod_monitor_find_the_deployments_pods_and_port() {
    let deployment = read_yaml(&manifests().join("deployment.yaml"));
    let service = read_yaml(&manifests().join("service.yaml"));
    let pod_monitor = read_yaml(&manifests().join("podmonitor.yaml"));
    let pod_labels = &deployment["spec"]["template"]["metadata"]["labels"];
    let port_name = &container(&deployment)["ports"][0]["name"];

    assert_eq!(&deployment["spec"]["replicas"], &Yaml::from(2));
    assert_eq!(&service["spec"]["selector"], pod_labels);
    assert_eq!(&service["spec"]["ports"][0]["targetPort"], port_name);
    assert_eq!(&pod_monitor["spec"]["selector"]["matchLabels"], pod_labels);
    let endpoint = &pod_monitor["spec"]["podMetricsEndpoints"][0];
    assert_eq!(&endpoint["port"], port_name);
    assert_eq!(endpoint["path"], "/metrics");
}
