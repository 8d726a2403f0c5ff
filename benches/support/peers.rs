//! The peer servers in `benches/peers/`: a Cargo project of its own, so
//! that `cargo test` never compiles them, built by the bench that needs
//! them when it starts (release, with its committed `Cargo.lock`, into
//! `target/peers/`), and started like the service.

use std::path::PathBuf;
use std::process::Command;

/// The peers' Cargo project, and where its binaries are built: under the
/// root's `target/`, which git already ignores.
const MANIFEST: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/peers/Cargo.toml");
const TARGET: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/target/peers");

/// Builds the peers, showing Cargo's progress: minutes the first time,
/// seconds after.
pub fn build() -> Result<(), String> {
    println!("building the peers: {MANIFEST}");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--release", "--locked", "--manifest-path"])
        .arg(MANIFEST)
        .arg("--target-dir")
        .arg(TARGET)
        .status()
        .map_err(|err| format!("run cargo to build the peers: {err}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("building the peers failed ({status})"))
    }
}

/// The command that starts the peer built as `binary` (a file in
/// `benches/peers/src/bin/`, without `.rs`), for a
/// [`Server`](super::server::Server) to start;
/// [`build`] must have run.
pub fn command(binary: &str) -> Command {
    let path: PathBuf = [TARGET, "release", binary].iter().collect();
    Command::new(path)
}
