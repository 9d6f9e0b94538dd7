//! Process-wide tuning done once at start (the file-descriptor limit, the kernel's
//! futex hash), and the kernel limits the connection caps are computed from
//! (`limits`). Nothing here is per connection.

/// Raises the soft file-descriptor limit to the hard limit: one WebSocket costs one
/// descriptor, and the default soft limit (often 1024) would cap connections long
/// before memory does.
pub fn raise_fd_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// The current soft file-descriptor limit.
pub fn fd_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
        limit.rlim_cur
    } else {
        1024
    }
}

/// Gives this process a private futex hash large enough for a thread per connection.
///
/// Linux 6.17+ sizes the hash from the CPU count (16 buckets on 2 cores); with 15,000
/// threads asleep on channels every wake-up walked about a thousand waiters, and
/// `futex_wake` took 80% of the CPU. Older kernels answer EINVAL, which is fine.
pub fn enlarge_futex_hash() {
    const PR_FUTEX_HASH: libc::c_int = 78;
    const PR_FUTEX_HASH_SET_SLOTS: libc::c_ulong = 1;
    const SLOTS: libc::c_ulong = 16384;
    // SAFETY: prctl with integer arguments only; an unknown option returns EINVAL.
    unsafe {
        libc::prctl(
            PR_FUTEX_HASH,
            PR_FUTEX_HASH_SET_SLOTS,
            SLOTS,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        );
    }
}

/// Lets the kernel fire this thread's timers up to `TIMER_SLACK` late, so the timers
/// of thousands of connection threads (heartbeats, idle and expiry deadlines, none of
/// which needs millisecond precision) share interrupts instead of each costing one.
/// Notification delivery never waits on a timer, so it is unaffected.
pub fn relax_timers() {
    const TIMER_SLACK_NS: libc::c_ulong = 20_000_000;
    // SAFETY: prctl with integer arguments; affects only the calling thread.
    unsafe {
        libc::prctl(
            libc::PR_SET_TIMERSLACK,
            TIMER_SLACK_NS,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        );
    }
}

/// How much more of one kernel resource this process may take, and which limit says so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Headroom {
    /// Units left (descriptors, threads or memory maps) at the time of `limits()`.
    pub available: u64,
    /// The limit that leaves the least, as an operator would look it up
    /// (`RLIMIT_NOFILE`, `kernel.pid_max`, `vm.max_map_count`, …).
    pub limit: &'static str,
}

/// What the kernel lets this process add: both connection caps (WebSocket and REST)
/// are computed from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessLimits {
    /// The soft `RLIMIT_NOFILE` less the descriptors open now.
    pub descriptors: Headroom,
    /// The least of `RLIMIT_NPROC` (less this process's threads: under systemd's
    /// `DynamicUser` the user runs nothing else), `kernel.threads-max` and
    /// `kernel.pid_max` (less every task on the host) and the cgroup's `pids.max`
    /// (less `pids.current`, at every level that sets one).
    pub threads: Headroom,
    /// `vm.max_map_count` less this process's memory maps now.
    pub maps: Headroom,
}

/// Reads the limits now (a few small files under /proc and /sys).
pub fn limits() -> ProcessLimits {
    let threads_here = status_field("Threads:").unwrap_or(1);
    let tasks_on_host = tasks_on_host().unwrap_or(threads_here);
    let mut threads = vec![
        left("RLIMIT_NPROC", rlimit(libc::RLIMIT_NPROC), threads_here),
        left(
            "kernel.threads-max",
            read_number("/proc/sys/kernel/threads-max"),
            tasks_on_host,
        ),
        left(
            "kernel.pid_max",
            read_number("/proc/sys/kernel/pid_max"),
            tasks_on_host,
        ),
    ];
    threads.extend(cgroup_pids_headroom());
    let maps_here = std::fs::read_to_string("/proc/self/maps")
        .map(|maps| maps.lines().count() as u64)
        .ok();
    ProcessLimits {
        descriptors: left(
            "RLIMIT_NOFILE",
            Some(fd_limit()),
            open_descriptors().unwrap_or(0),
        ),
        threads: least(threads),
        maps: left(
            "vm.max_map_count",
            read_number("/proc/sys/vm/max_map_count"),
            maps_here.unwrap_or(0),
        ),
    }
}

/// The headroom under `limit` with `used` taken; unlimited (or unreadable) is
/// `u64::MAX`, so it never binds.
fn left(name: &'static str, limit: Option<u64>, used: u64) -> Headroom {
    Headroom {
        available: limit.map_or(u64::MAX, |limit| limit.saturating_sub(used)),
        limit: name,
    }
}

fn least(headrooms: Vec<Headroom>) -> Headroom {
    headrooms
        .into_iter()
        .min_by_key(|h| h.available)
        .unwrap_or(Headroom {
            available: u64::MAX,
            limit: "none",
        })
}

/// A soft resource limit; `None` when unlimited or unreadable.
pub(crate) fn rlimit(resource: libc::__rlimit_resource_t) -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct we pass.
    let ok = unsafe { libc::getrlimit(resource, &mut limit) } == 0;
    (ok && limit.rlim_cur != libc::RLIM_INFINITY).then_some(limit.rlim_cur)
}

/// A file holding one number (`max` reads as unlimited: `None`).
fn read_number(path: &str) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// A `Name:  number` line of /proc/self/status.
fn status_field(name: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with(name))?;
    line[name.len()..].trim().parse().ok()
}

/// Every task (thread) on the host: the fourth field of /proc/loadavg, `running/total`.
fn tasks_on_host() -> Option<u64> {
    let loadavg = std::fs::read_to_string("/proc/loadavg").ok()?;
    let (_, total) = loadavg.split_whitespace().nth(3)?.split_once('/')?;
    total.parse().ok()
}

/// Descriptors open now (the directory's own one included); `None` when /proc
/// cannot be read.
pub(crate) fn open_descriptors() -> Option<u64> {
    std::fs::read_dir("/proc/self/fd")
        .ok()
        .map(|dir| dir.count() as u64)
}

/// `pids.max - pids.current` at each level of this process's cgroup that sets a
/// maximum (cgroup v2, or v1's `pids` hierarchy); levels that cannot be read are
/// skipped.
fn cgroup_pids_headroom() -> Vec<Headroom> {
    let Ok(cgroups) = std::fs::read_to_string("/proc/self/cgroup") else {
        return Vec::new();
    };
    let mut headrooms = Vec::new();
    for line in cgroups.lines() {
        let mut fields = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let root = match controllers {
            "" => "/sys/fs/cgroup".to_string(),
            list if list.split(',').any(|c| c == "pids") => "/sys/fs/cgroup/pids".to_string(),
            _ => continue,
        };
        // This level and each one above it: a parent's maximum binds its children too.
        let mut dir = format!("{root}{}", path.trim_end_matches('/'));
        while dir.len() >= root.len() {
            if let (Some(max), Some(current)) = (
                read_number(&format!("{dir}/pids.max")),
                read_number(&format!("{dir}/pids.current")),
            ) {
                headrooms.push(left("cgroup pids.max", Some(max), current));
            }
            match dir.rfind('/') {
                Some(cut) => dir.truncate(cut),
                None => break,
            }
        }
    }
    headrooms
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limits_are_read_and_name_what_binds() {
        let limits = limits();
        let max_maps = read_number("/proc/sys/vm/max_map_count").expect("Linux");
        let maps_now = std::fs::read_to_string("/proc/self/maps")
            .expect("maps")
            .lines()
            .count() as u64;
        assert!(limits.maps.available < max_maps, "{limits:?}");
        // Threads and maps of this test process move a little while it runs.
        assert!(
            limits.maps.available + maps_now >= max_maps - 64,
            "{limits:?}"
        );
        assert!(limits.descriptors.available < fd_limit(), "{limits:?}");
        assert!(limits.descriptors.available > 0, "{limits:?}");
        let pid_max = read_number("/proc/sys/kernel/pid_max").expect("Linux");
        assert!(limits.threads.available < pid_max, "{limits:?}");
        assert_eq!(limits.maps.limit, "vm.max_map_count");
    }

    #[test]
    fn the_least_headroom_binds_and_unlimited_never_does() {
        let unlimited = left("unlimited", None, 7);
        let pids = left("cgroup pids.max", Some(100), 30);
        assert_eq!(unlimited.available, u64::MAX);
        assert_eq!(least(vec![unlimited, pids]), pids);
        assert_eq!(left("full", Some(5), 9).available, 0);
    }
}
