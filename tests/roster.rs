//! The roster against real Redis: at most N connections per (user, workspace)
//! across instances, a newer one beyond N evicting the oldest (each eviction reported
//! once, even under concurrent admits), leave, stale members first, the key's TTL,
//! a Redis that refuses, hangs or comes back (`Unavailable` within the budget, never
//! a wait), and `NOTIFD_CONNECTIONS_PER_USER` from the environment. Every test has a
//! Redis prefix of its own.

mod common;

use std::collections::HashSet;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use notifd::roster::{self, Admission, Conn, Evict, Roster, BUDGET, KEY_TTL, RETRY_AFTER};

/// Slack over `BUDGET` for a loaded machine (two cores shared by several builds).
const SLACK: Duration = Duration::from_millis(500);

fn prefix() -> String {
    format!("{}:", common::new_user("roster"))
}

fn redis() -> redis::Connection {
    redis::Client::open(common::redis_url())
        .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(5)))
        .expect("the test Redis answers")
}

/// Runs one command on the test Redis.
fn query<T: redis::FromRedisValue>(command: &mut redis::Cmd) -> T {
    command.query(&mut redis()).expect("the test Redis answers")
}

/// A roster on the test Redis.
fn roster(prefix: &str, limit: usize) -> Roster {
    Roster::new(&common::redis_url(), prefix, limit).expect("a roster")
}

/// The members of alice's roster on acme, oldest first, read straight from Redis.
fn members(prefix: &str) -> Vec<Conn> {
    let key = roster::key(prefix, "alice", "acme");
    let names: Vec<String> = query(redis::cmd("ZRANGE").arg(key).arg(0).arg(-1));
    names
        .iter()
        .map(|m| Conn::parse(m).expect("a member"))
        .collect()
}

/// Admits `conn` for alice on acme (the user of most tests); the evicted.
fn admit(roster: &Roster, conn: &Conn) -> Vec<Conn> {
    match roster.admit("alice", "acme", conn) {
        Admission::Admitted { evicted } => evicted,
        Admission::Unavailable => panic!("the roster should answer"),
    }
}

fn conns(instance: &str, ids: std::ops::Range<u64>) -> Vec<Conn> {
    ids.map(|id| Conn::new(instance, id)).collect()
}

#[test]
fn the_sixth_of_five_evicts_exactly_the_oldest() {
    let prefix = prefix();
    let roster = roster(&prefix, 5);
    let c = conns("i", 0..8);
    for conn in &c[..5] {
        assert_eq!(admit(&roster, conn), []);
    }
    assert_eq!(admit(&roster, &c[5]), [c[0].clone()]);
    assert_eq!(admit(&roster, &c[6]), [c[1].clone()]);
    assert_eq!(members(&prefix), c[2..7]);
    // Another workspace of the same user, and another user, have rosters of their own.
    let none = Admission::Admitted { evicted: vec![] };
    assert_eq!(roster.admit("alice", "beta", &c[7]), none);
    assert_eq!(roster.admit("bob", "acme", &c[7]), none);
    assert_eq!(members(&prefix).len(), 5);
}

#[test]
fn with_a_limit_of_1_each_admit_evicts_the_previous() {
    let prefix = prefix();
    let roster = roster(&prefix, 1);
    let c = conns("i", 0..4);
    assert_eq!(admit(&roster, &c[0]), []);
    for pair in c.windows(2) {
        assert_eq!(admit(&roster, &pair[1]), [pair[0].clone()]);
    }
    assert_eq!(members(&prefix), [c[3].clone()]);
}

#[test]
fn admitting_again_keeps_the_place_and_evicts_nothing() {
    let prefix = prefix();
    let roster = roster(&prefix, 2);
    let c = conns("i", 0..3);
    admit(&roster, &c[0]);
    admit(&roster, &c[1]);
    assert_eq!(admit(&roster, &c[0]), []);
    assert_eq!(members(&prefix), c[..2]);
    assert_eq!(admit(&roster, &c[2]), [c[0].clone()]);
}

#[test]
fn two_instances_share_one_roster_and_evictions_name_their_owner() {
    let prefix = prefix();
    let a = roster(&prefix, 2);
    let b = roster(&prefix, 2);
    let (on_a, on_b) = (conns("A", 0..3), conns("B", 0..3));
    admit(&a, &on_a[0]);
    admit(&b, &on_b[0]);
    a.leave("alice", "acme", &on_a[0]);
    assert_eq!(admit(&b, &on_b[1]), [], "A's left");
    // B's oldest goes, from A's admit, and the message for it names B alone.
    let close = admit(&a, &on_a[1]);
    assert_eq!(close, [on_b[0].clone()]);
    let (user_id, workspace) = ("alice".to_string(), "acme".to_string());
    let evict = Evict {
        user_id,
        workspace,
        close,
    };
    assert_eq!(evict.ids_on("B").collect::<Vec<_>>(), [0]);
    assert_eq!(evict.ids_on("A").count(), 0);
    assert_eq!(admit(&b, &on_b[2]), [on_b[1].clone()]);
    assert_eq!(members(&prefix), [on_a[1].clone(), on_b[2].clone()]);
}

#[test]
fn leave_removes_and_the_last_one_out_removes_the_key() {
    let prefix = prefix();
    let roster = roster(&prefix, 5);
    let c = conns("i", 0..3);
    admit(&roster, &c[0]);
    admit(&roster, &c[1]);
    roster.leave("alice", "acme", &c[0]);
    roster.leave("alice", "acme", &c[2]); // never admitted: harmless
    assert_eq!(members(&prefix), [c[1].clone()]);
    roster.leave("alice", "acme", &c[1]);
    let exists: u32 = query(redis::cmd("EXISTS").arg(roster::key(&prefix, "alice", "acme")));
    assert_eq!(exists, 0);
}

#[test]
fn concurrent_admits_keep_exactly_the_limit_and_report_each_eviction_once() {
    const THREADS: u64 = 20;
    const EACH: u64 = 10;
    let prefix = prefix();
    // Two rosters, as two instances would hold, each with its own pool.
    let rosters: Vec<Roster> = (0..2).map(|_| roster(&prefix, 5)).collect();
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let roster = rosters[t as usize % 2].clone();
            std::thread::spawn(move || {
                let mine = conns(&format!("t{t}"), 0..EACH);
                let evicted: Vec<Conn> = mine.iter().flat_map(|c| admit(&roster, c)).collect();
                (mine, evicted)
            })
        })
        .collect();
    let (mut all, mut evicted) = (HashSet::new(), Vec::new());
    for thread in threads {
        let (mine, gone) = thread.join().expect("no thread panics");
        all.extend(mine);
        evicted.extend(gone);
    }
    let left = members(&prefix);
    assert_eq!(left.len(), 5);
    assert_eq!(evicted.len() as u64, THREADS * EACH - 5);
    let reported: HashSet<Conn> = evicted.iter().cloned().collect();
    assert_eq!(reported.len(), evicted.len(), "an eviction reported twice");
    assert!(left.iter().all(|c| !reported.contains(c)));
    assert_eq!(reported.len() + left.len(), all.len(), "one lost");
}

#[test]
fn a_crashed_instances_members_are_evicted_first() {
    let prefix = prefix();
    let crashed = roster(&prefix, 5);
    let stale = conns("crashed", 0..2);
    for conn in &stale {
        admit(&crashed, conn);
    }
    drop(crashed); // never leaves
    let roster = roster(&prefix, 5);
    let fresh = conns("alive", 0..6);
    for conn in &fresh[..3] {
        assert_eq!(admit(&roster, conn), []);
    }
    assert_eq!(admit(&roster, &fresh[3]), [stale[0].clone()]);
    assert_eq!(admit(&roster, &fresh[4]), [stale[1].clone()]);
    assert_eq!(admit(&roster, &fresh[5]), [fresh[0].clone()]);
}

#[test]
fn the_key_expires_and_every_admit_refreshes_it() {
    let prefix = prefix();
    let roster = roster(&prefix, 5);
    let key = roster::key(&prefix, "alice", "acme");
    admit(&roster, &Conn::new("i", 1));
    let ttl = || -> i64 { query(redis::cmd("TTL").arg(&key)) };
    let (first, most) = (ttl(), KEY_TTL.as_secs() as i64);
    assert!(first > 0 && first <= most, "{first}");
    let _: () = query(redis::cmd("EXPIRE").arg(&key).arg(60));
    admit(&roster, &Conn::new("i", 2));
    assert!(ttl() > most - 60, "refreshed");
}

#[test]
fn a_flushed_script_is_loaded_again_without_an_unavailable() {
    let prefix = prefix();
    let roster = roster(&prefix, 1);
    admit(&roster, &Conn::new("i", 1));
    let _: () = query(redis::cmd("SCRIPT").arg("FLUSH"));
    let evicted = admit(&roster, &Conn::new("i", 2));
    assert_eq!(evicted, [Conn::new("i", 1)]);
}

/// A local port nobody listens on (bound, then released).
fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Asserts that admit and leave answer `Unavailable` / return within the budget,
/// and at once while the roster knows Redis is down.
fn assert_unavailable_in_time(roster: &Roster) {
    let conn = Conn::new("i", 1);
    let (admission, took) = timed(|| roster.admit("alice", "acme", &conn));
    assert_eq!(admission, Admission::Unavailable);
    assert!(took < BUDGET + SLACK, "{took:?}");
    let (admission, took) = timed(|| {
        roster.leave("alice", "acme", &conn);
        roster.admit("alice", "acme", &conn)
    });
    assert_eq!(admission, Admission::Unavailable);
    assert!(took < Duration::from_millis(50), "{took:?}");
}

/// What `f` returns, and how long it took.
fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let started = Instant::now();
    (f(), started.elapsed())
}

#[test]
fn a_redis_that_refuses_or_hangs_answers_unavailable_within_the_budget() {
    // The silent one accepts (the kernel does, from the backlog) and never answers.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let silent = listener.local_addr().expect("addr").to_string();
    for addr in [format!("127.0.0.1:{}", closed_port()), silent] {
        let url = format!("redis://{addr}");
        assert_unavailable_in_time(&Roster::new(&url, &prefix(), 5).expect("roster"));
    }
}

/// Forwards every connection on `listener` to the test Redis, on threads of its
/// own; answers the accepted streams, so that a test can cut them (as a Redis
/// restart does).
fn forward(listener: TcpListener) -> Arc<Mutex<Vec<TcpStream>>> {
    let client = redis::Client::open(common::redis_url()).expect("a Redis URL");
    let target = client.get_connection_info().addr().to_string();
    let accepted = Arc::new(Mutex::new(Vec::new()));
    let streams = accepted.clone();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let Ok(server) = TcpStream::connect(&target) else {
                continue;
            };
            let kept = client.try_clone().expect("a stream clones");
            streams.lock().expect("not poisoned").push(kept);
            let back = (server.try_clone(), client.try_clone());
            let (Ok(from), Ok(to)) = back else { continue };
            copy(client, server);
            copy(from, to);
        }
    });
    accepted
}

/// Copies `from` to `to` on a thread of its own; the end of `from` ends `to`.
fn copy(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut from, &mut to);
        let _ = to.shutdown(Shutdown::Both);
    });
}

#[test]
fn the_roster_answers_again_once_redis_does() {
    let port = closed_port();
    let roster = Roster::new(&format!("redis://127.0.0.1:{port}"), &prefix(), 5).expect("roster");
    let conn = Conn::new("i", 1);
    assert_eq!(roster.admit("alice", "acme", &conn), Admission::Unavailable);
    forward(TcpListener::bind(("127.0.0.1", port)).expect("rebind"));
    let deadline = Instant::now() + RETRY_AFTER + BUDGET + SLACK;
    while roster.admit("alice", "acme", &conn) == Admission::Unavailable {
        assert!(Instant::now() < deadline, "still unavailable");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_connection_redis_dropped_is_replaced_without_an_unavailable() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("redis://{}", listener.local_addr().expect("addr"));
    let accepted = forward(listener);
    let roster = Roster::new(&url, &prefix(), 1).expect("roster");
    admit(&roster, &Conn::new("i", 1));
    for stream in accepted.lock().expect("not poisoned").drain(..) {
        stream.shutdown(Shutdown::Both).expect("cut");
    }
    let evicted = admit(&roster, &Conn::new("i", 2));
    assert_eq!(evicted, [Conn::new("i", 1)]);
}

#[test]
fn a_newcomer_ranks_newest_even_when_redis_time_steps_back() {
    let prefix = prefix();
    let roster = roster(&prefix, 1);
    // A member scored an hour ahead, as if Redis's clock had since stepped back.
    let ahead = Conn::new("i", 1);
    let (now, _): (u64, u64) = query(&mut redis::cmd("TIME"));
    let future = (now + 3600) * 1_000_000;
    let key = roster::key(&prefix, "alice", "acme");
    let _: () = query(redis::cmd("ZADD").arg(key).arg(future).arg(ahead.member()));
    let evicted = admit(&roster, &Conn::new("i", 2));
    assert_eq!(evicted, [ahead]);
}

/// The median and the 99th percentile of `samples`.
fn p50_p99(samples: &mut [Duration]) -> (Duration, Duration) {
    samples.sort();
    let at = |p: usize| samples[(samples.len() - 1) * p / 100];
    (at(50), at(99))
}

#[test]
fn an_admit_costs_one_round_trip() {
    let prefix = prefix();
    let roster = roster(&prefix, 5);
    let mut conn = redis();
    let (mut admits, mut pings) = (Vec::new(), Vec::new());
    for id in 0..300 {
        admits.push(timed(|| admit(&roster, &Conn::new("i", id))).1);
        pings.push(timed(|| redis::cmd("PING").query::<String>(&mut conn).expect("PING")).1);
    }
    let (admit, ping) = (p50_p99(&mut admits), p50_p99(&mut pings));
    println!("admit p50, p99 {admit:?}; PING p50, p99 {ping:?}");
    assert!(admit.1 < BUDGET, "{admits:?}");
}

fn check_config(value: Option<&str>) -> (Option<i32>, String, String) {
    let mut command = common::notifd_command("roster");
    if let Some(value) = value {
        command.env("NOTIFD_CONNECTIONS_PER_USER", value);
    }
    let output = command.arg("check-config").output().expect("notifd runs");
    let text = |b: &[u8]| String::from_utf8_lossy(b).to_string();
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    (output.status.code(), stdout, stderr)
}

#[test]
fn the_limit_comes_from_the_environment_defaults_to_5_and_is_bounded() {
    let shown = [
        (None, "5"),
        (Some("1"), "1"),
        (Some("1000"), "1000"),
        (Some(""), "5"),
    ];
    for (value, shown) in shown {
        let (code, stdout, stderr) = check_config(value);
        assert_eq!(code, Some(0), "{value:?}: {stdout}{stderr}");
        let line = format!("NOTIFD_CONNECTIONS_PER_USER={shown}");
        assert!(stdout.lines().any(|l| l == line), "{value:?}: {stdout}");
    }
    for value in ["0", "1001", "many"] {
        let (code, _, stderr) = check_config(Some(value));
        assert_eq!(code, Some(2), "{value}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains("NOTIFD_CONNECTIONS_PER_USER"), "{stderr}");
    }
    let help = Command::new(env!("CARGO_BIN_EXE_notifd"))
        .arg("--help")
        .output()
        .expect("runs");
    let help = String::from_utf8_lossy(&help.stdout);
    let flag = help
        .find("--connections-per-user")
        .expect("--help lists it");
    let entry = &help[flag..];
    let env = entry
        .find("[env: NOTIFD_CONNECTIONS_PER_USER")
        .expect("and its variable");
    assert!(entry[..env].contains("[default: 5]"), "{help}");
}
