//! Process-wide tuning done once at start: the file-descriptor limit and the kernel's
//! futex hash. Nothing here is per connection.

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
