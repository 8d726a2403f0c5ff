//! Start-up of the real binary: `--help`, and how bad settings and taken
//! addresses are refused.

mod common;

use common::{TestServer, run_to_exit};

#[test]
fn help_lists_every_setting() {
    let (status, stdout, _) = run_to_exit(&[], &["--help"]);

    assert!(status.success());
    for setting in [
        "LISTEN_ADDR",
        "COLLECT_INTERVAL_MS",
        "WS_HEARTBEAT_SECS",
        "WS_MAX_MESSAGE_BYTES",
        "SHUTDOWN_GRACE_SECS",
        "HTTP_MAX_CONNECTIONS",
        "HTTP_IDLE_TIMEOUT_SECS",
        "WS_MAX_CLIENTS",
        "METRICS_ADDR",
        "RUST_LOG",
        "LOG_FORMAT",
        "SHUTDOWN_DRAIN_SECS",
    ] {
        assert!(
            stdout.contains(setting),
            "--help mentions {setting}:\n{stdout}"
        );
    }
}

#[test]
fn a_bad_setting_is_one_line_naming_it_and_a_non_zero_exit() {
    let cases = [
        ("LISTEN_ADDR", "not-an-address"),
        ("COLLECT_INTERVAL_MS", "soon"),
        ("COLLECT_INTERVAL_MS", "-1"),
        ("WS_HEARTBEAT_SECS", "0"),
        ("WS_MAX_MESSAGE_BYTES", "64k"),
        ("SHUTDOWN_GRACE_SECS", "forever"),
        ("HTTP_MAX_CONNECTIONS", "0"),
        ("HTTP_IDLE_TIMEOUT_SECS", "never"),
        ("WS_MAX_CLIENTS", "-3"),
        ("METRICS_ADDR", "localhost:9090"),
        ("LOG_FORMAT", "xml"),
        ("RUST_LOG", "rust_web_prometheus_example=chatty"),
        ("RUST_LOG", "info,[{"),
        ("SHUTDOWN_DRAIN_SECS", "a while"),
    ];
    for (variable, value) in cases {
        let (status, stdout, stderr) = run_to_exit(&[(variable, value)], &[]);

        assert!(!status.success(), "{variable}={value} must fail");
        assert_eq!(
            status.code(),
            Some(64),
            "{variable}={value}: usage exit code"
        );
        assert_eq!(stderr.lines().count(), 1, "one line on stderr: {stderr:?}");
        assert!(
            stderr.contains(variable) && stderr.contains(value),
            "stderr names {variable} and {value:?}: {stderr:?}"
        );
        assert!(!stderr.contains("panicked"), "no panic: {stderr:?}");
        assert!(!stdout.contains("Started"), "did not start: {stdout:?}");
    }
}

#[test]
fn an_unknown_argument_is_refused() {
    let (status, _, stderr) = run_to_exit(&[], &["--port", "80"]);

    assert_eq!(status.code(), Some(64));
    assert_eq!(stderr.lines().count(), 1, "{stderr:?}");
}

#[test]
fn a_taken_address_is_one_line_naming_it_and_a_non_zero_exit() {
    let first = TestServer::start();
    let taken = first.addr.to_string();

    let (status, _, stderr) = run_to_exit(&[("LISTEN_ADDR", &taken)], &[]);

    assert!(!status.success());
    assert_eq!(stderr.lines().count(), 1, "one line on stderr: {stderr:?}");
    assert!(stderr.contains(&taken), "stderr names {taken}: {stderr:?}");
    assert!(!stderr.contains("panicked"), "no panic: {stderr:?}");
}

#[test]
fn port_zero_binds_a_free_port_and_reports_it() {
    let server = TestServer::start();

    assert_ne!(server.addr.port(), 0);
    assert!(std::net::TcpStream::connect(server.addr).is_ok());
}
