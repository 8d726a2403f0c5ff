//! The Autobahn TestSuite against the service built with the `echo`
//! feature, which sends every message back, so that the suite judges the
//! data path (messages, fragments, UTF-8, large payloads) as well as the
//! protocol.
//!
//! `tests/autobahn/run.sh` starts the binary, runs the suite's fuzzing
//! client and has `tests/autobahn/summarize.py` judge the report: it exits
//! non-zero unless every case is OK, non-strict or informational, bar the
//! exceptions it lists with their reasons. This test fails on that exit
//! status and shows the summary.
//!
//! It needs pyenv's Python 2.7 and PyPI on first use (run.sh makes the
//! virtualenv), takes a few minutes, and only builds with the feature:
//! `cargo test --release --features echo --test autobahn` (in `.ci/run`).

use std::path::Path;
use std::process::Command;

#[test]
fn autobahn_testsuite_passes_every_case() {
    let root = env!("CARGO_MANIFEST_DIR");
    let report = Path::new(env!("CARGO_TARGET_TMPDIR")).join("autobahn-report");
    let run = Command::new("bash")
        .arg(Path::new(root).join("tests/autobahn/run.sh"))
        .arg(env!("CARGO_BIN_EXE_rust-web-prometheus-example"))
        .env("AUTOBAHN_OUT", &report)
        .current_dir(root)
        .output()
        .expect("bash runs tests/autobahn/run.sh");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        run.status.success(),
        "the Autobahn TestSuite failed ({}; report in {}):\n{stdout}{stderr}",
        run.status,
        report.display(),
    );
    println!("{stdout}");
}
