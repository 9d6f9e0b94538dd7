//! Readings from /proc: a process's CPU time, RSS, threads and descriptors; CPU per
//! thread name; CPU of other processes by name (PostgreSQL, Redis); the machine's CPU.

use std::collections::HashMap;
use std::fs;

/// Clock ticks per second of /proc CPU times.
pub fn clk_tck() -> f64 {
    // SAFETY: sysconf reads a constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

/// Raises the soft descriptor limit to the hard one; returns the soft limit now.
pub fn raise_fd_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            if limit.rlim_cur < limit.rlim_max {
                limit.rlim_cur = limit.rlim_max;
                libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
            }
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        }
    }
    limit.rlim_cur
}

/// One reading of a process.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sample {
    /// utime + stime, in clock ticks (all threads, exited ones included).
    pub cpu_ticks: u64,
    pub rss_kib: u64,
    pub threads: u64,
}

pub fn sample(pid: u32) -> Result<Sample, String> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| format!("cannot read /proc/{pid}/stat (did notifd exit?): {e}"))?;
    let cpu_ticks = stat_cpu_ticks(&stat).ok_or("cannot parse /proc/PID/stat")?;
    let status = fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("cannot read /proc/{pid}/status: {e}"))?;
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    Ok(Sample {
        cpu_ticks,
        rss_kib: field("VmRSS:"),
        threads: field("Threads:"),
    })
}

/// The path of the binary a process runs.
pub fn exe(pid: u32) -> Option<String> {
    fs::read_link(format!("/proc/{pid}/exe"))
        .ok()
        .map(|p| p.display().to_string())
}

pub fn alive(pid: u32) -> bool {
    fs::metadata(format!("/proc/{pid}")).is_ok()
}

/// Open descriptors of a process.
pub fn fds(pid: u32) -> u64 {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count() as u64)
        .unwrap_or(0)
}

/// (comm, utime + stime) from the text of a /proc stat file.
fn parse_stat(stat: &str) -> Option<(&str, u64)> {
    // comm is in parentheses and may hold spaces or parentheses: split at the last ')'.
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = &stat[open + 1..close];
    let rest: Vec<&str> = stat[close + 1..].split_whitespace().collect();
    // rest[0] is field 3 (state); utime is field 14, stime 15.
    let utime: u64 = rest.get(11)?.parse().ok()?;
    let stime: u64 = rest.get(12)?.parse().ok()?;
    Some((comm, utime + stime))
}

fn stat_cpu_ticks(stat: &str) -> Option<u64> {
    parse_stat(stat).map(|(_, t)| t)
}

/// CPU time per thread of a process: tid -> (name, ns on CPU). From schedstat (exact
/// ns): /proc tick counts round each of thousands of mostly idle threads down to 0.
pub fn threads_cpu(pid: u32) -> HashMap<u32, (String, u64)> {
    let mut out = HashMap::new();
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(tid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let path = entry.path();
        let ns = fs::read_to_string(path.join("schedstat"))
            .ok()
            .and_then(|s| {
                s.split_whitespace()
                    .next()
                    .and_then(|n| n.parse::<u64>().ok())
            });
        let name = fs::read_to_string(path.join("comm")).ok();
        if let (Some(ns), Some(name)) = (ns, name) {
            out.insert(tid, (name.trim_end().to_string(), ns));
        }
    }
    out
}

/// A thread name without its trailing number: `notifd-http-3` -> `notifd-http`.
pub fn thread_group(name: &str) -> String {
    let trimmed = name.trim_end_matches(|c: char| c.is_ascii_digit());
    let trimmed = trimmed.trim_end_matches(['-', '_', ' ']);
    if trimmed.is_empty() {
        name.to_string()
    } else {
        trimmed.to_string()
    }
}

/// CPU seconds per thread group between two `threads_cpu` readings. Threads that
/// exited in between are only in the process total: the rest of it is reported as
/// `(exited threads)`.
pub fn thread_groups_delta(
    before: &HashMap<u32, (String, u64)>,
    after: &HashMap<u32, (String, u64)>,
    process_total_seconds: f64,
) -> Vec<(String, f64)> {
    let mut groups: HashMap<String, u64> = HashMap::new();
    let mut counted = 0u64;
    for (tid, (name, ns)) in after {
        let start = before.get(tid).map(|(_, t)| *t).unwrap_or(0);
        let delta = ns.saturating_sub(start);
        counted += delta;
        *groups.entry(thread_group(name)).or_default() += delta;
    }
    let mut list: Vec<(String, f64)> = groups
        .into_iter()
        .filter(|(_, t)| *t > 0)
        .map(|(n, t)| (n, t as f64 / 1e9))
        .collect();
    // Tick-based process totals are coarse: ignore a remainder under 1% of it.
    let rest = process_total_seconds - counted as f64 / 1e9;
    if rest > 0.01 * process_total_seconds && rest > 0.02 {
        list.push(("(exited threads)".into(), rest));
    }
    list.sort_by(|a, b| b.1.total_cmp(&a.1));
    list
}

/// CPU ticks of every process whose name is one of `names`, by pid: (name, ticks).
pub fn processes_cpu(names: &[&str]) -> HashMap<u32, (String, u64)> {
    let mut out = HashMap::new();
    let Ok(dir) = fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        if let Some((comm, ticks)) = parse_stat(&stat) {
            if names.contains(&comm) {
                out.insert(pid, (comm.to_string(), ticks));
            }
        }
    }
    out
}

/// CPU seconds per process name between two `processes_cpu` readings.
pub fn processes_delta(
    before: &HashMap<u32, (String, u64)>,
    after: &HashMap<u32, (String, u64)>,
) -> HashMap<String, f64> {
    let mut out: HashMap<String, f64> = HashMap::new();
    let tck = clk_tck();
    for (pid, (name, ticks)) in after {
        let start = before.get(pid).map(|(_, t)| *t).unwrap_or(0);
        *out.entry(name.clone()).or_default() += ticks.saturating_sub(start) as f64 / tck;
    }
    out
}

/// The machine's CPU from /proc/stat: (busy ticks, total ticks), all cores.
pub fn machine_cpu() -> (u64, u64) {
    let Ok(text) = fs::read_to_string("/proc/stat") else {
        return (0, 0);
    };
    let Some(line) = text.lines().next() else {
        return (0, 0);
    };
    let values: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal guest guest_nice
    let total: u64 = values.iter().take(8).sum();
    let idle = values.get(3).copied().unwrap_or(0) + values.get(4).copied().unwrap_or(0);
    (total.saturating_sub(idle), total)
}

/// This process's own CPU ticks.
pub fn self_cpu_ticks() -> u64 {
    fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| stat_cpu_ticks(&s))
        .unwrap_or(0)
}

/// Number of online CPUs.
pub fn cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// Microseconds during which every task on the machine waited for I/O (the kernel's
/// pressure stall information, "full" line), if the kernel reports it.
pub fn io_stall_us() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/pressure/io").ok()?;
    let full = text.lines().find(|line| line.starts_with("full"))?;
    full.split_whitespace()
        .find_map(|field| field.strip_prefix("total="))?
        .parse()
        .ok()
}

/// A snapshot of everything that shares the machine during a timed window.
pub struct Window {
    pid: u32,
    at: std::time::Instant,
    notifd: Sample,
    threads: HashMap<u32, (String, u64)>,
    others: HashMap<u32, (String, u64)>,
    machine: (u64, u64),
    me: u64,
    io_stall_us: Option<u64>,
}

/// Processes whose CPU is reported beside notifd's.
const OTHERS: &[&str] = &["postgres", "redis-server"];

impl Window {
    pub fn start(pid: u32) -> Result<Window, String> {
        Ok(Window {
            pid,
            at: std::time::Instant::now(),
            notifd: sample(pid)?,
            threads: threads_cpu(pid),
            others: processes_cpu(OTHERS),
            machine: machine_cpu(),
            me: self_cpu_ticks(),
            io_stall_us: io_stall_us(),
        })
    }

    /// Ends the window: CPU use of everyone over it.
    pub fn finish(&self) -> Result<WindowCpu, String> {
        let seconds = self.at.elapsed().as_secs_f64();
        let notifd = sample(self.pid)?;
        let threads = threads_cpu(self.pid);
        let others = processes_cpu(OTHERS);
        let machine = machine_cpu();
        let me = self_cpu_ticks();
        let tck = clk_tck();
        let notifd_ticks = notifd.cpu_ticks.saturating_sub(self.notifd.cpu_ticks);
        let others = processes_delta(&self.others, &others);
        let busy = machine.0.saturating_sub(self.machine.0) as f64;
        let total = machine.1.saturating_sub(self.machine.1) as f64;
        Ok(WindowCpu {
            seconds,
            notifd_cpu_seconds: notifd_ticks as f64 / tck,
            notifd_threads: thread_groups_delta(&self.threads, &threads, notifd_ticks as f64 / tck),
            postgres_cpu_seconds: others.get("postgres").copied().unwrap_or(0.0),
            redis_cpu_seconds: others.get("redis-server").copied().unwrap_or(0.0),
            generator_cpu_seconds: me.saturating_sub(self.me) as f64 / tck,
            machine_busy_pct: if total > 0.0 {
                busy / total * 100.0
            } else {
                0.0
            },
            io_stall_pct: match (self.io_stall_us, io_stall_us()) {
                (Some(before), Some(after)) => {
                    Some(after.saturating_sub(before) as f64 / (seconds * 1e6) * 100.0)
                }
                _ => None,
            },
            after: notifd,
        })
    }
}

pub struct WindowCpu {
    pub seconds: f64,
    pub notifd_cpu_seconds: f64,
    pub notifd_threads: Vec<(String, f64)>,
    pub postgres_cpu_seconds: f64,
    pub redis_cpu_seconds: f64,
    pub generator_cpu_seconds: f64,
    /// Busy share of all cores, percent.
    pub machine_busy_pct: f64,
    /// Share of the window in which all tasks stalled on I/O (PostgreSQL's commits
    /// wait on the disk), percent.
    pub io_stall_pct: Option<f64>,
    pub after: Sample,
}

impl WindowCpu {
    /// CPU of notifd in % of one core.
    pub fn notifd_pct(&self) -> f64 {
        self.notifd_cpu_seconds / self.seconds.max(1e-9) * 100.0
    }

    pub fn to_json(&self) -> serde_json::Value {
        let per_core = |s: f64| round(s / self.seconds.max(1e-9) * 100.0, 1);
        serde_json::json!({
            "seconds": round(self.seconds, 2),
            "notifd_cpu_pct_of_core": per_core(self.notifd_cpu_seconds),
            "postgres_cpu_pct_of_core": per_core(self.postgres_cpu_seconds),
            "redis_cpu_pct_of_core": per_core(self.redis_cpu_seconds),
            "generator_cpu_pct_of_core": per_core(self.generator_cpu_seconds),
            "machine_busy_pct_of_all_cores": round(self.machine_busy_pct, 1),
            // Busy CPU not spent by notifd, PostgreSQL, Redis or the generator: anything
            // else running on the machine (a build, another test) disturbs the figures.
            "other_cpu_pct_of_core": round(
                (self.machine_busy_pct * cpus() as f64
                    - per_core(self.notifd_cpu_seconds)
                    - per_core(self.postgres_cpu_seconds)
                    - per_core(self.redis_cpu_seconds)
                    - per_core(self.generator_cpu_seconds))
                .max(0.0),
                1,
            ),
            "io_stall_pct": self.io_stall_pct.map(|p| round(p, 2)),
            "cores": cpus(),
            "notifd_threads_pct_of_core": self.notifd_threads.iter()
                .map(|(n, s)| serde_json::json!({"threads": n, "pct": per_core(*s)}))
                .collect::<Vec<_>>(),
        })
    }
}

pub fn round(value: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (value * f).round() / f
}
