//! Idempotent create: a repeated `Idempotency-Key` (header, body or batch item) from
//! one service answers the original notification and stores and publishes nothing;
//! the key with another body is a 409; concurrent repeats store one row; keys are per
//! service and forgotten after `NOTIFD_IDEMPOTENCY_WINDOW`, then purged by the sweep.

mod common;

use std::time::{Duration, Instant};

use common::{assert_error, mint, new_user, request_to, service_token, Response, TestServer};
use notifd::auth::{self, Claims};
use serde_json::{json, Value};

const CREATE: &str = "/v1/internal/notifications";
const BATCH: &str = "/v1/internal/notifications/batch";

/// A service token with the publish scope for `sub`.
fn service(sub: &str) -> String {
    mint(&Claims {
        sub: Some(sub.into()),
        exp: auth::unix_now() + 3600,
        workspaces: None,
        workspace: None,
        scope: Some(auth::PUBLISH_SCOPE.into()),
    })
}

/// POSTs `body` as `token`, with `Idempotency-Key: key` when given.
fn post(server: &TestServer, path: &str, token: &str, key: Option<&str>, body: &Value) -> Response {
    let bearer = format!("Bearer {token}");
    let mut headers = vec![
        ("Authorization", bearer.as_str()),
        ("Content-Type", "application/json"),
    ];
    if let Some(key) = key {
        headers.push(("Idempotency-Key", key));
    }
    request_to(
        server.http_addr(),
        "POST",
        path,
        &headers,
        Some(body.to_string().as_bytes()),
    )
}

fn replayed(response: &Response) -> bool {
    response.header("idempotent-replayed") == Some("true")
}

fn db() -> postgres::Client {
    postgres::Client::connect(&common::database_url(), postgres::NoTls).expect("connect")
}

/// Rows stored for `user`.
fn rows_of(user: &str) -> i64 {
    let sql = "SELECT count(*) FROM notifications WHERE user_id = $1";
    db().query_one(sql, &[&user]).expect("count").get(0)
}

fn body_for(user: &str) -> Value {
    json!({"user_id": user, "kind": "ORDER_SHIPPED", "payload": {"order": 42}})
}

/// Notifications published for `user` before a sentinel the test publishes itself
/// after every create was answered (one channel keeps one order).
fn published_before_sentinel(pubsub: &mut redis::PubSub<'_>, channel: &str) -> usize {
    let client = redis::Client::open(common::redis_url()).expect("redis url");
    let mut conn = client.get_connection().expect("redis up");
    redis::cmd("PUBLISH")
        .arg(channel)
        .arg("sentinel")
        .query::<i64>(&mut conn)
        .expect("publish");
    let mut seen = 0;
    loop {
        let payload: String = pubsub
            .get_message()
            .expect("a message within 5 s")
            .get_payload()
            .expect("text");
        if payload == "sentinel" {
            return seen;
        }
        seen += 1;
    }
}

#[test]
fn a_retry_storm_of_one_key_stores_and_publishes_one_and_answers_all_alike() {
    let server = TestServer::start();
    let user = new_user("storm");
    let channel = format!("{}notifications:{user}", server.config.redis_prefix);
    let client = redis::Client::open(common::redis_url()).expect("redis url");
    let mut conn = client.get_connection().expect("redis up");
    conn.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut pubsub = conn.as_pubsub();
    pubsub.subscribe(&channel).expect("subscribe");

    let token = service_token();
    let answers: Vec<Response> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..50)
            .map(|_| {
                scope.spawn(|| post(&server, CREATE, &token, Some("storm-1"), &body_for(&user)))
            })
            .collect();
        threads
            .into_iter()
            .map(|t| t.join().expect("thread"))
            .collect()
    });
    for answer in &answers {
        assert_eq!(answer.status, 201, "{}", answer.text());
    }
    let first = answers[0].json();
    assert!(
        answers.iter().all(|a| a.json() == first),
        "50 identical answers"
    );
    assert_eq!(answers.iter().filter(|a| replayed(a)).count(), 49);
    assert_eq!(rows_of(&user), 1, "one row");
    assert_eq!(
        published_before_sentinel(&mut pubsub, &channel),
        1,
        "one Redis message"
    );
}

#[test]
fn racing_creates_of_one_key_with_two_bodies_store_one_and_refuse_the_other_body() {
    let server = TestServer::start();
    let (token, user) = (service_token(), new_user("race"));
    let bodies = [
        body_for(&user),
        json!({"user_id": user, "kind": "OTHER", "payload": {}}),
    ];
    let answers: Vec<(usize, Response)> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..20)
            .map(|n| {
                let body = &bodies[n % 2];
                (
                    n % 2,
                    scope.spawn(|| post(&server, CREATE, &token, Some("race"), body)),
                )
            })
            .collect();
        threads
            .into_iter()
            .map(|(w, t)| (w, t.join().expect("thread")))
            .collect()
    });
    let stored = rows_of(&user);
    assert_eq!(stored, 1);
    let winner = answers
        .iter()
        .find(|(_, a)| a.status == 201)
        .map(|(w, _)| *w)
        .expect("a winner");
    for (which, answer) in &answers {
        let expected = if *which == winner { 201 } else { 409 };
        assert_eq!(answer.status, expected, "{}", answer.text());
    }
}

#[test]
fn the_key_in_the_body_works_as_the_header_does_and_another_body_is_a_conflict() {
    let server = TestServer::start();
    let token = service_token();
    let user = new_user("conflict");
    let mut body = body_for(&user);
    body["idempotency_key"] = json!("order-42");
    let original = post(&server, CREATE, &token, None, &body);
    assert_eq!(original.status, 201, "{}", original.text());
    assert!(!replayed(&original));
    assert_eq!(
        original.json().get("idempotency_key"),
        None,
        "not a field of the notification"
    );

    // The same key by header, the same request spelled differently: a replay.
    let same = json!({"user_id": user, "kind": "ORDER_SHIPPED", "title": "ORDER_SHIPPED",
        "metadata": "{\"order\":42}"});
    let again = post(&server, CREATE, &token, Some("order-42"), &same);
    assert_eq!(again.status, 201, "{}", again.text());
    assert!(replayed(&again));
    assert_eq!(again.json()["id"], original.json()["id"]);

    let mut other = body_for(&user);
    other["payload"] = json!({"order": 43});
    let refused = post(&server, CREATE, &token, Some("order-42"), &other);
    assert_error(
        &refused,
        409,
        "idempotency_conflict",
        "idempotency key \"order-42\"",
        "other body",
    );

    let both = post(&server, CREATE, &token, Some("order-43"), &body);
    assert_error(
        &both,
        400,
        "invalid_idempotency_key",
        "Idempotency-Key: the header and",
        "differ",
    );
    assert_eq!(rows_of(&user), 1);
}

#[test]
fn a_batch_answers_a_repeated_key_with_its_original_in_place() {
    let server = TestServer::start();
    let token = service_token();
    let user = new_user("batch");
    let one = post(&server, CREATE, &token, Some("b-1"), &body_for(&user)).json();
    let item = |key: Option<&str>, n: i64| {
        let mut item = json!({"user_id": user, "kind": "ITEM", "payload": {"n": n}});
        if let Some(key) = key {
            item["idempotency_key"] = json!(key);
        }
        item
    };
    let mut first_item = body_for(&user);
    first_item["idempotency_key"] = json!("b-1");
    let batch = json!({"notifications": [item(Some("b-2"), 2), first_item, item(None, 3), item(Some("b-2"), 2)]});
    let answer = post(&server, BATCH, &token, None, &batch);
    assert_eq!(answer.status, 201, "{}", answer.text());
    assert!(!replayed(&answer), "partly replayed: no header");
    let items = answer.json()["notifications"]
        .as_array()
        .cloned()
        .expect("items");
    assert_eq!(items[1], one, "the original, in place");
    assert_eq!(
        items[0], items[3],
        "a key twice in one batch: one notification"
    );
    assert_ne!(items[0]["id"], items[2]["id"]);
    assert_eq!(rows_of(&user), 3);

    let again = post(&server, BATCH, &token, None, &batch);
    assert_eq!(again.status, 201, "{}", again.text());
    let again_items = again.json()["notifications"]
        .as_array()
        .cloned()
        .expect("items");
    assert_eq!(again_items[0], items[0]);
    assert_ne!(
        again_items[2]["id"], items[2]["id"],
        "an item without a key is new"
    );
    assert!(!replayed(&again), "one item was stored");

    let keyed_only = json!({"notifications": [item(Some("b-2"), 2), item(Some("b-2"), 2)]});
    let all = post(&server, BATCH, &token, None, &keyed_only);
    assert!(replayed(&all), "every item replayed: the header is set");

    let conflicting = json!({"notifications": [item(Some("b-9"), 9), item(Some("b-2"), 7)]});
    let refused = post(&server, BATCH, &token, None, &conflicting);
    assert_error(
        &refused,
        409,
        "idempotency_conflict",
        "notifications[1]: idempotency key \"b-2\"",
        "batch",
    );
    assert_eq!(rows_of(&user), 4, "all or none: b-9 was not stored");
    let retried = post(
        &server,
        CREATE,
        &token,
        None,
        &json!({"user_id": user, "kind": "ITEM",
        "payload": {"n": 10}, "idempotency_key": "b-9"}),
    );
    assert!(!replayed(&retried), "b-9 was rolled back with its batch");

    let header = post(
        &server,
        BATCH,
        &token,
        Some("b-3"),
        &json!({"notifications": [item(None, 1)]}),
    );
    assert_error(
        &header,
        400,
        "invalid_idempotency_key",
        "Idempotency-Key: a batch takes no",
        "header",
    );
}

#[test]
fn keys_are_per_service() {
    let server = TestServer::start();
    let user = new_user("scope");
    let a = post(
        &server,
        CREATE,
        &service("svc-a"),
        Some("same"),
        &body_for(&user),
    );
    let b = post(
        &server,
        CREATE,
        &service("svc-b"),
        Some("same"),
        &body_for(&user),
    );
    assert_eq!((a.status, b.status), (201, 201));
    assert!(!replayed(&a) && !replayed(&b));
    assert_ne!(a.json()["id"], b.json()["id"]);
    assert_eq!(rows_of(&user), 2);
}

#[test]
fn a_key_is_forgotten_after_the_window_and_purged_by_the_sweep() {
    let mut settings = common::settings();
    settings.idempotency_window = Some("1s".into());
    let server = TestServer::with(settings);
    let token = service_token();
    let user = new_user("window");
    let started = Instant::now();
    let first = post(&server, CREATE, &token, Some("w-1"), &body_for(&user)).json();
    post(&server, CREATE, &token, Some("w-2"), &body_for(&user));
    // Repeats answer the original until the window has passed; then one stores anew.
    let deadline = started + Duration::from_secs(10);
    let fresh = loop {
        let answer = post(&server, CREATE, &token, Some("w-1"), &body_for(&user));
        assert_eq!(answer.status, 201, "{}", answer.text());
        if !replayed(&answer) {
            break answer.json();
        }
        assert_eq!(answer.json()["id"], first["id"]);
        assert!(Instant::now() < deadline, "the key was never forgotten");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "forgotten before the window"
    );
    assert_ne!(fresh["id"], first["id"]);
    assert_eq!(rows_of(&user), 3);

    let sweep = notifd::retention::Sweep {
        retention_days: None,
        idempotency_window: Duration::from_secs(1),
    };
    let swept = notifd::retention::sweep_once(&common::database_url(), &sweep).expect("runs");
    assert!(swept.is_some_and(|s| s.keys >= 1), "{swept:?}");
    let left: Vec<String> = db()
        .query(
            "SELECT key FROM idempotency_keys WHERE service = 'test-service' AND key LIKE 'w-%'",
            &[],
        )
        .expect("keys")
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(
        left,
        vec!["w-1".to_string()],
        "w-2 purged; w-1 was taken anew just now"
    );
}

#[test]
fn bad_keys_are_refused_with_their_code() {
    let server = TestServer::start();
    let token = service_token();
    let user = new_user("badkey");
    let long = "k".repeat(256);
    for (key, what) in [("", "empty"), (long.as_str(), "256 characters")] {
        let answer = post(&server, CREATE, &token, Some(key), &body_for(&user));
        assert_error(
            &answer,
            400,
            "invalid_idempotency_key",
            "Idempotency-Key: must be 1 to 255",
            what,
        );
    }
    let ok = post(
        &server,
        CREATE,
        &token,
        Some(&"k".repeat(255)),
        &body_for(&user),
    );
    assert_eq!(ok.status, 201, "255 characters: {}", ok.text());
    for (key, what) in [
        (json!("bell\u{7}"), "control"),
        (json!("café"), "not ASCII"),
        (json!(7), "a number"),
    ] {
        let mut body = body_for(&user);
        body["idempotency_key"] = key;
        let answer = post(&server, CREATE, &token, None, &body);
        assert_error(
            &answer,
            400,
            "invalid_idempotency_key",
            "Idempotency-Key:",
            what,
        );
    }
    let mut raw =
        b"POST /v1/internal/notifications HTTP/1.1\r\nHost: t\r\nConnection: close\r\n".to_vec();
    raw.extend_from_slice(
        format!("Authorization: Bearer {token}\r\nContent-Type: application/json\r\n").as_bytes(),
    );
    raw.extend_from_slice(b"Idempotency-Key: caf\xe9\r\n");
    let body = body_for(&user).to_string();
    raw.extend_from_slice(format!("Content-Length: {}\r\n\r\n{body}", body.len()).as_bytes());
    let answer = server.raw(&raw);
    assert_error(
        &answer,
        400,
        "invalid_idempotency_key",
        "Idempotency-Key:",
        "obs-text header",
    );
    let batch = json!({"notifications": [{"user_id": user, "kind": "K", "payload": {}, "idempotency_key": ""}]});
    let answer = post(&server, BATCH, &token, None, &batch);
    assert_error(
        &answer,
        400,
        "invalid_batch",
        "notifications[0].Idempotency-Key",
        "batch item",
    );
    assert_eq!(rows_of(&user), 1);
}
