//! Redis Cluster (contract §5, `NOTIFD_REDIS_URL=redis+cluster://…`): sharded Pub/Sub
//! on a real cluster of 3 primaries and 3 replicas that the test starts. Users whose
//! channels fall on every primary get exactly their notifications through two
//! instances; 4005 crosses instances; a primary killed with SIGKILL while creates
//! keep coming loses nothing a connected client was owed, and repeats nothing.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::cluster::RedisCluster;
use common::{
    assert_only_pong_pending, expect_close, new_user, next_notification, user_token, TestServer, Ws,
};
use serde_json::{json, Value};

fn on_cluster(cluster: &RedisCluster) -> notifd::cli::Settings {
    let mut settings = common::settings();
    settings.redis_url = Some(cluster.url());
    settings
}

fn connect(server: &TestServer, user: &str) -> Ws {
    server.ws(&format!(
        "token={}&workspaceSlug=acme",
        user_token(user, &["acme"])
    ))
}

fn create(server: &TestServer, user: &str, n: usize) -> String {
    let created = server.create(&json!({
        "user_id": user, "workspace": "acme", "kind": "cluster", "payload": {"n": n}
    }));
    created["id"].as_str().expect("id").to_string()
}

/// The shard channels each primary serves now (`PUBSUB SHARDCHANNELS`).
fn shard_channels(cluster: &RedisCluster) -> HashMap<u16, Vec<String>> {
    cluster
        .primaries()
        .into_iter()
        .map(|port| {
            let listed = cluster.cli(port, &["PUBSUB", "SHARDCHANNELS"]);
            (port, listed.lines().map(str::to_string).collect())
        })
        .collect()
}

#[test]
fn users_on_every_primary_get_exactly_their_notifications_through_two_instances() {
    let cluster = RedisCluster::start();
    let (a, b) = common::two_instances(on_cluster(&cluster));
    let users: Vec<String> = (0..24).map(|i| new_user(&format!("shard{i}"))).collect();
    let mut clients: Vec<Ws> = users
        .iter()
        .enumerate()
        .map(|(i, user)| connect(if i % 2 == 0 { &a } else { &b }, user))
        .collect();
    // Each user's channels are subscribed on the primary owning their slot, over
    // one connection per primary: every primary serves some of them.
    let served = shard_channels(&cluster);
    assert_eq!(served.len(), 3, "{served:?}");
    for (port, channels) in &served {
        let ours = users
            .iter()
            .filter(|u| {
                channels
                    .iter()
                    .any(|c| c.ends_with(&format!("notifications:{u}")))
            })
            .count();
        assert!(
            ours > 0,
            "primary {port} serves none of the users: {channels:?}"
        );
    }
    for (i, (user, client)) in users.iter().zip(&mut clients).enumerate() {
        // Created through the other instance than the one holding the user.
        let id = create(if i % 2 == 0 { &b } else { &a }, user, i);
        assert_eq!(next_notification(client)["id"], id.as_str(), "{user}");
    }
    for (user, client) in users.iter().zip(&mut clients) {
        assert_only_pong_pending(client, user);
    }
    // A workspace-audience notification reaches every one of them, once.
    let broadcast = a.create(&json!({
        "audience": "workspace", "workspace": "acme", "kind": "ALL", "payload": {}
    }));
    for client in &mut clients {
        assert_eq!(next_notification(client)["id"], broadcast["id"]);
    }
}

#[test]
fn a_newer_connection_on_another_instance_replaces_the_older_with_4005() {
    let cluster = RedisCluster::start();
    let mut settings = on_cluster(&cluster);
    settings.connections_per_user = Some("1".into());
    let (a, b) = common::two_instances(settings);
    let user = new_user("replace");
    let mut older = connect(&a, &user);
    assert_only_pong_pending(&mut older, "the first connection");
    let mut newer = connect(&b, &user);
    let (code, reason) = expect_close(&mut older);
    assert_eq!(code, 4005, "{reason}");
    let id = create(&a, &user, 1);
    assert_eq!(next_notification(&mut newer)["id"], id.as_str());
}

#[test]
fn a_slot_moving_to_another_primary_keeps_its_users_channels_live() {
    let cluster = RedisCluster::start();
    let settings = on_cluster(&cluster);
    let prefix = settings.redis_prefix.clone().expect("prefix");
    let server = TestServer::with(settings);
    let user = new_user("moved");
    let mut ws = connect(&server, &user);
    let id = create(&server, &user, 0);
    assert_eq!(next_notification(&mut ws)["id"], id.as_str());
    let channel = format!("{prefix}notifications:{user}");
    let primaries = cluster.primaries();
    let slot: u16 = cluster
        .cli(primaries[0], &["CLUSTER", "KEYSLOT", &channel])
        .trim()
        .parse()
        .expect("a slot");
    let to = primaries
        .iter()
        .copied()
        .find(|&port| !cluster.owns(port, slot))
        .expect("another primary");
    // Redis tells the subscribers of the slot's channels (`sunsubscribe`); notifd
    // starts over on the new topology and catches the connection up.
    cluster.move_slot(slot, to);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cluster
        .cli(to, &["PUBSUB", "SHARDCHANNELS"])
        .lines()
        .any(|c| c == channel)
    {
        assert!(
            Instant::now() < deadline,
            "{channel} subscribed on its new primary"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let after = create(&server, &user, 1);
    assert_eq!(next_notification(&mut ws)["id"], after.as_str());
    assert_only_pong_pending(&mut ws, "after the move");
}

#[test]
fn a_primary_killed_while_creating_loses_and_repeats_nothing() {
    if std::env::var("NOTIFD_TEST_LOG").is_ok() {
        notifd::logging::init(log::LevelFilter::Info, notifd::config::LogFormat::Text);
    }
    let mut cluster = RedisCluster::start();
    let (a, b) = common::two_instances(on_cluster(&cluster));
    let users: Vec<String> = (0..12).map(|i| new_user(&format!("failover{i}"))).collect();
    let mut clients: Vec<Ws> = users
        .iter()
        .enumerate()
        .map(|(i, user)| connect(if i % 2 == 0 { &a } else { &b }, user))
        .collect();
    // Every client is live before the creates start.
    for (i, (user, client)) in users.iter().zip(&mut clients).enumerate() {
        let id = create(&a, user, i);
        assert_eq!(next_notification(client)["id"], id.as_str());
    }
    let expected: Arc<Mutex<HashMap<String, BTreeSet<String>>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    std::thread::scope(|scope| {
        let creator = scope.spawn(|| {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let user = &users[n % users.len()];
                // Stored in PostgreSQL whatever Redis does: the answer is 201.
                let id = create(if n % 2 == 0 { &a } else { &b }, user, n);
                expected
                    .lock()
                    .expect("lock")
                    .entry(user.clone())
                    .or_default()
                    .insert(id);
                n += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        std::thread::sleep(Duration::from_millis(1000));
        let primary = cluster.primaries()[0];
        cluster.kill(primary);
        // The replica takes over (cluster-node-timeout 1 s), and creates go on.
        cluster.wait_failover(primary, Duration::from_secs(30));
        std::thread::sleep(Duration::from_millis(1500));
        stop.store(true, Ordering::Relaxed);
        creator.join().expect("creator");
    });
    let expected = expected.lock().expect("lock").clone();
    let deadline = Instant::now() + Duration::from_secs(40);
    for (user, client) in users.iter().zip(&mut clients) {
        let owed = expected.get(user).cloned().unwrap_or_default();
        let mut got: Vec<String> = Vec::new();
        while got.len() < owed.len() {
            assert!(
                Instant::now() < deadline,
                "{user}: {} of {}",
                got.len(),
                owed.len()
            );
            // Reads time out after 10 s; the catch-up may come later than one read.
            let text = match common::next_text(client) {
                Ok(text) => text,
                Err(err) if Instant::now() < deadline && err.contains("temporarily") => continue,
                Err(err) => {
                    let missing: Vec<&String> =
                        owed.iter().filter(|id| !got.contains(id)).collect();
                    panic!(
                        "{user}: {} of {} ({err}); missing {missing:?}",
                        got.len(),
                        owed.len()
                    )
                }
            };
            let notification: Value = serde_json::from_str(&text).expect("JSON");
            got.push(notification["id"].as_str().expect("id").to_string());
        }
        let unique: BTreeSet<String> = got.iter().cloned().collect();
        assert_eq!(unique.len(), got.len(), "{user}: a notification twice");
        assert_eq!(unique, owed, "{user}: exactly what was created for them");
        assert_only_pong_pending(client, user);
    }
}
