//! Creating notifications: the stored shape (§1), the Redis publish, and validation
//! of create requests, including the second source document's payload examples.

mod common;

use std::time::Duration;

use common::{assert_error, new_user, service_token, user_token, TestServer};
use serde_json::{json, Value};

fn subscribe(server: &TestServer, user: &str) -> redis::PubSub<'static> {
    // Leak one connection per test: a PubSub borrows its connection.
    let client = redis::Client::open(common::redis_url()).expect("redis url");
    let conn: &'static mut redis::Connection =
        Box::leak(Box::new(client.get_connection().expect("redis up")));
    conn.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut pubsub = conn.as_pubsub();
    let channel = format!("{}notifications:{user}", server.config.redis_prefix);
    pubsub.subscribe(&channel).expect("subscribe");
    pubsub
}

#[test]
fn create_then_list_returns_every_field_and_publishes_the_same_json() {
    let server = TestServer::start();
    let user = new_user("create");
    let mut pubsub = subscribe(&server, &user);
    let created = server.create(&json!({
        "user_id": user, "workspace": "acme", "kind": "JOB_FAILED", "type": "error",
        "title": "Job failed", "message": "job 42 timed out", "payload": {"job_id": "42", "n": 1}
    }));

    let published: Value = serde_json::from_str(
        &pubsub
            .get_message()
            .expect("published")
            .get_payload::<String>()
            .expect("text"),
    )
    .expect("JSON");
    assert_eq!(published, created, "Redis carries the same JSON as the 201");

    let list = server
        .get("/v1/notifications", &user_token(&user, &["acme"]))
        .json();
    let listed = &list["notifications"][0];
    assert_eq!(listed, &created, "list returns what create returned");
    assert_eq!(list["cursor"], Value::Null);

    let id = uuid::Uuid::parse_str(listed["id"].as_str().expect("id")).expect("UUID");
    assert_eq!(id.get_version_num(), 7);
    assert_eq!(listed["user_id"], user.as_str());
    assert_eq!(listed["workspace"], "acme");
    assert_eq!(listed["kind"], "JOB_FAILED");
    assert_eq!(listed["type"], "error");
    assert_eq!(listed["title"], "Job failed");
    assert_eq!(listed["message"], "job 42 timed out");
    assert_eq!(listed["payload"], json!({"job_id": "42", "n": 1}));
    assert_eq!(listed["metadata"], listed["payload"]);
    assert_eq!(listed["read"], false);
    assert_eq!(listed["read_at"], Value::Null);
    assert_eq!(listed["timestamp"], listed["created_at"]);
    for field in ["created_at", "updated_at"] {
        let text = listed[field].as_str().expect("timestamp string");
        assert!(is_rfc3339_millis_utc(text), "{field} = {text}");
    }
}

fn is_rfc3339_millis_utc(text: &str) -> bool {
    let bytes = text.as_bytes();
    text.len() == 24
        && bytes[4] == b'-'
        && bytes[10] == b'T'
        && bytes[19] == b'.'
        && text.ends_with('Z')
        && time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).is_ok()
}

#[test]
fn defaults_and_the_grpc_string_payload() {
    let server = TestServer::start();
    let user = new_user("defaults");
    let created = server.create(&json!({"user_id": user, "kind": "WORKFLOW_CREATED", "payload": "{\"workflow_id\":\"w1\"}"}));
    assert_eq!(created["title"], "WORKFLOW_CREATED");
    assert_eq!(created["message"], "");
    assert_eq!(created["type"], "info");
    assert_eq!(created["workspace"], Value::Null);
    assert_eq!(created["payload"], json!({"workflow_id": "w1"}));

    let via_alias = server.create(&json!({"user_id": user, "kind": "k", "metadata": {"a": 1}}));
    assert_eq!(via_alias["payload"], json!({"a": 1}));
}

#[test]
fn second_source_document_payload_examples() {
    let server = TestServer::start();
    let user = new_user("payloads");
    let token = service_token();
    for (payload, expected) in [
        (json!("just a string"), "string that is not JSON"),
        (Value::Null, "got null"),
        (json!(["item1", "item2"]), "got an array"),
    ] {
        let response = server.send_json(
            "POST",
            "/v1/internal/notifications",
            &token,
            &json!({"user_id": user, "kind": "JOB_FAILED", "payload": payload}),
        );
        assert_error(
            &response,
            400,
            "invalid_field",
            "payload:",
            &payload.to_string(),
        );
        let message = response.json()["error"]["message"].to_string();
        assert!(message.contains(expected), "{message}");
    }
    let ok = server.send_json(
        "POST",
        "/v1/internal/notifications",
        &token,
        &json!({"user_id": user, "kind": "JOB_COMPLETED", "payload": {"workflow_id": "uuid", "status": "COMPLETED"}}),
    );
    assert_eq!(ok.status, 201, "{}", ok.text());
    // Nothing of the refused ones was stored.
    let list = server
        .get("/v1/notifications", &user_token(&user, &[]))
        .json();
    assert_eq!(list["notifications"].as_array().map(Vec::len), Some(1));
}

#[test]
fn invalid_fields_are_named_and_nothing_is_stored() {
    let server = TestServer::start();
    let user = new_user("invalid");
    let token = service_token();
    let cases = [
        (json!({"kind": "k", "payload": {}}), "user_id"),
        (
            json!({"user_id": "", "kind": "k", "payload": {}}),
            "user_id",
        ),
        (
            json!({"user_id": "x".repeat(256), "kind": "k", "payload": {}}),
            "user_id",
        ),
        (json!({"user_id": user, "payload": {}}), "kind"),
        (
            json!({"user_id": user, "kind": "bad kind!", "payload": {}}),
            "kind",
        ),
        (
            json!({"user_id": user, "kind": "x".repeat(65), "payload": {}}),
            "kind",
        ),
        (
            json!({"user_id": user, "kind": "k", "type": "fatal", "payload": {}}),
            "type",
        ),
        (json!({"user_id": user, "kind": "k"}), "payload"),
        (
            json!({"user_id": user, "kind": "k", "payload": {}, "colour": "red"}),
            "colour",
        ),
        (
            json!({"user_id": user, "kind": "k", "payload": {}, "workspace": 7}),
            "workspace",
        ),
    ];
    for (body, field) in cases {
        let response = server.send_json("POST", "/v1/internal/notifications", &token, &body);
        assert_error(
            &response,
            400,
            "invalid_field",
            &format!("{field}:"),
            &body.to_string(),
        );
    }
    let broken = server.request(
        "POST",
        "/v1/internal/notifications",
        &[
            ("Authorization", &format!("Bearer {token}")),
            ("Content-Type", "application/json"),
        ],
        Some(b"{\"user_id\": "),
    );
    assert_eq!(
        (broken.status, broken.error_code().as_str()),
        (400, "invalid_json")
    );
    let list = server
        .get("/v1/notifications", &user_token(&user, &["*"]))
        .json();
    assert_eq!(list["notifications"], json!([]));
}

#[test]
fn nul_in_any_string_is_400_naming_the_field_and_nothing_is_stored() {
    let server = TestServer::start();
    let user = new_user("nul");
    let token = service_token();
    let nul = "before\u{0}after";
    let base = json!({"user_id": user, "kind": "k", "payload": {}});
    let with = |field: &str, value: Value| {
        let mut body = base.clone();
        body[field] = value;
        if field == "metadata" {
            body.as_object_mut().map(|o| o.remove("payload"));
        }
        body
    };
    let cases = [
        (with("user_id", json!(nul)), "user_id:"),
        (with("kind", json!(nul)), "kind:"),
        (with("workspace", json!(nul)), "workspace:"),
        (with("title", json!(nul)), "title:"),
        (with("message", json!(nul)), "message:"),
        (with("type", json!(nul)), "type:"),
        (with("payload", json!({"a": {"b": nul}})), "payload.a.b:"),
        (
            with("payload", json!({"list": ["ok", nul]})),
            "payload.list[1]:",
        ),
        (
            with("payload", json!({"a": {"k\u{0}": 1}})),
            "payload.a.k\\0:",
        ),
        (with("metadata", json!({"m": nul})), "metadata.m:"),
        // The gRPC form: a string holding the JSON, with an escaped NUL inside.
        (with("payload", json!(r#"{"s":"\u0000"}"#)), "payload.s:"),
    ];
    for (body, message_start) in cases {
        let response = server.send_json("POST", "/v1/internal/notifications", &token, &body);
        assert_error(
            &response,
            400,
            "invalid_field",
            message_start,
            &body.to_string(),
        );
        let message = response.json()["error"]["message"].to_string();
        assert!(message.contains("NUL"), "says why: {message}");
    }
    let list = server
        .get("/v1/notifications", &user_token(&user, &["*"]))
        .json();
    assert_eq!(list["notifications"], json!([]), "nothing stored");
    // Other control characters are ordinary text, stored and answered as sent.
    let created = server.create(&with("title", json!("tab\there\u{1}")));
    assert_eq!(created["title"], "tab\there\u{1}");
}

#[test]
fn a_notification_over_64_kib_serialized_is_413() {
    let server = TestServer::start();
    let user = new_user("big");
    // 40 KiB fits in the body, but the notification carries it twice (payload and metadata).
    let body = json!({"user_id": user, "kind": "k", "payload": {"blob": "x".repeat(40 * 1024)}});
    let response = server.send_json(
        "POST",
        "/v1/internal/notifications",
        &service_token(),
        &body,
    );
    assert_eq!(response.status, 413, "{}", response.text());
    assert_eq!(response.error_code(), "payload_too_large");
    let list = server
        .get("/v1/notifications", &user_token(&user, &[]))
        .json();
    assert_eq!(list["notifications"], json!([]));
}
