//! The machine the figures are taken on: a description to print beside them,
//! and the open-file limit that bounds how many connections a run can hold.

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

/// Raises the soft `RLIMIT_NOFILE` to the hard limit and returns the limit in
/// force afterwards. Child processes started later inherit it. If raising
/// fails, says so and returns the old limit, so that the caller can skip what
/// does not fit and say why.
pub fn raise_fd_limit() -> libc::rlim_t {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the rlimit we pass and nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        eprintln!(
            "warning: getrlimit(RLIMIT_NOFILE): {}",
            std::io::Error::last_os_error()
        );
        return 0;
    }
    // An unlimited hard limit still cannot exceed the kernel's nr_open.
    let ceiling = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|value| value.trim().parse::<libc::rlim_t>().ok())
        .unwrap_or(limit.rlim_max);
    let wanted = limit.rlim_max.min(ceiling);
    if limit.rlim_cur >= wanted {
        println!(
            "file descriptors: limit {} (already the hard limit)",
            limit.rlim_cur
        );
        return limit.rlim_cur;
    }
    let raised = libc::rlimit {
        rlim_cur: wanted,
        rlim_max: limit.rlim_max,
    };
    // SAFETY: setrlimit only reads the rlimit we pass.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
        println!(
            "file descriptors: could not raise the limit from {} to {wanted}: {}",
            limit.rlim_cur,
            std::io::Error::last_os_error()
        );
        return limit.rlim_cur;
    }
    println!(
        "file descriptors: limit raised from {} to {wanted}",
        limit.rlim_cur
    );
    wanted
}
