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

/// The members of a roster, oldest first, read straight from Redis.
fn members(prefix: &str, user: &str, workspace: &str) -> Vec<Conn> {
    let names: Vec<String> = redis::cmd("ZRANGE")
        .arg(roster::key(prefix, user, workspace))
        .arg(0)
        .arg(-1)
        .query(&mut redis())
        .expect("ZRANGE");
    names
        .iter()
        .map(|m| Conn::parse(m).expect("a member"))
        .collect()
}

fn admitted(admission: Admission) -> Vec<Conn> {
    match admission {
        Admission::Admitted { evicted } => evicted,
        Admission::Unavailable => panic!("the roster should answer"),
    }
}

/// Admits `conn` for alice on acme (the user of most tests); the evicted.
fn admit(roster: &Roster, conn: &Conn) -> Vec<Conn> {
    admitted(roster.admit("alice", "acme", conn))
}

fn conns(instance: &str, ids: std::ops::Range<u64>) -> Vec<Conn> {
    ids.map(|id| Conn::new(instance, id)).collect()
}

#[test]
fn the_sixth_of_five_evicts_exactly_the_oldest() {
    let prefix = prefix();
    let roster = Roster::new(&common::redis_url(), &prefix, 5).expect("roster");
    let c = conns("i", 0..8);
    for conn in &c[..5] {
        assert_eq!(admit(&roster, conn), []);
    }
    assert_eq!(admit(&roster, &c[5]), [c[0].clone()]);
    assert_eq!(admit(&roster, &c[6]), [c[1].clone()]);
    assert_eq!(members(&prefix, "alice", "acme"), c[2..7]);
    // Another workspace of the same user, and another user, have rosters of their own.
    assert_eq!(admitted(roster.admit("alice", "beta", &c[7])), []);
    assert_eq!(admitted(roster.admit("bob", "acme", &c[7])), []);
    assert_eq!(members(&prefix, "alice", "acme").len(), 5);
}

#[test]
fn with_a_limit_of_1_each_admit_evicts_the_previous() {
    let prefix = prefix();
    let roster = Roster::new(&common::redis_url(), &prefix, 1).expect("roster");
    let c = conns("i", 0..4);
    assert_eq!(admit(&roster, &c[0]), []);
    for pair in c.windows(2) {
        assert_eq!(admit(&roster, &pair[1]), [pair[0].clone()]);
    }
    assert_eq!(members(&prefix, "alice", "acme"), [c[3].clone()]);
}

#[test]
fn admitting_again_keeps_the_place_and_evicts_nothing() {
    let prefix = prefix();
    let roster = Roster::new(&common::redis_url(), &prefix, 2).expect("roster");
    let c = conns("i", 0..3);
    admit(&roster, &c[0]);
    admit(&roster, &c[1]);
    assert_eq!(admit(&roster, &c[0]), []);
    assert_eq!(members(&prefix, "alice", "acme"), c[..2]);
    assert_eq!(admit(&roster, &c[2]), [c[0].clone()]);
}

#[test]
fn two_instances_share_one_roster_and_evictions_name_their_owner() {
    let prefix = prefix();
    let a = Roster::new(&common::redis_url(), &prefix, 2).expect("roster A");
    let b = Roster::new(&common::redis_url(), &prefix, 2).expect("roster B");
    let (on_a, on_b) = (conns("A", 0..3), conns("B", 0..3));
    admit(&a, &on_a[0]);
    admit(&b, &on_b[0]);
    a.leave("alice", "acme", &on_a[0]);
    assert_eq!(admit(&b, &on_b[1]), [], "A's left");
    let evicted = admit(&a, &on_a[1]);
    assert_eq!(
        evicted,
        [on_b[0].clone()],
        "B's oldest goes, from A's admit"
    );
    let evict = Evict {
        user_id: "alice".into(),
        workspace: "acme".into(),
        close: evicted,
    };
    let heard: Evict = serde_json::from_str(&serde_json::to_string(&evict).expect("JSON"))
        .expect("every instance parses it");
    assert_eq!(heard.ids_on("B").collect::<Vec<_>>(), [0]);
    assert_eq!(heard.ids_on("A").count(), 0);
    assert_eq!(admit(&b, &on_b[2]), [on_b[1].clone()]);
    assert_eq!(
        members(&prefix, "alice", "acme"),
        [on_a[1].clone(), on_b[2].clone()]
    );
}

#[test]
fn leave_removes_and_the_last_one_out_removes_the_key() {
    let prefix = prefix();
    let roster = Roster::new(&common::redis_url(), &prefix, 5).expect("roster");
    let c = conns("i", 0..3);
    admit(&roster, &c[0]);
    admit(&roster, &c[1]);
    roster.leave("alice", "acme", &c[0]);
    roster.leave("alice", "acme", &c[2]); // never admitted: harmless
    assert_eq!(members(&prefix, "alice", "acme"), [c[1].clone()]);
    roster.leave("alice", "acme", &c[1]);
    let exists: u32 = redis::cmd("EXISTS")
        .arg(roster::key(&prefix, "alice", "acme"))
        .query(&mut redis())
        .expect("EXISTS");
    assert_eq!(exists, 0);
}

#[test]
fn concurrent_admits_keep_exactly_the_limit_and_report_each_eviction_once() {
    const THREADS: u64 = 20;
    const EACH: u64 = 10;
    let prefix = prefix();
    // Two rosters, as two instances would hold, each with its own pool.
    let rosters: Vec<Roster> = (0..2)
        .map(|_| Roster::new(&common::redis_url(), &prefix, 5).expect("roster"))
        .collect();
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
    let left = members(&prefix, "alice", "acme");
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
    let crashed = Roster::new(&common::redis_url(), &prefix, 5).expect("roster");
    let stale = conns("crashed", 0..2);
    for conn in &stale {
        admit(&crashed, conn);
    }
    drop(crashed); // never leaves
    let roster = Roster::new(&common::redis_url(), &prefix, 5).expect("roster");
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
    let roster = Roster::new(&common::redis_url(), &prefix, 5).expect("roster");
    let key = roster::key(&prefix, "alice", "acme");
    admitted(roster.admit("alice", "acme", &Conn::new("i", 1)));
    let ttl = |conn: &mut redis::Connection| -> i64 {
        redis::cmd("TTL").arg(&key).query(conn).expect("TTL")
    };
    let mut conn = redis();
    let first = ttl(&mut conn);
    assert!(first > 0 && first <= KEY_TTL.as_secs() as i64, "{first}");
    let _: () = redis::cmd("EXPIRE")
        .arg(&key)
        .arg(60)
        .query(&mut conn)
        .expect("EXPIRE");
    admitted(roster.admit("alice", "acme", &Conn::new("i", 2)));
    assert!(ttl(&mut conn) > KEY_TTL.as_secs() as i64 - 60, "refreshed");
}

#[test]
fn a_flushed_script_is_loaded_again_without_an_unavailable() {
    let prefix = prefix();
    let roster = Roster::new(&common::redis_url(), &prefix, 1).expect("roster");
    admitted(roster.admit("alice", "acme", &Conn::new("i", 1)));
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query(&mut redis())
        .expect("FLUSH");
    let evicted = admitted(roster.admit("alice", "acme", &Conn::new("i", 2)));
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
    let started = Instant::now();
    assert_eq!(roster.admit("alice", "acme", &conn), Admission::Unavailable);
    assert!(
        started.elapsed() < BUDGET + SLACK,
        "{:?}",
        started.elapsed()
    );
    let started = Instant::now();
    assert_eq!(roster.admit("alice", "acme", &conn), Admission::Unavailable);
    roster.leave("alice", "acme", &conn);
    assert!(
        started.elapsed() < Duration::from_millis(50),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn a_redis_that_refuses_answers_unavailable_within_the_budget() {
    let url = format!("redis://127.0.0.1:{}", closed_port());
    assert_unavailable_in_time(&Roster::new(&url, &prefix(), 5).expect("roster"));
}

#[test]
fn a_redis_that_hangs_answers_unavailable_within_the_budget() {
    // Accepts (the kernel does, from the backlog) and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("redis://{}", silent.local_addr().expect("addr"));
    assert_unavailable_in_time(&Roster::new(&url, &prefix(), 5).expect("roster"));
}

/// Forwards every connection on `listener` to the test Redis, on threads of its
/// own; answers the accepted streams, so that a test can cut them (as a Redis
/// restart does).
fn forward(listener: TcpListener) -> Arc<Mutex<Vec<TcpStream>>> {
    let target = redis::Client::open(common::redis_url())
        .expect("URL")
        .get_connection_info()
        .addr()
        .to_string();
    let accepted = Arc::new(Mutex::new(Vec::new()));
    let streams = accepted.clone();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let Ok(server) = TcpStream::connect(&target) else {
                continue;
            };
            streams
                .lock()
                .unwrap()
                .push(client.try_clone().expect("clone"));
            for (mut from, mut to) in [
                (
                    client.try_clone().expect("clone"),
                    server.try_clone().expect("clone"),
                ),
                (server, client),
            ] {
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut from, &mut to);
                    let _ = to.shutdown(Shutdown::Both);
                });
            }
        }
    });
    accepted
}

#[test]
fn the_roster_answers_again_once_redis_does() {
    let port = closed_port();
    let roster = Roster::new(&format!("redis://127.0.0.1:{port}"), &prefix(), 5).expect("roster");
    assert_eq!(
        roster.admit("alice", "acme", &Conn::new("i", 1)),
        Admission::Unavailable
    );
    forward(TcpListener::bind(("127.0.0.1", port)).expect("rebind"));
    let deadline = Instant::now() + RETRY_AFTER + BUDGET + SLACK;
    let conn = Conn::new("i", 2);
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
    admitted(roster.admit("alice", "acme", &Conn::new("i", 1)));
    for stream in accepted.lock().expect("not poisoned").drain(..) {
        stream.shutdown(Shutdown::Both).expect("cut");
    }
    let evicted = admitted(roster.admit("alice", "acme", &Conn::new("i", 2)));
    assert_eq!(evicted, [Conn::new("i", 1)]);
}

#[test]
fn a_newcomer_ranks_newest_even_when_redis_time_steps_back() {
    let prefix = prefix();
    let roster = Roster::new(&common::redis_url(), &prefix, 1).expect("roster");
    // A member scored an hour ahead, as if Redis's clock had since stepped back.
    let ahead = Conn::new("i", 1);
    let future = (std::time::SystemTime::now() + Duration::from_secs(3600))
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_micros() as u64;
    let _: () = redis::cmd("ZADD")
        .arg(roster::key(&prefix, "alice", "acme"))
        .arg(future)
        .arg(ahead.member())
        .query(&mut redis())
        .expect("ZADD");
    let evicted = admitted(roster.admit("alice", "acme", &Conn::new("i", 2)));
    assert_eq!(evicted, [ahead]);
}

/// Percentile `p` (0..=100) of sorted `samples`.
fn percentile(samples: &[Duration], p: usize) -> Duration {
    samples[(samples.len() - 1) * p / 100]
}

#[test]
fn an_admit_costs_one_round_trip() {
    let prefix = prefix();
    let roster = Roster::new(&common::redis_url(), &prefix, 5).expect("roster");
    let mut conn = redis();
    let (mut admits, mut pings) = (Vec::new(), Vec::new());
    for id in 0..300 {
        let started = Instant::now();
        admitted(roster.admit("alice", "acme", &Conn::new("i", id)));
        admits.push(started.elapsed());
        let started = Instant::now();
        let _: String = redis::cmd("PING").query(&mut conn).expect("PING");
        pings.push(started.elapsed());
    }
    admits.sort();
    pings.sort();
    println!(
        "admit p50 {:?} p99 {:?}; PING p50 {:?} p99 {:?}",
        percentile(&admits, 50),
        percentile(&admits, 99),
        percentile(&pings, 50),
        percentile(&pings, 99)
    );
    assert!(percentile(&admits, 99) < BUDGET, "{admits:?}");
}

fn check_config(value: Option<&str>) -> (Option<i32>, String, String) {
    let mut command = common::notifd_command("roster");
    if let Some(value) = value {
        command.env("NOTIFD_CONNECTIONS_PER_USER", value);
    }
    let output = command.arg("check-config").output().expect("notifd runs");
    let text = |b: &[u8]| String::from_utf8_lossy(b).to_string();
    (
        output.status.code(),
        text(&output.stdout),
        text(&output.stderr),
    )
}

#[test]
fn the_limit_comes_from_the_environment_defaults_to_5_and_is_bounded() {
    for (value, shown) in [
        (None, "5"),
        (Some("1"), "1"),
        (Some("1000"), "1000"),
        (Some(""), "5"),
    ] {
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
