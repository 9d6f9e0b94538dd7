//! The scripts' service checks (`scripts/services`, which `scripts/run`, `scripts/test`
//! and `scripts/install` share) run unattended: with stdin closed and a PostgreSQL or
//! Redis that is not there, they fail within seconds with a message naming host:port
//! and the cause, and install or start nothing, instead of hanging or prompting.

use std::io::Read;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
/// Far above the few seconds a failing check takes (the connect timeouts are 2 to
/// 5 s), far below "hangs".
const DEADLINE: Duration = Duration::from_secs(30);

/// What `ensure_services` did: its exit code (None: killed at the deadline), its
/// stderr, and how long it ran.
struct Outcome {
    code: Option<i32>,
    stderr: String,
    took: Duration,
}

/// Sources scripts/services and runs `ensure_services` with `env`, stdin closed, in
/// a process group of its own so that a hang is killed whole at the deadline.
fn ensure_services(env: &[(&str, &str)]) -> Outcome {
    let mut command = Command::new("bash");
    command
        .args(["-c", ". scripts/services && ensure_services"])
        .current_dir(ROOT)
        .env_remove("NOTIFD_DATABASE_URL")
        .env_remove("NOTIFD_REDIS_URL")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0);
    let started = Instant::now();
    let mut child = command.spawn().expect("bash runs");
    let mut stderr = child.stderr.take().expect("piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        let _ = tx.send(text);
    });
    // stderr closes when the script and everything it started are gone.
    let stderr = match rx.recv_timeout(DEADLINE) {
        Ok(text) => text,
        Err(_) => {
            // SAFETY: kill(2) on the child's own process group; no memory involved.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            rx.recv().unwrap_or_default()
        }
    };
    let status = child.wait().expect("wait");
    Outcome {
        code: status.code(),
        stderr,
        took: started.elapsed(),
    }
}

/// A port on 127.0.0.1 that nothing listens on (bound, then released).
fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

fn assert_fails_fast(outcome: &Outcome, names: &str, cause: &str) {
    assert!(
        outcome.took < Duration::from_secs(20),
        "took {:?} (killed at the deadline: {}); stderr: {}",
        outcome.took,
        outcome.code.is_none(),
        outcome.stderr
    );
    assert!(
        matches!(outcome.code, Some(code) if code != 0),
        "exit {:?}; stderr: {}",
        outcome.code,
        outcome.stderr
    );
    assert!(
        outcome.stderr.contains(names),
        "stderr does not name {names}: {}",
        outcome.stderr
    );
    assert!(
        outcome.stderr.contains(cause),
        "stderr does not give the cause {cause:?}: {}",
        outcome.stderr
    );
    assert!(
        outcome.stderr.contains("fix:"),
        "stderr says no fix: {}",
        outcome.stderr
    );
    // An address the caller chose is only checked, never served by us.
    for action in ["installing", "starting"] {
        assert!(
            !outcome.stderr.contains(action),
            "it tried {action}: {}",
            outcome.stderr
        );
    }
}

#[test]
fn a_refused_postgres_port_fails_at_once_naming_host_port_and_cause() {
    let port = closed_port();
    let url = format!("postgres://postgres@127.0.0.1:{port}/notifd");
    let outcome = ensure_services(&[("NOTIFD_DATABASE_URL", &url)]);
    assert_fails_fast(
        &outcome,
        &format!("PostgreSQL at 127.0.0.1:{port}"),
        "Connection refused",
    );
}

#[test]
fn a_postgres_that_never_answers_fails_within_the_connect_timeout() {
    // Listening but never accepting: the kernel completes the TCP handshake and
    // then nothing is said, as with a hung server or a half-open tunnel.
    let silent = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = silent.local_addr().expect("addr").port();
    let url = format!("postgres://postgres@127.0.0.1:{port}/notifd");
    let outcome = ensure_services(&[("NOTIFD_DATABASE_URL", &url)]);
    assert_fails_fast(
        &outcome,
        &format!("PostgreSQL at 127.0.0.1:{port}"),
        "timeout expired",
    );
    drop(silent);
}

#[test]
fn a_refused_redis_port_fails_at_once_naming_host_port_and_cause() {
    // PostgreSQL is the real one the suite uses, so the check gets to Redis.
    let database = std::env::var("NOTIFD_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let port = closed_port();
    let url = format!("redis://127.0.0.1:{port}");
    let outcome = ensure_services(&[
        ("NOTIFD_DATABASE_URL", &database),
        ("NOTIFD_REDIS_URL", &url),
    ]);
    assert_fails_fast(&outcome, &format!("Redis at 127.0.0.1:{port}"), "refused");
}
