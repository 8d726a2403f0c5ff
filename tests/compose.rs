//! The Compose stack's files agree on the names that wire it together:
//! Prometheus starts on a configuration its image holds and scrapes the
//! service under its Compose name and port, Grafana's data source points at
//! the Prometheus service, the dashboard uses that data source, and the
//! provisioning reads the directory the dashboards are mounted in. And the
//! image's default configuration, the tutorial's, differs from Compose's only
//! in where the service is. `docker-compose config` (in `.ci/run`) checks the
//! file's schema, and `deploy/podman-smoke.sh` runs the containers; neither
//! would notice a name that points nowhere until someone opened Grafana.

use std::path::Path;

use serde_json::Value as Json;
use serde_yaml_ng::Value as Yaml;

fn read(path: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("read {}: {err}", path.display()))
}

fn yaml(path: &str) -> Yaml {
    serde_yaml_ng::from_str(&read(path)).unwrap_or_else(|err| panic!("{path} is YAML: {err}"))
}

/// The container port that `service` of compose.yaml publishes.
fn published_container_port(compose: &Yaml, service: &str) -> String {
    let ports = compose["services"][service]["ports"]
        .as_sequence()
        .unwrap_or_else(|| panic!("compose.yaml publishes a port of {service}"));
    let mapping = ports[0].as_str().expect("a port mapping is a string");
    mapping
        .rsplit(':')
        .next()
        .expect("host:container")
        .to_owned()
}

/// The host path mounted at `target` in `service`, as written in compose.yaml.
fn mount_source(compose: &Yaml, service: &str, target: &str) -> String {
    compose["services"][service]["volumes"]
        .as_sequence()
        .unwrap_or_else(|| panic!("{service} mounts volumes"))
        .iter()
        .filter_map(Yaml::as_str)
        .find_map(|volume| {
            let mut parts = volume.split(':');
            let source = parts.next()?;
            (parts.next()? == target).then(|| source.to_owned())
        })
        .unwrap_or_else(|| panic!("{service} mounts something at {target}"))
}

/// The targets of the `service-collector` job of a Prometheus configuration.
fn service_targets(config: &mut Yaml) -> &mut Yaml {
    let job = config["scrape_configs"]
        .as_sequence_mut()
        .expect("scrape_configs")
        .iter_mut()
        .find(|job| job["job_name"] == "service-collector")
        .expect("the service-collector job");
    &mut job["static_configs"][0]["targets"]
}

/// The configuration compose.yaml starts Prometheus on, as a path under
/// `prom/`: the file its `--config.file` names in `/etc/prometheus`, which
/// prom/Dockerfile must copy there.
fn compose_prometheus_config(compose: &Yaml) -> String {
    let config_file = compose["services"]["prometheus"]["command"]
        .as_sequence()
        .expect("compose.yaml gives Prometheus a command")
        .iter()
        .filter_map(Yaml::as_str)
        .find_map(|arg| arg.strip_prefix("--config.file="))
        .expect("compose.yaml names Prometheus's --config.file");
    let name = config_file
        .strip_prefix("/etc/prometheus/")
        .expect("the configuration is in the image's /etc/prometheus");
    let copied = read("prom/Dockerfile").lines().any(|line| {
        let words: Vec<&str> = line.split_whitespace().collect();
        words.first() == Some(&"COPY")
            && words.last() == Some(&"/etc/prometheus/")
            && words.contains(&name)
    });
    assert!(copied, "prom/Dockerfile copies {name} to /etc/prometheus/");
    format!("prom/{name}")
}

#[test]
fn prometheus_scrapes_the_service_by_its_compose_name_and_port() {
    let compose = yaml("compose.yaml");
    let mut prometheus = yaml(&compose_prometheus_config(&compose));

    let port = published_container_port(&compose, "service");
    assert_eq!(
        service_targets(&mut prometheus),
        &Yaml::from(vec![format!("service:{port}")])
    );
    assert_eq!(compose["services"]["prometheus"]["build"], "prom");
}

#[test]
fn grafana_reads_the_provisioned_data_source_and_dashboards() {
    let compose = yaml("compose.yaml");
    let datasources = yaml("deploy/grafana/provisioning/datasources/prometheus.yaml");
    let providers = yaml("deploy/grafana/provisioning/dashboards/service.yaml");
    let dashboard: Json = serde_json::from_str(&read("deploy/grafana/dashboards/service.json"))
        .expect("the dashboard is JSON");

    let source = &datasources["datasources"][0];
    let prometheus_port = published_container_port(&compose, "prometheus");
    assert_eq!(
        source["url"].as_str(),
        Some(format!("http://prometheus:{prometheus_port}").as_str())
    );
    assert_eq!(
        mount_source(&compose, "grafana", "/etc/grafana/provisioning"),
        "./deploy/grafana/provisioning"
    );
    let dashboards_dir = providers["providers"][0]["options"]["path"]
        .as_str()
        .expect("the provider reads a path");
    assert_eq!(
        mount_source(&compose, "grafana", dashboards_dir),
        "./deploy/grafana/dashboards"
    );

    let uid = source["uid"].as_str().expect("the data source has a uid");
    let mut uses = Vec::new();
    let panels = dashboard["panels"].as_array().expect("panels");
    let variables = dashboard["templating"]["list"]
        .as_array()
        .expect("variables");
    for item in panels.iter().chain(variables) {
        uses.push(&item["datasource"]["uid"]);
        for target in item["targets"].as_array().into_iter().flatten() {
            uses.push(&target["datasource"]["uid"]);
        }
    }
    assert!(!uses.is_empty());
    for used in uses {
        assert_eq!(
            used, uid,
            "every panel, query and variable uses the provisioned data source"
        );
    }
}

#[test]
fn the_images_default_configuration_differs_from_composes_only_in_the_services_address() {
    let compose = yaml("compose.yaml");
    let mut composes = yaml(&compose_prometheus_config(&compose));
    let default = yaml("prom/prometheus.yml");
    let config =
        <rust_web_prometheus_example::config::Config as clap::Parser>::parse_from(["service"]);

    // The tutorial's target: `cargo run` listens on the default port of the
    // machine whose network Prometheus shares.
    *service_targets(&mut composes) =
        Yaml::from(vec![format!("localhost:{}", config.listen_addr.port())]);

    assert_eq!(default, composes);
}

/// Every place that names the service's image: each must name the same
/// tag, the package's version, or a locally built image is not the one the
/// Deployment asks for.
#[test]
fn the_image_has_one_tag_in_every_build_command_and_manifest() {
    let image = format!("rust-web-prometheus-example:{}", env!("CARGO_PKG_VERSION"));
    let compose = yaml("compose.yaml");
    assert_eq!(compose["services"]["service"]["image"], image.as_str());
    let deployment = yaml("deploy/kubernetes/deployment.yaml");
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], image.as_str());

    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![
        "README.md".to_owned(),
        "Dockerfile".to_owned(),
        "deploy/podman-smoke.sh".to_owned(),
    ];
    for doc in std::fs::read_dir(root.join("docs")).unwrap() {
        let name = doc.unwrap().file_name().to_string_lossy().into_owned();
        if name.ends_with(".md") {
            files.push(format!("docs/{name}"));
        }
    }
    let mut commands = 0;
    for file in files {
        for line in read(&file).lines() {
            let is_command = ["docker ", "podman ", "kind load", "buildah "]
                .iter()
                .any(|tool| line.contains(tool));
            let named = line
                .split(|c: char| c.is_whitespace() || "`'\",()".contains(c))
                .filter(|word| word.split(':').next() == Some("rust-web-prometheus-example"));
            for word in named.filter(|_| is_command) {
                commands += 1;
                assert_eq!(word, image, "{file}: {line}");
            }
        }
    }
    assert!(
        commands >= 4,
        "the build and run commands were found: {commands}"
    );
}
