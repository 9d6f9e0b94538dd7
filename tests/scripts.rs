//! The scripts' service checks (`scripts/services`, which `scripts/run`, `scripts/test`
//! and `scripts/install` share) run unattended: with stdin closed and a PostgreSQL or
//! Redis that is not there, they fail within seconds with a message naming host:port
//! and the cause, and install or start nothing, instead of hanging or prompting. And
//! the WebSocket command `scripts/run` prints for machines without Node.js (curl
//! alone) receives a notification.

mod common;

use common::{new_user, TestServer};
use serde_json::json;
use std::io::Read;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::Path;
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

/// The curl command `scripts/run` prints when neither wscat nor python3's websockets
/// is there, evaluated by bash exactly as a user pastes it.
fn printed_curl_command(ws_addr: &str) -> String {
    let run = std::fs::read_to_string(Path::new(ROOT).join("scripts/run")).expect("scripts/run");
    let start = run
        .find("ws_alt=\"curl")
        .expect("scripts/run prints a curl alternative");
    let end = start + run[start..].find("\nfi\n").expect("end of the assignment");
    let script = format!(
        "ws={ws_addr}\n{}\nprintf '%s' \"$ws_alt\"",
        &run[start..end]
    );
    let output = Command::new("bash")
        .args(["-c", &script])
        .output()
        .expect("bash");
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout).expect("utf-8")
}

#[test]
fn the_printed_curl_websocket_command_receives_a_notification() {
    let server = TestServer::start();
    let user = new_user("curlws");
    let command = printed_curl_command(&server.ws_addr().to_string());
    assert!(command.starts_with("curl "), "{command}");
    let token = common::user_token(&user, &["acme"]);
    let mut curl = Command::new("bash")
        .args(["-c", &format!("exec {command}")])
        .env("USER_TOKEN", &token)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("curl runs");
    let mut stdout = curl.stdout.take().expect("piped");
    // What curl prints, chunk by chunk, until it ends.
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    let read_until = |needle: &str, seen: &mut Vec<u8>| {
        while !String::from_utf8_lossy(seen).contains(needle) {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(chunk) => seen.extend(chunk),
                Err(_) => return false,
            }
        }
        true
    };
    let upgraded = read_until("\r\n\r\n", &mut seen);
    // The 101 is written before the connection joins the hub: wait for that.
    while upgraded && server.ws_connections() == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let created = server
        .create(&json!({"user_id": user, "workspace": "acme", "kind": "CURL", "payload": {}}));
    let id = created["id"].as_str().expect("id").to_string();
    let delivered = upgraded && read_until(&id, &mut seen);
    // SAFETY: kill(2) on curl's own process group; no memory involved.
    unsafe { libc::kill(-(curl.id() as i32), libc::SIGKILL) };
    let _ = curl.wait();
    let text = String::from_utf8_lossy(&seen);
    assert!(text.starts_with("HTTP/1.1 101 "), "no upgrade: {text}");
    assert!(delivered, "notification {id} not in curl's output: {text}");
}
