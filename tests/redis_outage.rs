//! A Redis outage at PostgreSQL speed: once a publish has failed, creates are stored
//! and answered without waiting on Redis; when Redis is back (restarted on the same
//! port) a client connected through the outage gets every notification of it
//! exactly once, and new ones are delivered live again. Redis here is a redis-server
//! of the test's own, so the machine's Redis keeps running.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::{new_user, next_notification, user_token, RedisProcess, TestServer};
use serde_json::{json, Value};

const CREATORS: usize = 8;
const PER_CREATOR: usize = 5;
/// Far below the 500 ms a create waited on the Redis connection timeout before,
/// far above a create that waits on PostgreSQL alone (a few ms).
const NO_REDIS_WAIT: Duration = Duration::from_millis(400);

fn create(server: &TestServer, user: &str, kind: &str, n: usize) -> Value {
    server.create(&json!({"user_id": user, "workspace": "acme", "kind": kind, "payload": {"n": n}}))
}

fn id_of(notification: &Value) -> String {
    notification["id"].as_str().expect("id").to_string()
}

/// Creates `PER_CREATOR` notifications from each of `CREATORS` threads; returns
/// their ids and the slowest single create.
fn create_concurrently(server: &TestServer, user: &str) -> (Vec<String>, Duration) {
    std::thread::scope(|scope| {
        let creators: Vec<_> = (0..CREATORS)
            .map(|t| {
                scope.spawn(move || {
                    (0..PER_CREATOR)
                        .map(|i| {
                            let started = Instant::now();
                            let id = id_of(&create(server, user, "during", t * PER_CREATOR + i));
                            (id, started.elapsed())
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let timed: Vec<(String, Duration)> = creators
            .into_iter()
            .flat_map(|c| c.join().expect("creator"))
            .collect();
        let slowest = timed.iter().map(|(_, d)| *d).max().unwrap_or_default();
        (timed.into_iter().map(|(id, _)| id).collect(), slowest)
    })
}

#[test]
fn creates_do_not_wait_on_a_down_redis_and_clients_get_everything_once_it_is_back() {
    // Declared first, dropped last: the server shuts down while Redis still runs.
    let (mut redis, prefix, server) = common::server_on_own_redis();
    let user = new_user("outage");
    let mut ws = server.ws(&format!(
        "token={}&workspaceSlug=acme",
        user_token(&user, &["acme"])
    ));
    let before = create(&server, &user, "before", 0);
    assert_eq!(next_notification(&mut ws), before, "live before the outage");

    redis.kill();
    // The first create after the kill is the one that finds Redis gone.
    let mut outage = vec![id_of(&create(&server, &user, "first", 0))];
    let started = Instant::now();
    let (ids, slowest) = create_concurrently(&server, &user);
    let total = started.elapsed();
    eprintln!(
        "{} creates with Redis down: {total:?} in all, slowest {slowest:?}",
        ids.len()
    );
    assert!(
        slowest < NO_REDIS_WAIT,
        "no create waits on the down Redis after the first failure: slowest took {slowest:?}"
    );
    outage.extend(ids);

    let redis = RedisProcess::start(redis.port);
    common::wait_for_subscribers(
        &redis.url(),
        &common::user_channel(&prefix, &user),
        1,
        Duration::from_secs(25),
    );
    // Right after the subscriber is back (it has caught its clients up), possibly
    // before the publisher has noticed Redis answers again.
    let just_back: Vec<String> = (0..3)
        .map(|n| id_of(&create(&server, &user, "just-back", n)))
        .collect();
    // Every notification of the outage and of just after it, each once (in any
    // order: the creates ran on 8 threads).
    let expected: HashSet<&String> = outage.iter().chain(&just_back).collect();
    let mut got = Vec::new();
    while got.len() < expected.len() {
        match common::next_text(&mut ws) {
            Ok(text) => got.push(id_of(&serde_json::from_str(&text).expect("JSON"))),
            Err(err) => panic!(
                "{} of {} notifications before the deadline ({err}); missing: {:?}",
                got.len(),
                expected.len(),
                expected
                    .iter()
                    .filter(|id| !got.contains(id))
                    .collect::<Vec<_>>()
            ),
        }
    }
    let unique: HashSet<&String> = got.iter().collect();
    assert_eq!(unique.len(), got.len(), "no notification twice");
    assert_eq!(unique, expected, "every notification, and nothing else");
    // And live again.
    let after = create(&server, &user, "after", 0);
    assert_eq!(next_notification(&mut ws), after, "live after the outage");
    common::assert_only_pong_pending(&mut ws, "client after the outage");
    drop(ws);
    drop(server);
}
