//! The machine the figures are taken on: a description and the date to
//! print beside them, and the open-file limit that bounds how many
//! connections a run can hold.

/// Cores this process may run on; at least 1, so it can size a thread pool.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// The `model name` of the first CPU in `/proc/cpuinfo`.
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|line| line.strip_prefix("model name")?.split_once(':'))
                .map(|(_, model)| model.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned())
}

/// Prints the machine the figures belong to.
pub fn print_machine() {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!(
        "machine: {} cores, {}, Linux {}",
        cores(),
        cpu_model(),
        kernel.trim()
    );
}

/// Prints when the figures are taken, in UTC, as `date` tells it.
pub fn print_date() {
    let date = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .ok()
        .and_then(|output| String::from_utf8(output.stdout).ok())
        .unwrap_or_default();
    println!("date: {}", date.trim());
}

/// Descriptors a server process, or this one, needs beyond one per
/// connection it holds: stdio, the listener, epoll, the runtime's wakers,
/// the `/metrics` polls.
pub const FD_MARGIN: usize = 64;

/// Raises the soft open-file limit to the hard one, as the service itself
/// does, says what it is, and returns it. Child processes started later
/// inherit it.
pub fn raise_fd_limit() -> u64 {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => {
            println!("file descriptors: limit {limit}");
            limit
        }
        Err(err) => {
            println!("file descriptors: could not raise the limit: {err}");
            0
        }
    }
}
