//! The WebSocket cap fits the process's limits (contract §7, "never dies of load"):
//! the default `NOTIFD_MAX_CONNECTIONS`, at what a connection is measured to cost here
//! (memory maps, threads, descriptors of this very process), stays inside
//! `vm.max_map_count`, the thread limits and the descriptor limit; and a connection
//! whose thread the kernel refuses is closed with 1013 while the server carries on.

mod common;

use std::sync::Mutex;

use common::{expect_close, new_user, next_notification, user_token, TestServer};
use serde_json::json;

/// Connections opened to measure what one costs.
const SAMPLE: usize = 200;
/// Handshakes the accept loop takes past the cap, to answer them with 1013.
const HANDSHAKE_MARGIN: u64 = 64;

/// The fault hook is process-wide: one test at a time may open connections.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn count_lines(path: &str) -> u64 {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .lines()
        .count() as u64
}

fn number(path: &str) -> u64 {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    text.trim()
        .parse()
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn threads_here() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("status");
    let line = status
        .lines()
        .find(|l| l.starts_with("Threads:"))
        .expect("Threads:");
    line["Threads:".len()..].trim().parse().expect("a number")
}

fn fds_here() -> u64 {
    std::fs::read_dir("/proc/self/fd").expect("fds").count() as u64
}

/// (maps, threads, descriptors) of this process.
fn usage() -> [u64; 3] {
    [count_lines("/proc/self/maps"), threads_here(), fds_here()]
}

/// Opens and closes a sample of connections, so what grows once (the PostgreSQL
/// pool each connection's first history read draws on, the Redis subscriber's
/// buffers) is grown before the measurement, and waits for their threads to end.
fn warm_up(server: &TestServer) {
    let clients: Vec<_> = (0..SAMPLE)
        .map(|i| server.ws(&query(&new_user(&format!("warm{i}")))))
        .collect();
    drop(clients);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut last = threads_here();
    loop {
        std::thread::sleep(std::time::Duration::from_millis(200));
        let now = threads_here();
        if now >= last || std::time::Instant::now() > deadline {
            return;
        }
        last = now;
    }
}

fn query(user: &str) -> String {
    format!("token={}&workspaceSlug=acme", user_token(user, &["acme"]))
}

#[test]
fn the_default_cap_fits_maps_threads_and_descriptors_at_their_measured_cost() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let server = TestServer::start();
    let cap = server.config.max_connections as u64;
    warm_up(&server);
    let before = usage();
    let users: Vec<String> = (0..SAMPLE).map(|i| new_user(&format!("cap{i}"))).collect();
    let mut clients: Vec<_> = users.iter().map(|user| server.ws(&query(user))).collect();
    // Every connection is live (registered, on its thread) once it got a notification.
    let created = server.create(&json!({
        "user_id": users[SAMPLE - 1], "workspace": "acme", "kind": "limits.check", "payload": {}
    }));
    assert_eq!(next_notification(&mut clients[SAMPLE - 1]), created);
    for client in &mut clients[..SAMPLE - 1] {
        common::assert_only_pong_pending(client, "a sampled connection");
    }
    let after = usage();
    // Per connection; the test's own client socket is one more descriptor.
    let cost: Vec<f64> = (0..3)
        .map(|i| (after[i] - before[i]) as f64 / SAMPLE as f64)
        .collect();
    let (maps, threads, fds) = (cost[0], cost[1], cost[2] - 1.0);
    eprintln!("per connection: {maps} maps, {threads} threads, {fds} descriptors; cap {cap}");
    let fits = |from: u64, per: f64, max: u64| {
        from as f64 + (cap + HANDSHAKE_MARGIN) as f64 * per <= max as f64
    };
    let max_maps = number("/proc/sys/vm/max_map_count");
    assert!(
        fits(before[0], maps, max_maps),
        "{cap} connections at {maps} maps each, from {} maps, pass vm.max_map_count {max_maps}",
        before[0]
    );
    for limit in ["/proc/sys/kernel/pid_max", "/proc/sys/kernel/threads-max"] {
        let max = number(limit);
        assert!(
            fits(before[1], threads, max),
            "{cap} × {threads} threads pass {limit} {max}"
        );
    }
    let max_fds = soft_descriptor_limit();
    assert!(
        fits(before[2], fds, max_fds),
        "{cap} × {fds} sockets pass RLIMIT_NOFILE {max_fds}"
    );
}

/// The soft descriptor limit, from /proc/self/limits ("Max open files  soft  hard  files").
fn soft_descriptor_limit() -> u64 {
    let limits = std::fs::read_to_string("/proc/self/limits").expect("limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("line");
    let soft = line["Max open files".len()..]
        .split_whitespace()
        .next()
        .expect("soft");
    soft.parse().unwrap_or(u64::MAX)
}

#[test]
fn a_connection_the_kernel_gives_no_thread_is_closed_with_1013_and_others_are_served() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let server = TestServer::start();
    let (refused_user, served_user) = (new_user("nothread"), new_user("served"));
    // The next connection thread fails to start as if pthread_create said EAGAIN.
    notifd::supervise::inject_fault("notifd-ws");
    let mut refused = server.ws(&query(&refused_user));
    assert_eq!(expect_close(&mut refused).0, 1013);
    let mut served = server.ws(&query(&served_user));
    let created = server.create(&json!({
        "user_id": served_user, "workspace": "acme", "kind": "limits.check", "payload": {}
    }));
    assert_eq!(next_notification(&mut served), created);
    assert_eq!(notifd::supervise::down_parts(), Vec::<String>::new());
}

/// Every log record of this test binary: (level, message and fields).
fn captured_logs() -> &'static Mutex<Vec<(log::Level, String)>> {
    struct Capture;
    static LINES: Mutex<Vec<(log::Level, String)>> = Mutex::new(Vec::new());
    impl log::Log for Capture {
        fn enabled(&self, _: &log::Metadata) -> bool {
            true
        }
        fn log(&self, record: &log::Record) {
            struct Fields(String);
            impl<'kvs> log::kv::VisitSource<'kvs> for Fields {
                fn visit_pair(
                    &mut self,
                    key: log::kv::Key<'kvs>,
                    value: log::kv::Value<'kvs>,
                ) -> Result<(), log::kv::Error> {
                    self.0.push_str(&format!(" {key}={value}"));
                    Ok(())
                }
            }
            let mut fields = Fields(record.args().to_string());
            let _ = record.key_values().visit(&mut fields);
            let mut lines = LINES.lock().unwrap_or_else(|e| e.into_inner());
            lines.push((record.level(), fields.0));
        }
        fn flush(&self) {}
    }
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        log::set_boxed_logger(Box::new(Capture)).expect("the only logger");
        log::set_max_level(log::LevelFilter::Warn);
    });
    &LINES
}

#[test]
fn a_cap_above_the_limits_is_lowered_with_a_warning_naming_the_limit() {
    let logs = captured_logs();
    let mut settings = common::settings();
    settings.max_connections = Some("100000000".into());
    let server = TestServer::with(settings);
    let cap = server.config.max_connections;
    assert!(cap < 100_000_000, "{cap}");
    let lines = logs.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let warning = lines
        .iter()
        .find(|(_, line)| line.contains("NOTIFD_MAX_CONNECTIONS is above"))
        .unwrap_or_else(|| panic!("no warning in {lines:#?}"));
    assert_eq!(warning.0, log::Level::Warn);
    assert!(warning.1.contains("asked=100000000"), "{}", warning.1);
    assert!(
        warning.1.contains(&format!("max_connections={cap}")),
        "{}",
        warning.1
    );
    let limit = [
        "RLIMIT_NOFILE",
        "RLIMIT_NPROC",
        "kernel.",
        "vm.max_map_count",
        "cgroup",
    ];
    assert!(
        limit
            .iter()
            .any(|l| warning.1.contains(&format!("limit={l}"))),
        "{}",
        warning.1
    );
}
