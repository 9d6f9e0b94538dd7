//! Targeted subscriptions (contract §5): an instance subscribes to the Redis channels
//! of the users connected to it, and only those, so it receives only their traffic.
//! Checked on the real Redis with `PUBSUB NUMSUB`: the subscriber count of a user's
//! channel is the number of instances holding a connection of that user. A
//! notification created the instant a connection opens (before its user's channel
//! can be subscribed) still arrives, once: the new subscription is followed by a
//! catch-up from PostgreSQL.

mod common;

use std::time::Duration;

use common::{
    assert_only_pong_pending, channel_subscribers, new_user, next_notification, redis_url,
    user_channel, user_token, wait_for_subscribers, TestServer, Ws,
};
use serde_json::json;

const WITHIN: Duration = Duration::from_secs(10);

fn connect(server: &TestServer, user: &str) -> Ws {
    server.ws(&format!(
        "token={}&workspaceSlug=acme",
        user_token(user, &["acme"])
    ))
}

fn state_channel(prefix: &str, user: &str) -> String {
    format!("{prefix}notifd:state:{user}")
}

fn create(server: &TestServer, user: &str, n: usize) -> String {
    let created = server.create(&json!({
        "user_id": user,
        "workspace": "acme",
        "kind": "targeted",
        "payload": {"n": n},
    }));
    created["id"].as_str().expect("id").to_string()
}

#[test]
fn an_instance_subscribes_to_the_channels_of_its_connected_users_only() {
    let settings = common::settings();
    let prefix = settings.redis_prefix.clone().expect("prefix");
    let (a, b) = common::two_instances(settings);
    let (u, v, nobody) = (new_user("on-a"), new_user("on-b"), new_user("nowhere"));

    let mut on_a = connect(&a, &u);
    wait_for_subscribers(&redis_url(), &user_channel(&prefix, &u), 1, WITHIN);
    wait_for_subscribers(&redis_url(), &state_channel(&prefix, &u), 1, WITHIN);
    let mut on_b = connect(&b, &v);
    wait_for_subscribers(&redis_url(), &user_channel(&prefix, &v), 1, WITHIN);
    // Two instances run, yet each of these channels has one subscriber: the instance
    // holding that user. A user connected nowhere has none.
    assert_eq!(
        channel_subscribers(&redis_url(), &user_channel(&prefix, &u)),
        Some(1)
    );
    assert_eq!(
        channel_subscribers(&redis_url(), &user_channel(&prefix, &nobody)),
        Some(0)
    );

    // Delivery goes on through the targeted channels, whichever instance creates.
    let id = create(&b, &u, 1);
    assert_eq!(next_notification(&mut on_a)["id"], id.as_str());
    let id = create(&a, &v, 2);
    assert_eq!(next_notification(&mut on_b)["id"], id.as_str());
    assert_only_pong_pending(&mut on_a, "u on a");

    // A second connection of u on the same instance adds no subscription; the
    // channel stays until the last connection of u there is gone.
    let second = connect(&a, &u);
    assert_only_pong_pending(&mut on_a, "u on a, after a second connection");
    assert_eq!(
        channel_subscribers(&redis_url(), &user_channel(&prefix, &u)),
        Some(1)
    );
    drop(second);
    assert_only_pong_pending(&mut on_a, "u on a, after the second left");
    assert_eq!(
        channel_subscribers(&redis_url(), &user_channel(&prefix, &u)),
        Some(1)
    );
    drop(on_a);
    wait_for_subscribers(&redis_url(), &user_channel(&prefix, &u), 0, WITHIN);
    wait_for_subscribers(&redis_url(), &state_channel(&prefix, &u), 0, WITHIN);
    assert_eq!(
        channel_subscribers(&redis_url(), &user_channel(&prefix, &v)),
        Some(1)
    );

    // u on the other instance: b subscribes now.
    let mut on_b_again = connect(&b, &u);
    wait_for_subscribers(&redis_url(), &user_channel(&prefix, &u), 1, WITHIN);
    let id = create(&a, &u, 3);
    assert_eq!(next_notification(&mut on_b_again)["id"], id.as_str());
}

#[test]
fn a_notification_created_as_a_connection_opens_arrives_exactly_once() {
    let server = TestServer::start();
    // Each round a fresh user: its channel is not subscribed when the create runs,
    // so what reaches the client came through the catch-up or the new subscription.
    for round in 0..20 {
        let user = new_user("race");
        let mut ws = connect(&server, &user);
        let id = create(&server, &user, round);
        let got = next_notification(&mut ws);
        assert_eq!(got["id"], id.as_str(), "round {round}");
        assert_only_pong_pending(&mut ws, &format!("round {round}"));
    }
}

#[test]
fn churn_leaves_no_subscription_behind() {
    let settings = common::settings();
    let prefix = settings.redis_prefix.clone().expect("prefix");
    let server = TestServer::with(settings);
    let users: Vec<String> = (0..40).map(|_| new_user("churn")).collect();
    for round in 0..3 {
        let mut open: Vec<Ws> = users.iter().map(|u| connect(&server, u)).collect();
        // Every one of them is live (subscribed and caught up) before they leave.
        for (ws, user) in open.iter_mut().zip(&users) {
            let id = create(&server, user, round);
            assert_eq!(next_notification(ws)["id"], id.as_str());
        }
        drop(open);
    }
    for user in &users {
        wait_for_subscribers(&redis_url(), &user_channel(&prefix, user), 0, WITHIN);
    }
}

#[test]
fn a_new_user_is_subscribed_while_traffic_never_pauses() {
    let server = TestServer::start();
    let busy = new_user("busy");
    let mut busy_ws = connect(&server, &busy);
    let first = create(&server, &busy, 0);
    assert_eq!(next_notification(&mut busy_ws)["id"], first.as_str());
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        // Creates back to back: the subscriber always has a message waiting. For at
        // most 30 s, so a failing round (which panics before `stop`) cannot hang.
        scope.spawn(|| {
            let (mut n, until) = (1, std::time::Instant::now() + Duration::from_secs(30));
            while !stop.load(std::sync::atomic::Ordering::Relaxed)
                && std::time::Instant::now() < until
            {
                create(&server, &busy, n);
                n += 1;
            }
        });
        std::thread::sleep(Duration::from_millis(300));
        for round in 0..5 {
            let user = new_user("amid");
            let mut ws = connect(&server, &user);
            // Live within the subscriber's looks (milliseconds), not only once a
            // pause in the traffic lets it look: well under the 1 s a connection
            // waits for its channels at most.
            ws.get_ref()
                .set_read_timeout(Some(Duration::from_millis(800)))
                .expect("timeout");
            let id = create(&server, &user, round);
            assert_eq!(
                next_notification(&mut ws)["id"],
                id.as_str(),
                "round {round}"
            );
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
}
