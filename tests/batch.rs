//! `POST /v1/internal/notifications/batch`: up to 1,000 notifications stored in one
//! transaction and published; one invalid item refuses the whole batch, naming each
//! bad item by index, and nothing is stored.

mod common;

use common::{new_user, next_notification, service_token, user_token, TestServer};
use serde_json::{json, Value};

fn batch(server: &TestServer, items: Vec<Value>) -> common::Response {
    server.send_json(
        "POST",
        "/v1/internal/notifications/batch",
        &service_token(),
        &json!({ "notifications": items }),
    )
}

fn stored(server: &TestServer, user: &str) -> usize {
    let list = server
        .get("/v1/notifications?limit=100", &user_token(user, &["*"]))
        .json();
    list["notifications"].as_array().map_or(0, Vec::len)
}

#[test]
fn a_batch_is_stored_published_and_answered_in_order() {
    let server = TestServer::start();
    let user = new_user("batch");
    let mut ws = server.ws(&format!(
        "token={}&workspaceSlug=acme",
        user_token(&user, &["acme"])
    ));
    let items: Vec<Value> = (0..3)
        .map(|i| json!({"user_id": user, "workspace": "acme", "kind": "k", "payload": {"i": i}}))
        .collect();
    let response = batch(&server, items);
    assert_eq!(response.status, 201, "{}", response.text());
    let created = response.json()["notifications"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(created.len(), 3);
    for (i, notification) in created.iter().enumerate() {
        assert_eq!(notification["payload"]["i"], i);
        assert_eq!(
            &next_notification(&mut ws),
            notification,
            "delivered live, in order"
        );
    }
    assert_eq!(stored(&server, &user), 3);
}

#[test]
fn one_invalid_item_refuses_the_batch_and_names_each_bad_index() {
    let server = TestServer::start();
    let user = new_user("batchbad");
    let items = vec![
        json!({"user_id": user, "kind": "ok", "payload": {}}),
        json!({"user_id": user, "kind": "bad kind", "payload": {}}),
        json!({"user_id": user, "kind": "ok", "payload": "just a string"}),
    ];
    let response = batch(&server, items);
    assert_eq!(response.status, 400, "{}", response.text());
    let error = &response.json()["error"];
    assert_eq!(error["code"], "invalid_batch");
    assert!(error["message"]
        .as_str()
        .unwrap_or_default()
        .starts_with("notifications[1].kind:"));
    let indexes: Vec<u64> = error["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["index"].as_u64())
        .collect();
    assert_eq!(indexes, vec![1, 2]);
    assert_eq!(stored(&server, &user), 0, "nothing stored");
}

#[test]
fn nul_in_an_item_refuses_the_batch_naming_the_item_and_field() {
    let server = TestServer::start();
    let user = new_user("batchnul");
    let items = vec![
        json!({"user_id": user, "kind": "ok", "payload": {}}),
        json!({"user_id": user, "kind": "ok", "title": "a\u{0}b", "payload": {}}),
        json!({"user_id": user, "kind": "ok", "payload": {"deep": [{"x": "\u{0}"}]}}),
    ];
    let response = batch(&server, items);
    common::assert_error(
        &response,
        400,
        "invalid_batch",
        "notifications[1].title:",
        "a batch with NUL in two items",
    );
    let messages: Vec<String> = response.json()["error"]["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|i| {
            format!(
                "{}:{}",
                i["index"],
                i["message"].as_str().unwrap_or_default()
            )
        })
        .collect();
    assert_eq!(messages.len(), 2, "{messages:?}");
    assert!(
        messages[1].starts_with("2:payload.deep[0].x:"),
        "{messages:?}"
    );
    assert_eq!(stored(&server, &user), 0, "nothing stored");
}

#[test]
fn batch_size_limits() {
    let server = TestServer::start();
    let user = new_user("batchsize");
    let item = json!({"user_id": user, "kind": "k", "payload": {}});
    for (count, status) in [(0, 400), (1001, 400), (1000, 201)] {
        let response = batch(&server, vec![item.clone(); count]);
        assert_eq!(
            response.status,
            status,
            "{count} items: {}",
            response.text()
        );
    }
    // Valid items, but a body over 1 MiB: refused while reading, nothing stored.
    let heavy = json!({"user_id": user, "kind": "k", "payload": {"pad": "x".repeat(6_000)}});
    let response = batch(&server, vec![heavy; 200]);
    common::assert_error(
        &response,
        413,
        "payload_too_large",
        "",
        "a 1.2 MB batch body",
    );
    let count = server.get("/v1/notifications/unread-count", &user_token(&user, &[]));
    assert_eq!(
        count.json()["unread"],
        1000,
        "only the 1,000-item batch was stored"
    );
}

#[test]
fn concurrent_creates_are_grouped_and_each_is_answered_and_stored() {
    let server = TestServer::start();
    let user = new_user("group");
    let ids: Vec<String> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let (server, user) = (&server, &user);
                scope.spawn(move || {
                    (0..25)
                        .map(|i| {
                            let body =
                                json!({"user_id": user, "kind": "k", "payload": {"t": t, "i": i}});
                            server.create(&body)["id"]
                                .as_str()
                                .unwrap_or_default()
                                .to_string()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        threads
            .into_iter()
            .flat_map(|t| t.join().expect("thread"))
            .collect()
    });
    let unique: std::collections::HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), 200);
    let token = user_token(&user, &[]);
    let count = server.get("/v1/notifications/unread-count", &token).json();
    assert_eq!(count["unread"], 200);
}
