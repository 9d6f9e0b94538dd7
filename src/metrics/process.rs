//! The standard `process_*` family (Prometheus' client conventions), read from
//! /proc at scrape time: descriptors and threads are notifd's scaling limits (one
//! of each per WebSocket), so an operator watches them next to its own metrics.
//!
//! Everything here comes from files the kernel controls, so every read is bounded
//! and every field is optional: a value that cannot be read or parsed is left out
//! of the scrape, never guessed and never a panic. The limit itself, the soft
//! `RLIMIT_NOFILE`, is the one `process` computes the connection caps from.

use std::fmt::Write;
use std::io::{BufRead, BufReader, Read};
use std::sync::OnceLock;

/// Longest /proc/self/stat read: one line, a few hundred bytes on any kernel.
const MAX_STAT: u64 = 4 * 1024;
/// Longest prefix of /proc/stat searched for `btime`: per-CPU and interrupt lines
/// come first and grow with the host, but stay far below this.
const MAX_PROC_STAT: u64 = 4 * 1024 * 1024;

/// One sample of the family: its name, type, help and value, when known.
struct Sample {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    value: Option<f64>,
}

/// Appends the family to a scrape: the samples that could be read, each with its
/// `# HELP` and `# TYPE`.
pub fn render(out: &mut String) {
    for sample in samples() {
        if let Some(value) = sample.value {
            super::header(out, sample.name, sample.kind, sample.help);
            let _ = writeln!(out, "{} {value}", sample.name);
        }
    }
}

/// Reads the family now.
fn samples() -> [Sample; 7] {
    let stat =
        read_bounded("/proc/self/stat", MAX_STAT).map_or_else(Stat::default, |s| parse_stat(&s));
    let ticks = clock_ticks();
    let page = sysconf(libc::_SC_PAGESIZE);
    [
        Sample {
            name: "process_cpu_seconds_total",
            kind: "counter",
            help: "User and system CPU time spent, in seconds.",
            value: per(stat.cpu_ticks, ticks),
        },
        Sample {
            name: "process_open_fds",
            kind: "gauge",
            help: "Open file descriptors.",
            value: crate::process::open_descriptors().map(|n| n as f64),
        },
        Sample {
            name: "process_max_fds",
            kind: "gauge",
            help: "Soft limit on open file descriptors (RLIMIT_NOFILE).",
            value: crate::process::rlimit(libc::RLIMIT_NOFILE).map(|n| n as f64),
        },
        Sample {
            name: "process_virtual_memory_bytes",
            kind: "gauge",
            help: "Virtual memory size in bytes.",
            value: stat.virtual_bytes.map(|n| n as f64),
        },
        Sample {
            name: "process_resident_memory_bytes",
            kind: "gauge",
            help: "Resident memory size in bytes.",
            value: stat
                .resident_pages
                .zip(page)
                .map(|(n, p)| n as f64 * p as f64),
        },
        Sample {
            name: "process_start_time_seconds",
            kind: "gauge",
            help: "Start time of the process since the Unix epoch, in seconds.",
            value: start_time(stat.start_ticks, ticks),
        },
        Sample {
            name: "process_threads",
            kind: "gauge",
            help: "Threads of the process (one per WebSocket, plus a few dozen).",
            value: stat.threads.map(|n| n as f64),
        },
    ]
}

/// The fields of /proc/self/stat the family needs.
#[derive(Debug, Default, PartialEq)]
struct Stat {
    /// utime + stime, in clock ticks.
    cpu_ticks: Option<u64>,
    threads: Option<u64>,
    /// Since boot, in clock ticks.
    start_ticks: Option<u64>,
    virtual_bytes: Option<u64>,
    resident_pages: Option<u64>,
}

/// Parses /proc/self/stat (proc(5)). The command name, field 2, is in parentheses
/// and may itself hold spaces and parentheses, so the fields are counted from the
/// last `)`: field N is then at index N - 3.
fn parse_stat(text: &str) -> Stat {
    let Some(cut) = text.rfind(')') else {
        return Stat::default();
    };
    let fields: Vec<&str> = text[cut + 1..].split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
    Stat {
        // Checked: the numbers are the kernel's, and an overflow must not panic.
        cpu_ticks: field(14)
            .zip(field(15))
            .and_then(|(user, system)| user.checked_add(system)),
        threads: field(20),
        start_ticks: field(22),
        virtual_bytes: field(23),
        resident_pages: field(24),
    }
}

/// The process's start, in seconds since the epoch: the host's boot time plus the
/// start ticks. Both are fixed for the life of the process, so the first good
/// reading is kept and /proc/stat is not searched on every scrape.
fn start_time(start_ticks: Option<u64>, ticks: Option<u64>) -> Option<f64> {
    static START: OnceLock<f64> = OnceLock::new();
    if let Some(start) = START.get() {
        return Some(*start);
    }
    let start = boot_time()? as f64 + per(start_ticks, ticks)?;
    Some(*START.get_or_init(|| start))
}

/// `btime` of /proc/stat: the boot time, in seconds since the epoch.
fn boot_time() -> Option<u64> {
    let file = std::fs::File::open("/proc/stat").ok()?;
    BufReader::new(file.take(MAX_PROC_STAT))
        .lines()
        .map_while(Result::ok)
        .find_map(|line| line.strip_prefix("btime ")?.trim().parse().ok())
}

/// `count` ticks in seconds.
fn per(count: Option<u64>, ticks: Option<u64>) -> Option<f64> {
    Some(count? as f64 / ticks? as f64)
}

fn clock_ticks() -> Option<u64> {
    sysconf(libc::_SC_CLK_TCK)
}

/// A positive `sysconf` value; `None` when the system does not say.
fn sysconf(name: libc::c_int) -> Option<u64> {
    // SAFETY: sysconf only reads its integer argument.
    let value = unsafe { libc::sysconf(name) };
    u64::try_from(value).ok().filter(|&v| v > 0)
}

/// At most `max` bytes of a file, as text; `None` when unreadable.
fn read_bounded(path: &str, max: u64) -> Option<String> {
    let mut text = String::new();
    std::fs::File::open(path)
        .ok()?
        .take(max)
        .read_to_string(&mut text)
        .ok()?;
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_counted_from_the_last_parenthesis_of_the_command_name() {
        let line = "42 (a) (b) c) S 1 42 42 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 \
                    9 0 12345 67890 12 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0";
        let stat = parse_stat(line);
        assert_eq!(
            stat,
            Stat {
                cpu_ticks: Some(10),
                threads: Some(9),
                start_ticks: Some(12345),
                virtual_bytes: Some(67890),
                resident_pages: Some(12),
            }
        );
    }

    #[test]
    fn a_truncated_or_garbled_stat_leaves_fields_out() {
        assert_eq!(parse_stat("no parenthesis here"), Stat::default());
        let cut = parse_stat("42 (notifd) S 1 42 42 0 -1 4194560 100 0 0 0 7 x 0 0 20 0 9");
        assert_eq!(cut.cpu_ticks, None, "stime is not a number");
        assert_eq!(cut.threads, Some(9));
        assert_eq!(cut.start_ticks, None, "the line ends before it");
    }

    #[test]
    fn the_live_process_reads_back() {
        let mut out = String::new();
        render(&mut out);
        for name in [
            "process_open_fds",
            "process_threads",
            "process_start_time_seconds",
        ] {
            assert!(
                out.contains(&format!("\n{name} ")),
                "{name} missing:\n{out}"
            );
        }
    }
}
