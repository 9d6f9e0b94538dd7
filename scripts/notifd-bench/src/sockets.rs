//! Bytes processes received over their TCP connections to one server, from the
//! kernel's per-socket counters (`ss -tinpH`, tcp_info's `bytes_received`): what a
//! notifd read from Redis whatever its version, where a /proc thread's `rchar` misses
//! socket reads (`recv` is not counted there).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::{Command, Stdio};

/// Bytes received by each process's open connections to `server`, by pid; None when
/// `ss` cannot be run. A connection closed since is no longer counted.
pub fn received_from(server: SocketAddr) -> Option<HashMap<u32, u64>> {
    let output = Command::new("ss")
        .args(["-tinpH", "dst", &server.to_string()])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    let text = String::from_utf8_lossy(&output.stdout);
    // Each socket: a line naming its process (`users:(("notifd",pid=42,fd=9))`), then
    // a line of counters; `bytes_received` is left out while it is 0.
    let mut out: HashMap<u32, u64> = HashMap::new();
    let mut owner = None;
    for line in text.lines() {
        if !line.starts_with(char::is_whitespace) {
            // A socket's first line; one of another user's names no process.
            owner = field(line, "pid=").map(|pid| pid as u32);
            if let Some(pid) = owner {
                out.entry(pid).or_default();
            }
        } else if let (Some(pid), Some(bytes)) = (owner, field(line, "bytes_received:")) {
            *out.entry(pid).or_default() += bytes;
        }
    }
    Some(out)
}

/// The number after the first `name` in `line`.
fn field(line: &str, name: &str) -> Option<u64> {
    let rest = &line[line.find(name)? + name.len()..];
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}
