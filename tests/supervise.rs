//! Essential threads are supervised (contract §7): when the Redis subscriber or a
//! WebSocket helper thread panics, the process logs one error line naming the thread
//! and the cause, reports the part down, and exits with status 70 so that systemd
//! restarts it. A shutdown is not a failure.
//!
//! A failure ends the whole process, so each failing case runs in a child: this test
//! binary re-executes itself for just that test, with `CHILD` set; the child starts a
//! server, arms the fault hook (`supervise::inject_fault`, callable only from code
//! in the process) and waits for its own exit. The parent checks the status and the
//! child's stderr.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::TestServer;
use notifd::supervise;

/// Set in the child's environment: run the server side of the test.
const CHILD: &str = "NOTIFD_SUPERVISE_TEST_CHILD";
/// How long a child may take to fail and exit.
const CHILD_LIMIT: Duration = Duration::from_secs(20);

/// In the child: starts a server, makes `thread` panic, waits for the process to exit
/// (panicking, so exiting 101, if it does not). In the parent: runs the child and
/// checks that it exited 70 with the error line naming `thread`.
fn a_panic_ends_the_process(test_name: &str, thread: &str) {
    if std::env::var_os(CHILD).is_some() {
        return child(thread);
    }
    let stderr = run_failing_child(test_name);
    let line = stderr
        .lines()
        .find(|line| line.contains("essential thread stopped"))
        .unwrap_or_else(|| panic!("no error line; stderr:\n{stderr}"));
    assert!(line.contains("ERROR"), "{line}");
    assert!(line.contains(&format!("thread={thread}")), "{line}");
    assert!(line.contains("fault injected by a test"), "{line}");
    assert!(
        stderr.contains(&format!("down: [\"{thread}\"]")),
        "the part was not reported down; stderr:\n{stderr}"
    );
}

/// Runs test `test_name` of this binary as a child with `CHILD` set; asserts it exited
/// with `EXIT_FAILED` and returns its stderr.
fn run_failing_child(test_name: &str) -> String {
    let output = Command::new(std::env::current_exe().expect("test binary"))
        .args([test_name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .output()
        .expect("child runs");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(
        output.status.code(),
        Some(supervise::EXIT_FAILED),
        "child status {:?}; stderr:\n{stderr}",
        output.status
    );
    stderr
}

fn child(thread: &str) {
    notifd::logging::init(log::LevelFilter::Info, notifd::config::LogFormat::Text);
    let _server = TestServer::start();
    supervise::inject_fault(thread);
    let deadline = Instant::now() + CHILD_LIMIT;
    while supervise::down_parts().is_empty() {
        assert!(Instant::now() < deadline, "{thread} did not fail");
        std::thread::sleep(Duration::from_millis(10));
    }
    eprintln!("down: {:?}", supervise::down_parts());
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("the process is still running {CHILD_LIMIT:?} after {thread} failed");
}

#[test]
fn a_panicking_subscriber_ends_the_process_with_status_70() {
    a_panic_ends_the_process(
        "a_panicking_subscriber_ends_the_process_with_status_70",
        "notifd-subscriber",
    );
}

/// The poller watches every WebSocket and runs the heartbeat: without it no
/// connection hears its socket, so it is essential.
#[test]
fn a_panicking_poller_thread_ends_the_process_with_status_70() {
    a_panic_ends_the_process(
        "a_panicking_poller_thread_ends_the_process_with_status_70",
        "notifd-poller",
    );
}

#[test]
fn a_shutdown_is_not_a_failure() {
    let mut server = TestServer::start();
    server.stop();
    // `stop` joined every essential thread: a stop taken for a failure would have
    // marked its part down (and be ending this process) by now.
    assert_eq!(supervise::down_parts(), Vec::<String>::new());
}

/// A REST worker that fails ends the process too, after `/healthz` has said 503
/// naming it (the other workers still answer during the grace).
#[test]
fn a_failing_rest_worker_is_reported_by_healthz_and_ends_the_process() {
    if std::env::var_os(CHILD).is_some() {
        notifd::logging::init(log::LevelFilter::Info, notifd::config::LogFormat::Text);
        let server = TestServer::start();
        supervise::inject_fault("notifd-http");
        // Whichever worker serves this request fails after answering it.
        let first = server.request("GET", "/healthz", &[], None);
        eprintln!("first healthz: {}", first.status);
        let deadline = Instant::now() + CHILD_LIMIT;
        while supervise::down_parts().is_empty() {
            assert!(Instant::now() < deadline, "no REST worker failed");
            std::thread::sleep(Duration::from_millis(10));
        }
        let health = server.request("GET", "/healthz", &[], None);
        eprintln!("healthz: {} {}", health.status, health.text());
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("the process is still running after a REST worker failed");
    }
    let stderr =
        run_failing_child("a_failing_rest_worker_is_reported_by_healthz_and_ends_the_process");
    assert!(stderr.contains("first healthz: 200"), "{stderr}");
    let health = stderr
        .lines()
        .find(|line| line.starts_with("healthz: "))
        .unwrap_or_else(|| panic!("no healthz line; stderr:\n{stderr}"));
    assert!(health.starts_with("healthz: 503 "), "{health}");
    assert!(health.contains("notifd-http-"), "{health}");
    assert!(
        stderr
            .lines()
            .any(|l| l.contains("essential thread stopped") && l.contains("thread=notifd-http-")),
        "{stderr}"
    );
}
