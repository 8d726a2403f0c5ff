//! Build information for the `rust_web_prometheus_example_build_info`
//! metric: the git commit the service is built from and the compiler's
//! version, which the package version alone (the same for every commit)
//! cannot tell apart.
//!
//! `BUILD_REVISION`, when set at build time, wins over git: an image built
//! from a context without `.git` can still say where it came from. Without
//! either, the revision is `unknown`. Git is asked only when one of the files
//! that name the checked-out commit changes, so builds stay incremental.

use std::process::Command;

fn main() {
    println!("cargo::rerun-if-env-changed=BUILD_REVISION");
    let revision = std::env::var("BUILD_REVISION")
        .ok()
        .filter(|revision| !revision.is_empty())
        .or_else(git_revision)
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo::rustc-env=BUILD_REVISION={revision}");

    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    // `rustc 1.95.0 (59807616e 2026-04-14)`: the second word.
    let rustc_version = output(Command::new(rustc).arg("--version"))
        .and_then(|line| line.split_whitespace().nth(1).map(str::to_owned))
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo::rustc-env=BUILD_RUSTC_VERSION={rustc_version}");
}

/// The commit checked out, watching the files whose change means another
/// commit is. Uncommitted changes are not looked for: that would mean
/// watching the index, which git rewrites often, and rebuilding each time.
fn git_revision() -> Option<String> {
    let commit = output(Command::new("git").args(["rev-parse", "--short=12", "HEAD"]))?;
    // HEAD names the branch; the branch's ref, loose or packed, the commit.
    let mut watched = vec!["HEAD".to_owned(), "packed-refs".to_owned()];
    if let Some(branch) = output(Command::new("git").args(["symbolic-ref", "-q", "HEAD"])) {
        watched.push(branch);
    }
    for file in watched {
        // A file that does not exist would make Cargo rerun this every time.
        let path = output(Command::new("git").args(["rev-parse", "--git-path", &file]));
        if let Some(path) = path.filter(|path| std::path::Path::new(path).exists()) {
            println!("cargo::rerun-if-changed={path}");
        }
    }
    Some(commit)
}

/// The first line `command` prints, if it ran and succeeded.
fn output(command: &mut Command) -> Option<String> {
    let output = command.output().ok()?;
    let text = String::from_utf8(output.stdout).ok()?;
    let line = text.lines().next()?.trim().to_owned();
    (output.status.success() && !line.is_empty()).then_some(line)
}
