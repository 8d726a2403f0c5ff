//! docs/reuse.md holds outside this repository: for the axum and for the
//! warp service it shows, a crate of its own gets a copy of `src/metrics/`,
//! exactly the dependencies the page lists and the code it shows (read from
//! the page's marked blocks, so page and test cannot drift apart), and is
//! built, its copy of the folder's unit tests run, and it is started and
//! scraped for the requests it served.
//!
//! Cheap after the first run: the crate takes this repository's
//! `Cargo.lock`, so cargo resolves, offline, to the versions already
//! downloaded, and builds into `target/reuse-crate`, which keeps the
//! compiled dependencies from one run to the next. Not into this package's
//! own build directory, which the running `cargo test` holds locked.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

use common::TestServer;
use serde_json::Value as Json;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// What rustc warns about in the copy, as docs/reuse.md says: the two
/// functions only this service's own tasks call.
const WARNINGS: [&str; 2] = [
    "function `record_panic` is never used",
    "function `panic_message` is never used",
];

#[test]
fn the_axum_service_of_the_guide_records_its_requests_by_template() {
    let service = FreshCrate::create("axum", &[]);
    service.build();
    service.check_format();
    service.run_unit_tests();
    served_and_recorded(&service.binary());
}

#[test]
fn the_warp_service_of_the_guide_records_its_requests_by_template() {
    let glue = Path::new(ROOT).join("src/http/instrument.rs");
    let service = FreshCrate::create("warp", &[(&glue, "src/instrument.rs")]);
    service.build();
    service.check_format();
    service.run_unit_tests();
    served_and_recorded(&service.binary());
}

/// Requests a route and an unknown path of the service at `binary`, then
/// finds both in its `/metrics` as docs/reuse.md shows them, and the scrape
/// itself in the next.
fn served_and_recorded(binary: &Path) {
    let server = TestServer::start_program(binary);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let item = server.get("/items/7").await;
        assert_eq!(item.status(), 200, "GET /items/7");
        assert_eq!(item.text().await.unwrap(), "item 7\n");
        assert_eq!(server.get("/nope").await.status(), 404, "GET /nope");

        let first = server.metrics().await;
        for line in guide_block("scrape").lines() {
            assert!(
                first.0.lines().any(|sample| sample == line),
                "the scrape lacks `{line}` of docs/reuse.md:\n{}",
                first.0
            );
        }
        let item_labels = [
            ("method", "GET"),
            ("path", "/items/{id}"),
            ("status", "200"),
        ];
        assert_eq!(
            first.sample("http_request_duration_seconds_count", &item_labels),
            Some(1.0),
            "the request to /items/7 in the duration histogram"
        );

        let second = server.metrics().await;
        let scrape_labels = [("method", "GET"), ("path", "/metrics"), ("status", "200")];
        assert_eq!(
            second.sample("http_requests_total", &scrape_labels),
            Some(1.0),
            "the first scrape, counted in the second"
        );
        assert!(second.value("tokio_workers").is_some(), "no tokio_workers");
        assert_eq!(
            second.value("process_cpu_seconds_total").is_some(),
            cfg!(target_os = "linux"),
            "process metrics on Linux, and only there"
        );
    });
}

/// A new crate, `target/reuse-crate/reuse-<framework>`, made as a reader of
/// docs/reuse.md makes their service.
struct FreshCrate {
    name: String,
    dir: PathBuf,
    /// Cargo's build directory, shared by every fresh crate and kept.
    target: PathBuf,
}

impl FreshCrate {
    /// Writes the crate for `framework` (`axum` or `warp`): the page's
    /// dependencies and that framework's, its `main.rs`, the folder, and
    /// `extra` files copied from this repository to paths in the crate.
    fn create(framework: &str, extra: &[(&Path, &str)]) -> FreshCrate {
        // This test binary is `<target>/debug/deps/reuse-<hash>`.
        let exe = std::env::current_exe().unwrap();
        let reuse = exe.ancestors().nth(3).unwrap().join("reuse-crate");
        let name = format!("reuse-{framework}");
        // A place of its own for each crate, remade on each run rather than a
        // new temporary directory, because cargo keys the outputs of a crate
        // by its path: a new path each run would pile them up.
        let dir = reuse.join(&name);
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("src/metrics")).unwrap();

        // Offline, cargo finds only what this package's own build has
        // downloaded: the framework must be a dependency here too.
        let framework_line = guide_block(&format!("{framework} dependency"));
        let own_manifest = fs::read_to_string(Path::new(ROOT).join("Cargo.toml")).unwrap();
        assert!(
            own_manifest
                .lines()
                .any(|line| line == framework_line.trim_end()),
            "Cargo.toml lacks docs/reuse.md's `{}`",
            framework_line.trim_end()
        );
        // `[workspace]`: a crate of its own, not a member of any workspace
        // around it.
        let manifest = format!(
            "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n\
             [workspace]\n\n{}{framework_line}",
            guide_block("dependencies"),
        );
        fs::write(dir.join("Cargo.toml"), manifest).unwrap();
        fs::write(
            dir.join("src/main.rs"),
            guide_block(&format!("{framework} main.rs")),
        )
        .unwrap();
        for file in fs::read_dir(Path::new(ROOT).join("src/metrics")).unwrap() {
            let file = file.unwrap().path();
            fs::copy(
                &file,
                dir.join("src/metrics").join(file.file_name().unwrap()),
            )
            .unwrap();
        }
        for (from, to) in extra {
            fs::copy(from, dir.join(to)).unwrap();
        }
        fs::copy(Path::new(ROOT).join("Cargo.lock"), dir.join("Cargo.lock")).unwrap();
        FreshCrate {
            name,
            dir,
            target: reuse.join("target"),
        }
    }

    /// Runs `cargo <args>` in the crate, offline, into the shared build
    /// directory.
    fn cargo(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO"))
            .args(args)
            .arg("--offline")
            .arg("--target-dir")
            .arg(&self.target)
            .current_dir(&self.dir)
            .output()
            .expect("run cargo")
    }

    /// Builds the service, and finds that rustc warns about [`WARNINGS`]
    /// and nothing else.
    fn build(&self) {
        let started = Instant::now();
        let output = self.cargo(&["build", "--message-format=json"]);
        eprintln!("{}: built in {:.1?}", self.name, started.elapsed());
        let messages: Vec<Json> = String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .filter(|message: &Json| message["reason"] == "compiler-message")
            .map(|message| message["message"].clone())
            .collect();
        let rendered: Vec<&str> = messages
            .iter()
            .filter_map(|message| message["rendered"].as_str())
            .collect();
        assert!(
            output.status.success(),
            "{} does not build:\n{}\n{}",
            self.name,
            rendered.concat(),
            String::from_utf8_lossy(&output.stderr)
        );
        let mut warnings: Vec<&str> = messages
            .iter()
            .filter(|message| message["level"] == "warning")
            .filter_map(|message| message["message"].as_str())
            .collect();
        warnings.sort_unstable();
        let mut expected = WARNINGS;
        expected.sort_unstable();
        assert_eq!(warnings, expected, "{}:\n{}", self.name, rendered.concat());
    }

    /// Finds the code formatted as `cargo fmt` formats it, the page's as
    /// well as the folder's, so that a reader's copy starts out clean.
    fn check_format(&self) {
        let output = Command::new(env!("CARGO"))
            .args(["fmt", "--check", "--", "--color=never"])
            .current_dir(&self.dir)
            .output()
            .expect("run cargo fmt");
        assert!(
            output.status.success(),
            "{}: the code is not as rustfmt formats it:\n{}",
            self.name,
            String::from_utf8_lossy(&output.stdout)
        );
    }

    /// Runs the unit tests of the copied folder in the crate, and finds that
    /// every one of them passed. In each crate: each framework turns on
    /// tokio features of its own, which could hide one the page forgot.
    fn run_unit_tests(&self) {
        let started = Instant::now();
        let output = self.cargo(&["test"]);
        eprintln!("{}: unit tests in {:.1?}", self.name, started.elapsed());
        let stdout = String::from_utf8_lossy(&output.stdout);
        let expected = format!("test result: ok. {} passed; 0 failed", unit_tests());
        assert!(
            output.status.success() && stdout.contains(&expected),
            "{}: expected `{expected}`:\n{stdout}\n{}",
            self.name,
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// The service's executable, once built.
    fn binary(&self) -> PathBuf {
        let file = format!("{}{}", self.name, std::env::consts::EXE_SUFFIX);
        self.target.join("debug").join(file)
    }
}

/// The number of unit tests in `src/metrics/`.
fn unit_tests() -> usize {
    let sources = fs::read_dir(Path::new(ROOT).join("src/metrics"))
        .unwrap()
        .map(|file| fs::read_to_string(file.unwrap().path()).unwrap());
    let tests_in = |source: String| {
        let attributes = source.lines().map(str::trim);
        attributes
            .filter(|line| matches!(*line, "#[test]" | "#[tokio::test]"))
            .count()
    };
    sources.map(tests_in).sum()
}

/// The fenced block right after the line `<!-- tests/reuse.rs: {name} -->`
/// of docs/reuse.md, without its fences.
fn guide_block(name: &str) -> String {
    let guide = fs::read_to_string(Path::new(ROOT).join("docs/reuse.md")).unwrap();
    let marker = format!("<!-- tests/reuse.rs: {name} -->");
    let mut lines = guide.lines().skip_while(|line| line.trim() != marker);
    assert!(lines.next().is_some(), "docs/reuse.md has no `{marker}`");
    let fence = lines.next().unwrap_or_default();
    assert!(
        fence.starts_with("```"),
        "docs/reuse.md: `{marker}` is not followed by a fenced block"
    );
    let block: Vec<&str> = lines.take_while(|line| !line.starts_with("```")).collect();
    block.join("\n") + "\n"
}
