//! At the thread limit the process refuses, it does not die (contract §7): under a
//! low `RLIMIT_NPROC`, connections beyond what the kernel gives threads for are closed
//! with 1013 (whether the handshake thread or the connection thread could not start),
//! the ones already open keep being served, and once some close, new ones are served
//! again.
//!
//! The limit is set in a child: this test binary re-executes itself for just this
//! test with `CHILD` set. `RLIMIT_NPROC` counts every task of a user and does not
//! bind root (CAP_SYS_RESOURCE), so when the tests run as root the child runs as a
//! user id of its own, which nothing else on the host uses.

mod common;

use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{new_user, user_token, TestServer};
use tungstenite::Message;

const CHILD: &str = "NOTIFD_THREAD_LIMIT_TEST_CHILD";
/// Where the child's own user ids start (far above any account's).
const CHILD_UIDS: libc::uid_t = 4_000_000_000;
/// Threads (tasks) the child's user may start beyond those it runs at the limit.
const HEADROOM: u64 = 20;
/// Connections tried under the limit: well past `HEADROOM`.
const ATTEMPTS: usize = 60;
const TEST_NAME: &str = "at_the_thread_limit_new_connections_get_1013_and_the_process_lives_on";

#[test]
fn at_the_thread_limit_new_connections_get_1013_and_the_process_lives_on() {
    if std::env::var_os(CHILD).is_some() {
        return child();
    }
    let mut command = Command::new(std::env::current_exe().expect("test binary"));
    command
        .args([TEST_NAME, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, "1");
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let uid = CHILD_UIDS + std::process::id() % 100_000;
        // SAFETY: runs in the forked child before exec; setgid and setuid are
        // async-signal-safe and touch no memory of ours.
        unsafe {
            command.pre_exec(move || {
                if libc::setgid(uid) != 0 || libc::setuid(uid) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let output = command.output().expect("child runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "child {:?}; stderr:\n{stderr}",
        output.status
    );
    assert!(stderr.contains("at the thread limit:"), "{stderr}");
}

/// What came of one connection attempt.
enum Outcome {
    Served(Box<tungstenite::WebSocket<TcpStream>>),
    Refused(u16),
    Failed(String),
}

fn attempt(server: &TestServer) -> Outcome {
    let query = format!(
        "token={}&workspaceSlug=acme",
        user_token(&new_user("nproc"), &["acme"])
    );
    let addr = server.ws_addr();
    let stream = match TcpStream::connect(addr) {
        Ok(stream) => stream,
        Err(err) => return Outcome::Failed(format!("connect: {err}")),
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut ws = match tungstenite::client(format!("ws://{addr}/?{query}"), stream) {
        Ok((ws, _)) => ws,
        Err(err) => return Outcome::Failed(format!("handshake: {err}")),
    };
    // A refused connection may be closed before this is read.
    let _ = ws.send(Message::text("ping"));
    loop {
        match ws.read() {
            Ok(Message::Text(text)) if text.as_str() == "pong" => {
                return Outcome::Served(Box::new(ws))
            }
            Ok(Message::Close(frame)) => {
                return Outcome::Refused(frame.map_or(1005, |f| u16::from(f.code)))
            }
            Ok(Message::Ping(_) | Message::Pong(_)) => continue,
            Ok(other) => return Outcome::Failed(format!("unexpected {other:?}")),
            Err(err) => return Outcome::Failed(format!("read: {err}")),
        }
    }
}

/// Tasks (threads) of every process of this user: what `RLIMIT_NPROC` counts.
fn tasks_of_this_user() -> u64 {
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() }.to_string();
    let mut tasks = 0;
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        // Processes only: `self` and `thread-self` are this one again.
        if !entry
            .file_name()
            .to_string_lossy()
            .bytes()
            .all(|b| b.is_ascii_digit())
        {
            continue;
        }
        let Ok(status) = std::fs::read_to_string(entry.path().join("status")) else {
            continue;
        };
        let field = |name: &str| {
            status.lines().find(|l| l.starts_with(name)).map(|l| {
                l[name.len()..]
                    .split_whitespace()
                    .next()
                    .unwrap_or("")
                    .to_string()
            })
        };
        if field("Uid:").as_deref() == Some(uid.as_str()) {
            tasks += field("Threads:")
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(1);
        }
    }
    tasks
}

fn limit_threads(limit: u64) {
    let mut current = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NPROC, &mut current), 0);
        current.rlim_cur = limit.min(current.rlim_max);
        assert_eq!(
            libc::setrlimit(libc::RLIMIT_NPROC, &current),
            0,
            "setrlimit"
        );
    }
}

fn child() {
    let server = TestServer::start();
    let limit = tasks_of_this_user() + HEADROOM;
    limit_threads(limit);
    let (mut served, mut refused, mut failed) = (Vec::new(), 0, Vec::new());
    for _ in 0..ATTEMPTS {
        match attempt(&server) {
            Outcome::Served(ws) => served.push(ws),
            Outcome::Refused(1013) => refused += 1,
            Outcome::Refused(code) => failed.push(format!("closed with {code}")),
            Outcome::Failed(why) => failed.push(why),
        }
    }
    eprintln!(
        "at the thread limit: {} served, {refused} refused with 1013, {} otherwise \
         (RLIMIT_NPROC {limit}; {} tasks of this user now)",
        served.len(),
        failed.len(),
        tasks_of_this_user()
    );
    assert!(failed.is_empty(), "not refused with 1013: {failed:?}");
    assert!(
        !served.is_empty() && refused > 0,
        "the limit was not reached"
    );
    // The open ones are still served.
    for ws in &mut served {
        common::assert_only_pong_pending(ws, "a connection opened before the limit");
    }
    assert_eq!(notifd::supervise::down_parts(), Vec::<String>::new());
    // Threads free up as connections close: new ones are served again.
    drop(served);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match attempt(&server) {
            Outcome::Served(_) => break,
            _ if Instant::now() < deadline => continue,
            _ => panic!("no connection served after the others closed"),
        }
    }
}
