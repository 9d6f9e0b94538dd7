//! WebSocket delivery end to end: real notifd servers, real PostgreSQL and Redis, real
//! clients. Each notification reaches exactly the connections it is meant for
//! (user, workspace, user-level); `since=` replay joins live delivery with no gap
//! and no duplicate while notifications keep being created; two instances on one
//! Redis deliver across each other and enforce one connection per user and workspace
//! (4005); a client that reads late gets every large notification whole and in
//! order (frames written straight to its socket in parts are finished before the
//! next); a Redis restart loses nothing for a connected client; and the first
//! source document's JavaScript `NotificationManager` is tested in `seed_manager.rs`.
//!
//! Absence is proved by ordering, never by sleeping: after a notification a client
//! must not get, the client is sent something it must get (another notification, or
//! a text `ping` answered by `pong`), and the first thing it reads has to be that.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{expect_close, new_user, next_notification, user_token, RedisProcess, TestServer, Ws};
use serde_json::{json, Value};
use tungstenite::Message;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// Opens a connection of `user` (granted `grants`) on `workspace`.
fn connect(server: &TestServer, user: &str, grants: &[&str], workspace: &str) -> Ws {
    server.ws(&format!(
        "token={}&workspaceSlug={workspace}",
        user_token(user, grants)
    ))
}

/// Creates one notification through REST (201 or panic) and returns it.
fn create(server: &TestServer, user: &str, workspace: Option<&str>, kind: &str, n: usize) -> Value {
    server.create(&json!({
        "user_id": user,
        "workspace": workspace,
        "kind": kind,
        "title": format!("{kind} #{n}"),
        "payload": {"n": n},
    }))
}

fn id_of(notification: &Value) -> String {
    notification["id"]
        .as_str()
        .unwrap_or_else(|| panic!("notification without id: {notification}"))
        .to_string()
}

/// Reads notifications until `count` arrived or `deadline` passed; returns what came.
fn collect(ws: &mut Ws, count: usize, deadline: Instant) -> Vec<Value> {
    let mut got = Vec::with_capacity(count);
    while got.len() < count {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        ws.get_ref()
            .set_read_timeout(Some(left.min(Duration::from_secs(10))))
            .expect("set read timeout");
        match common::next_text(ws) {
            Ok(text) => got.push(
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}")),
            ),
            Err(err) => {
                eprintln!("stopped reading after {} of {count}: {err}", got.len());
                break;
            }
        }
    }
    got
}

/// Explains how `got` differs from `expected` (both lists of ids).
fn describe_difference(expected: &[String], got: &[String]) -> String {
    let want: HashSet<&String> = expected.iter().collect();
    let mut counts: HashMap<&String, usize> = HashMap::new();
    for id in got {
        *counts.entry(id).or_default() += 1;
    }
    let missing = expected
        .iter()
        .filter(|id| !counts.contains_key(id))
        .count();
    let duplicated = counts.values().filter(|&&n| n > 1).count();
    let foreign = counts.keys().filter(|id| !want.contains(*id)).count();
    format!(
        "expected {} ids, got {} frames: {missing} missing, {duplicated} duplicated, {foreign} unexpected",
        expected.len(),
        got.len()
    )
}

// ---------------------------------------------------------------------------
// Routing
// ---------------------------------------------------------------------------

#[test]
fn a_notification_reaches_only_its_users_connection_on_its_workspace() {
    let server = TestServer::start();
    let u = new_user("route_u");
    let v = new_user("route_v");
    let mut u_a = connect(&server, &u, &["wa", "wb"], "wa");
    let mut u_b = connect(&server, &u, &["wa", "wb"], "wb");
    let mut v_a = connect(&server, &v, &["wa"], "wa");

    // For U on wa: only U's wa connection.
    let for_u_a = create(&server, &u, Some("wa"), "route", 1);
    assert_eq!(next_notification(&mut u_a), for_u_a);
    // For U on a workspace U has no connection on: nobody.
    let _for_u_c = create(&server, &u, Some("wc"), "route", 2);
    // U's wb connection: the first thing it gets is its own notification.
    let for_u_b = create(&server, &u, Some("wb"), "route", 3);
    assert_eq!(
        next_notification(&mut u_b),
        for_u_b,
        "U's wb connection got another workspace's notification first"
    );
    // V's wa connection: not U's wa notification.
    let for_v_a = create(&server, &v, Some("wa"), "route", 4);
    assert_eq!(
        next_notification(&mut v_a),
        for_v_a,
        "V's connection got another user's notification first"
    );
    // U's wa connection got neither wb's, wc's nor V's.
    common::assert_only_pong_pending(&mut u_a, "U on wa");
    common::assert_only_pong_pending(&mut u_b, "U on wb");
    common::assert_only_pong_pending(&mut v_a, "V on wa");
}

#[test]
fn a_user_level_notification_reaches_all_of_the_users_connections() {
    let server = TestServer::start();
    let u = new_user("ulevel_u");
    let v = new_user("ulevel_v");
    let mut u_a = connect(&server, &u, &["wa", "wb"], "wa");
    let mut u_b = connect(&server, &u, &["wa", "wb"], "wb");
    let mut v_a = connect(&server, &v, &["wa"], "wa");

    let user_level = create(&server, &u, None, "account_updated", 1);
    assert_eq!(user_level["workspace"], Value::Null);
    assert_eq!(next_notification(&mut u_a), user_level, "U on wa");
    assert_eq!(next_notification(&mut u_b), user_level, "U on wb");
    // Once each, and not to V.
    common::assert_only_pong_pending(&mut u_a, "U on wa");
    common::assert_only_pong_pending(&mut u_b, "U on wb");
    common::assert_only_pong_pending(&mut v_a, "V on wa");
}

// ---------------------------------------------------------------------------
// since= replay joined to live delivery
// ---------------------------------------------------------------------------

#[test]
fn since_replay_then_live_delivers_every_notification_exactly_once_in_order() {
    const FIRST: usize = 200;
    const READ_BEFORE_DROP: usize = 50;
    const WHILE_AWAY: usize = 100;
    const WHILE_RECONNECTING: usize = 100;
    let server = TestServer::start();
    let user = new_user("since");
    let token = user_token(&user, &["acme"]);

    // Connected: 200 created, the client reads 50 of them and drops the connection.
    let mut ws = server.ws(&format!("token={token}&workspaceSlug=acme"));
    let mut created: Vec<String> = (0..FIRST)
        .map(|n| id_of(&create(&server, &user, Some("acme"), "since", n)))
        .collect();
    let before = collect(
        &mut ws,
        READ_BEFORE_DROP,
        Instant::now() + Duration::from_secs(15),
    );
    let before: Vec<String> = before.iter().map(id_of).collect();
    assert_eq!(
        before,
        created[..READ_BEFORE_DROP],
        "the first 50 live frames, in creation order"
    );
    let _ = ws.get_ref().shutdown(std::net::Shutdown::Both);
    drop(ws);
    let last_seen = before.last().expect("read 50").clone();

    // 100 more while away.
    created.extend(
        (FIRST..FIRST + WHILE_AWAY)
            .map(|n| id_of(&create(&server, &user, Some("acme"), "since", n))),
    );

    // A writer keeps creating while the client reconnects with since=.
    let (after, written, trailing) = std::thread::scope(|scope| {
        let (started_tx, started_rx) = mpsc::channel();
        let (server, user) = (&server, &user);
        let writer = scope.spawn(move || {
            let mut ids = Vec::new();
            for n in 0..WHILE_RECONNECTING {
                ids.push(id_of(&create(
                    server,
                    user,
                    Some("acme"),
                    "since",
                    FIRST + WHILE_AWAY + n,
                )));
                if n == 10 {
                    let _ = started_tx.send(());
                }
            }
            ids
        });
        started_rx
            .recv_timeout(Duration::from_secs(20))
            .expect("the writer is creating");
        let mut ws = server.ws(&format!(
            "token={token}&workspaceSlug=acme&since={last_seen}"
        ));
        let expected = FIRST - READ_BEFORE_DROP + WHILE_AWAY + WHILE_RECONNECTING;
        let after = collect(&mut ws, expected, Instant::now() + Duration::from_secs(30));
        let written = writer.join().expect("writer thread");
        // Then nothing more is queued (no trailing duplicate): checked last, below.
        ws.send(Message::text("ping")).expect("send ping");
        let trailing = common::next_text(&mut ws);
        (after, written, trailing)
    });
    created.extend(written);
    assert_eq!(created.len(), 400);

    let after_ids: Vec<String> = after.iter().map(id_of).collect();
    let mut all = before.clone();
    all.extend(after_ids.iter().cloned());
    let unique: HashSet<&String> = all.iter().collect();
    assert!(
        unique.len() == all.len() && unique == created.iter().collect::<HashSet<_>>(),
        "before + after must be every created id exactly once: {}",
        describe_difference(&created, &all)
    );
    assert_eq!(
        after_ids,
        created[READ_BEFORE_DROP..],
        "after reconnecting: replay then live, in creation order"
    );
    let times: Vec<&str> = after
        .iter()
        .map(|n| n["created_at"].as_str().expect("created_at"))
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "created_at ascending after reconnecting"
    );
    assert_eq!(
        trailing.as_deref(),
        Ok("pong"),
        "nothing after the 350 but the pong (a duplicate would come first)"
    );
}

// ---------------------------------------------------------------------------
// Two instances on one Redis
// ---------------------------------------------------------------------------

#[test]
fn two_instances_on_one_redis_deliver_across_and_replace_across() {
    let mut settings = common::settings();
    // The strict rule: one connection per user and workspace, across instances.
    settings.connections_per_user = Some("1".into());
    let (a, b) = common::two_instances(settings);

    // A create through A reaches a client connected to B.
    let reader = new_user("two_reader");
    let mut on_b = connect(&b, &reader, &["acme"], "acme");
    let created = create(&a, &reader, Some("acme"), "across", 1);
    assert_eq!(next_notification(&mut on_b), created);

    // The same user and workspace connect on A, then on B: A's connection is replaced.
    let user = new_user("two_replace");
    let mut first = connect(&a, &user, &["acme"], "acme");
    common::assert_only_pong_pending(&mut first, "first connection (live on A)");
    let mut second = connect(&b, &user, &["acme"], "acme");
    let (code, reason) = expect_close(&mut first);
    assert_eq!(
        code, 4005,
        "older connection on A closed as replaced ({reason})"
    );
    let created = create(&a, &user, Some("acme"), "across", 2);
    assert_eq!(
        next_notification(&mut second),
        created,
        "B's connection lives on"
    );
    common::assert_only_pong_pending(&mut second, "B's connection");
}

#[test]
fn the_per_user_limit_counts_connections_on_every_instance() {
    let mut settings = common::settings();
    settings.connections_per_user = Some("2".into());
    let (a, b) = common::two_instances(settings);
    let user = new_user("limit_across");
    let mut first = connect(&a, &user, &["acme"], "acme");
    common::assert_only_pong_pending(&mut first, "first, on A");
    let mut second = connect(&b, &user, &["acme"], "acme");
    common::assert_only_pong_pending(&mut second, "second, on B");
    // Two across the instances: both stay. A third (on B) replaces the oldest, on A.
    let mut third = connect(&b, &user, &["acme"], "acme");
    let (code, reason) = expect_close(&mut first);
    assert_eq!(
        code, 4005,
        "the oldest, on the other instance, is replaced ({reason})"
    );
    let created = create(&a, &user, Some("acme"), "limit", 1);
    assert_eq!(next_notification(&mut second), created);
    assert_eq!(next_notification(&mut third), created);
}

// ---------------------------------------------------------------------------
// Redis restart
// ---------------------------------------------------------------------------

/// A notifd on a `redis-server` of the test's own, with that server's port.
fn server_on_own_redis() -> (RedisProcess, u16, String, TestServer) {
    let (redis, prefix, server) = common::server_on_own_redis();
    let port = redis.port;
    (redis, port, prefix, server)
}

#[test]
fn a_redis_restart_loses_nothing_for_a_connected_client() {
    // Declared first, dropped last: the server shuts down while Redis still runs.
    let (mut redis, port, prefix, server) = server_on_own_redis();

    let user = new_user("restart");
    let mut ws = connect(&server, &user, &["acme"], "acme");
    let mut created = Vec::new();
    for n in 0..3 {
        let notification = create(&server, &user, Some("acme"), "before", n);
        assert_eq!(next_notification(&mut ws), notification, "live before");
        created.push(id_of(&notification));
    }
    let received_before = created.clone();

    // Redis goes away: creates are still stored (201), publishing fails.
    redis.kill();
    for n in 0..3 {
        created.push(id_of(&create(&server, &user, Some("acme"), "during", n)));
    }
    let back = Instant::now();
    let mut redis = RedisProcess::start(port);
    // Right after the restart, possibly before the subscriber is back.
    for n in 0..3 {
        created.push(id_of(&create(&server, &user, Some("acme"), "restarted", n)));
    }
    // Once the subscriber has subscribed again, delivery must be live again.
    common::wait_for_subscribers(
        &redis.url(),
        &common::user_channel(&prefix, &user),
        1,
        Duration::from_secs(25),
    );
    for n in 0..3 {
        created.push(id_of(&create(&server, &user, Some("acme"), "after", n)));
    }
    let expected_after = created.len() - received_before.len();
    let after = collect(&mut ws, expected_after, back + Duration::from_secs(30));
    let mut all = received_before.clone();
    all.extend(after.iter().map(id_of));
    let unique: HashSet<&String> = all.iter().collect();
    assert!(
        unique.len() == all.len() && unique == created.iter().collect::<HashSet<_>>(),
        "every notification from before, during and after the outage, exactly once: {}",
        describe_difference(&created, &all)
    );
    common::assert_only_pong_pending(&mut ws, "client after the outage");
    drop(ws);
    drop(server);
    redis.kill();
}

#[test]
fn after_a_quiet_redis_restart_new_notifications_are_live_again() {
    // Declared first, dropped last: the server shuts down while Redis still runs.
    let (mut redis, port, prefix, server) = server_on_own_redis();

    let user = new_user("quiet");
    let mut ws = connect(&server, &user, &["acme"], "acme");
    // Several creates at once, so the publisher holds more than one Redis connection.
    let before: Vec<Value> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..4)
            .map(|n| {
                let (server, user) = (&server, &user);
                scope.spawn(move || create(server, user, Some("acme"), "before", n))
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("creator"))
            .collect()
    });
    let got = collect(
        &mut ws,
        before.len(),
        Instant::now() + Duration::from_secs(10),
    );
    assert_eq!(got.len(), before.len(), "live before the restart");

    // Redis restarts while nothing is created; the subscriber comes back.
    redis.kill();
    let mut redis = RedisProcess::start(port);
    common::wait_for_subscribers(
        &redis.url(),
        &common::user_channel(&prefix, &user),
        1,
        Duration::from_secs(25),
    );
    let created: Vec<String> = (0..6)
        .map(|n| id_of(&create(&server, &user, Some("acme"), "after", n)))
        .collect();
    let got = collect(
        &mut ws,
        created.len(),
        Instant::now() + Duration::from_secs(15),
    );
    let got: Vec<String> = got.iter().map(id_of).collect();
    assert_eq!(
        got,
        created,
        "every notification created after the restart arrives: {}",
        describe_difference(&created, &got)
    );
    drop(ws);
    drop(server);
    redis.kill();
}

#[test]
fn a_client_that_reads_late_gets_every_large_notification_whole_and_in_order() {
    let server = TestServer::start();
    let user = new_user("late");
    let mut ws = connect(&server, &user, &["acme"], "acme");
    // More than the socket buffers hold: the server's writes soon stop fitting, and
    // large frames go out in parts.
    let filler = "x".repeat(60_000);
    let created: Vec<Value> = (0..150)
        .map(|n| {
            server.create(&json!({
                "user_id": user, "workspace": "acme", "kind": "late.reader",
                "message": format!("{n} {filler}"), "payload": {"n": n}
            }))
        })
        .collect();
    // Only now does the client read: every frame whole, none lost, in order.
    for (n, expected) in created.iter().enumerate() {
        assert_eq!(&next_notification(&mut ws), expected, "notification {n}");
    }
    // And live afterwards.
    let after = server.create(&json!({
        "user_id": user, "workspace": "acme", "kind": "late.reader", "payload": {}
    }));
    assert_eq!(next_notification(&mut ws), after);
}
