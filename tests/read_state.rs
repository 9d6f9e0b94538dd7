//! Read state: `PATCH /v1/notifications/read` (validation, shared by every mark by
//! ids; visibility, idempotence, `read_at`/`updated_at`), `POST /v1/notifications/read-all` (filters, empty body,
//! refusals) and `GET /v1/notifications/unread-count`.

mod common;

use common::{assert_error, new_user, user_token, Response, TestServer};
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

fn create(server: &TestServer, user: &str, workspace: Option<&str>, kind: &str) -> String {
    let created = server.create(&json!({
        "user_id": user, "workspace": workspace, "kind": kind, "payload": {}
    }));
    created["id"].as_str().expect("id").to_string()
}

fn mark(server: &TestServer, token: &str, body: &Value) -> Response {
    server.send_json("PATCH", "/v1/notifications/read", token, body)
}

/// Marks `ids` read; returns `updated`. Panics unless 200.
fn mark_ids(server: &TestServer, token: &str, ids: &[&String]) -> u64 {
    let response = mark(server, token, &json!({ "ids": ids }));
    assert_eq!(response.status, 200, "{}", response.text());
    updated(&response)
}

fn read_all(server: &TestServer, token: &str, body: &Value) -> Response {
    server.send_json("POST", "/v1/notifications/read-all", token, body)
}

fn updated(response: &Response) -> u64 {
    let body = response.json();
    assert_eq!(
        body.as_object().map(|o| o.len()),
        Some(1),
        "only `updated`: {body}"
    );
    body["updated"]
        .as_u64()
        .unwrap_or_else(|| panic!("no updated count: {body}"))
}

fn unread(server: &TestServer, token: &str, query: &str) -> i64 {
    let response = server.get(&format!("/v1/notifications/unread-count{query}"), token);
    assert_eq!(response.status, 200, "{query}: {}", response.text());
    let body = response.json();
    assert_eq!(
        body.as_object().map(|o| o.len()),
        Some(2),
        "`unread` and `unseen`: {body}"
    );
    assert!(body["unseen"].is_i64(), "{body}");
    body["unread"]
        .as_i64()
        .unwrap_or_else(|| panic!("no unread count: {body}"))
}

/// Every notification the token sees (all fit one page of 100 in these tests).
fn list(server: &TestServer, token: &str) -> Vec<Value> {
    let response = server.get("/v1/notifications?limit=100", token);
    assert_eq!(response.status, 200, "{}", response.text());
    let body = response.json();
    assert_eq!(body["cursor"], Value::Null, "one page holds everything");
    body["notifications"].as_array().expect("array").clone()
}

fn find(server: &TestServer, token: &str, id: &str) -> Value {
    list(server, token)
        .into_iter()
        .find(|n| n["id"] == id)
        .unwrap_or_else(|| panic!("{id} is not listed"))
}

fn unread_ids(server: &TestServer, token: &str) -> Vec<String> {
    list(server, token)
        .into_iter()
        .filter(|n| n["read"] == false)
        .map(|n| n["id"].as_str().expect("id").to_string())
        .collect()
}

fn timestamp(n: &Value, field: &str) -> OffsetDateTime {
    let text = n[field]
        .as_str()
        .unwrap_or_else(|| panic!("{field} is not a string in {n}"));
    OffsetDateTime::parse(text, &Rfc3339).unwrap_or_else(|e| panic!("{field} = {text}: {e}"))
}

/// Waits (on the clock, not a fixed sleep) until the wall clock is at least one
/// millisecond past `at`, so a timestamp the server takes next is visibly later at the
/// millisecond precision of the API.
fn wait_past(at: OffsetDateTime) {
    let target = at + time::Duration::milliseconds(1);
    while OffsetDateTime::now_utc() < target {
        std::thread::yield_now();
    }
}

#[test]
fn every_mark_validates_its_ids_names_the_field_and_changes_nothing() {
    let server = TestServer::start();
    let user = new_user("validate");
    let token = user_token(&user, &[]);
    let id = create(&server, &user, None, "k");
    let many: Vec<String> = (0..101).map(|_| uuid::Uuid::now_v7().to_string()).collect();

    let cases = [
        (json!({"ids": []}), "ids:"),
        (json!({ "ids": many }), "ids:"),
        (json!({"ids": [id, "not-a-uuid"]}), "ids[1]:"),
        (json!({"ids": [id, 42]}), "ids[1]:"),
        (json!({"ids": [null]}), "ids[0]:"),
        (json!({}), "ids:"),
        (json!({"ids": id}), "ids:"),
        (json!({"ids": {"0": id}}), "ids:"),
        (json!({"ids": null}), "ids:"),
        (json!({"ids": [id], "all": true}), "all:"),
    ];
    // Every mark by ids validates its body the same way (one function serves them).
    for path in ["read", "seen", "unread", "archive", "unarchive"]
        .map(|mark| format!("/v1/notifications/{mark}"))
    {
        for (body, start) in &cases {
            let response = server.send_json("PATCH", &path, &token, body);
            assert_error(
                &response,
                400,
                "invalid_field",
                start,
                &format!("{path} {body}"),
            );
        }
        let auth = format!("Bearer {token}");
        let send = |content_type: Option<&str>, body: Option<&[u8]>| {
            let mut headers = vec![("Authorization", auth.as_str())];
            headers.extend(content_type.map(|t| ("Content-Type", t)));
            server.request("PATCH", &path, &headers, body)
        };
        // An empty body, or none, is a missing `ids`.
        let empty = send(None, Some(b""));
        assert_error(
            &empty,
            400,
            "invalid_field",
            "ids:",
            &format!("{path}: empty body"),
        );
        let bodiless = send(None, None);
        assert_error(
            &bodiless,
            400,
            "invalid_field",
            "ids:",
            &format!("{path}: no body"),
        );
        let broken = send(Some("application/json"), Some(b"{\"ids\": ["));
        assert_error(
            &broken,
            400,
            "invalid_json",
            "",
            &format!("{path}: bad JSON"),
        );
        let text = format!("{{\"ids\":[\"{id}\"]}}");
        let plain = send(Some("text/plain"), Some(text.as_bytes()));
        assert_error(
            &plain,
            415,
            "unsupported_media_type",
            "",
            &format!("{path}: text/plain"),
        );
    }

    // None of the refused requests changed the valid id they held.
    assert_eq!(unread_ids(&server, &token), vec![id.clone()]);
    let n = find(&server, &token, &id);
    assert_eq!(
        (n["seen_at"].clone(), n["archived_at"].clone()),
        (Value::Null, Value::Null),
        "{n}"
    );
    assert_eq!(unread(&server, &token, ""), 1);

    // Exactly 100 ids is allowed; unknown ones are ignored.
    let mut hundred: Vec<String> = (0..99).map(|_| uuid::Uuid::now_v7().to_string()).collect();
    hundred.push(id.clone());
    let response = mark(&server, &token, &json!({ "ids": hundred }));
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(updated(&response), 1);
    assert_eq!(unread(&server, &token, ""), 0);
}

#[test]
fn other_users_ids_and_ungranted_workspaces_are_ignored() {
    let server = TestServer::start();
    let alice = new_user("alice");
    let bob = new_user("bob");
    let alice_token = user_token(&alice, &["acme"]);
    let alice_all = user_token(&alice, &["*"]);
    let bob_token = user_token(&bob, &["acme"]);

    let b_user = create(&server, &bob, None, "k");
    let b_acme = create(&server, &bob, Some("acme"), "k");
    let a_user = create(&server, &alice, None, "k");
    let a_secret = create(&server, &alice, Some("secret"), "k");
    let unknown = uuid::Uuid::now_v7().to_string();

    let count = mark_ids(
        &server,
        &alice_token,
        &[&b_user, &b_acme, &a_user, &a_secret, &unknown],
    );
    assert_eq!(count, 1, "only alice's visible notification is marked");

    // Bob's stay unread.
    assert_eq!(unread(&server, &bob_token, ""), 2);
    let bobs = list(&server, &bob_token);
    assert_eq!(bobs.len(), 2);
    for n in &bobs {
        assert_eq!(n["read"], false, "{n}");
        assert_eq!(n["read_at"], Value::Null, "{n}");
    }
    // Alice's notification in a workspace her token did not grant stays unread.
    let secret = find(&server, &alice_all, &a_secret);
    assert_eq!(secret["read"], false, "{secret}");
    assert_eq!(secret["read_at"], Value::Null, "{secret}");
    assert_eq!(find(&server, &alice_all, &a_user)["read"], true);
    assert_eq!(unread(&server, &alice_all, ""), 1);
    assert_eq!(unread(&server, &alice_token, ""), 0);
}

#[test]
fn marking_again_keeps_the_first_read_at_and_counts_only_new_rows() {
    let server = TestServer::start();
    let user = new_user("idempotent");
    let token = user_token(&user, &[]);
    let n0 = create(&server, &user, None, "k");
    let n1 = create(&server, &user, None, "k");
    let n2 = create(&server, &user, None, "k");

    let before = find(&server, &token, &n1);
    assert_eq!(before["read"], false);
    assert_eq!(before["read_at"], Value::Null);
    assert_eq!(before["updated_at"], before["created_at"]);
    wait_past(timestamp(&before, "created_at"));

    assert_eq!(mark_ids(&server, &token, &[&n0, &n1]), 2);
    let first = list(&server, &token);
    assert_eq!(first.len(), 3, "n0, n1 and n2");
    for n in &first {
        let id = n["id"].as_str().expect("id");
        if id == n2 {
            assert_eq!(n["read"], false, "untouched: {n}");
            assert_eq!(n["read_at"], Value::Null, "untouched: {n}");
            assert_eq!(n["updated_at"], n["created_at"], "untouched: {n}");
            continue;
        }
        assert_eq!(n["read"], true, "{n}");
        assert_eq!(
            n["updated_at"], n["read_at"],
            "updated_at is set with read_at: {n}"
        );
        assert!(
            timestamp(n, "read_at") > timestamp(n, "created_at"),
            "read_at is after created_at: {n}"
        );
    }
    let first_n1 = find(&server, &token, &n1);
    assert_ne!(first_n1["updated_at"], before["updated_at"]);
    wait_past(timestamp(&first_n1, "read_at"));

    // Again: nothing newly marked, the first read_at and updated_at are kept.
    assert_eq!(mark_ids(&server, &token, &[&n0, &n1]), 0);
    let again = find(&server, &token, &n1);
    assert_eq!(again["read_at"], first_n1["read_at"], "first read_at kept");
    assert_eq!(again["updated_at"], first_n1["updated_at"]);
    assert_eq!(again["read"], true);

    // A mixed call counts only the newly marked one; a repeated id counts once.
    assert_eq!(mark_ids(&server, &token, &[&n0, &n1, &n2, &n2]), 1);
    assert_eq!(find(&server, &token, &n1)["read_at"], first_n1["read_at"]);
    let last = find(&server, &token, &n2);
    assert_eq!(last["read"], true);
    assert!(timestamp(&last, "read_at") > timestamp(&first_n1, "read_at"));
    assert_eq!(unread(&server, &token, ""), 0);
}

#[test]
fn read_all_marks_every_visible_unread_notification() {
    let server = TestServer::start();
    let user = new_user("read-all");
    let other = new_user("read-all-other");
    let token = user_token(&user, &["acme", "beta"]);
    let all_token = user_token(&user, &["*"]);
    let other_token = user_token(&other, &["*"]);

    let early = create(&server, &user, Some("acme"), "k");
    create(&server, &user, Some("beta"), "k");
    create(&server, &user, None, "k");
    create(&server, &user, Some("acme"), "other");
    let secret = create(&server, &user, Some("secret"), "k");
    create(&server, &other, None, "k");
    create(&server, &other, Some("acme"), "k");

    assert_eq!(mark_ids(&server, &token, &[&early]), 1);
    let early_read_at = find(&server, &token, &early)["read_at"].clone();
    wait_past(timestamp(&find(&server, &token, &early), "read_at"));

    let response = read_all(&server, &token, &json!({}));
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(updated(&response), 3, "the 3 visible unread ones");
    assert_eq!(unread(&server, &token, ""), 0);
    assert!(list(&server, &token).iter().all(|n| n["read"] == true));
    assert_eq!(
        find(&server, &token, &early)["read_at"],
        early_read_at,
        "an already read one keeps its read_at"
    );
    // Not granted: untouched. Another user's: untouched.
    assert_eq!(unread_ids(&server, &all_token), vec![secret]);
    assert_eq!(unread(&server, &other_token, ""), 2);

    let again = read_all(&server, &token, &json!({}));
    assert_eq!(updated(&again), 0);
}

#[test]
fn read_all_with_a_workspace_or_kind_filter() {
    let server = TestServer::start();
    let user = new_user("read-all-filter");
    let token = user_token(&user, &["acme", "beta"]);
    let acme_a = create(&server, &user, Some("acme"), "A");
    let acme_b = create(&server, &user, Some("acme"), "B");
    let beta_a = create(&server, &user, Some("beta"), "A");
    let beta_b = create(&server, &user, Some("beta"), "B");
    let user_a = create(&server, &user, None, "A");
    let user_b = create(&server, &user, None, "B");

    // A workspace: that workspace's and the user-level ones.
    let response = read_all(&server, &token, &json!({"workspace": "acme", "kind": null}));
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(updated(&response), 4);
    let mut left = unread_ids(&server, &token);
    left.sort();
    let mut expected = vec![beta_a.clone(), beta_b.clone()];
    expected.sort();
    assert_eq!(left, expected);
    assert!([acme_a, acme_b, user_a, user_b]
        .iter()
        .all(|id| find(&server, &token, id)["read"] == true));

    // A kind: only that kind.
    let response = read_all(&server, &token, &json!({"kind": "B"}));
    assert_eq!(updated(&response), 1);
    assert_eq!(unread_ids(&server, &token), vec![beta_a.clone()]);

    // Both: nothing matches any more.
    let response = read_all(&server, &token, &json!({"workspace": "beta", "kind": "B"}));
    assert_eq!(updated(&response), 0);
    let response = read_all(&server, &token, &json!({"workspace": "beta", "kind": "A"}));
    assert_eq!(updated(&response), 1);
    assert_eq!(unread(&server, &token, ""), 0);
}

#[test]
fn read_all_with_an_empty_body_marks_everything() {
    let server = TestServer::start();
    let user = new_user("read-all-empty");
    let token = user_token(&user, &["acme"]);
    let auth = format!("Bearer {token}");
    create(&server, &user, Some("acme"), "k");
    create(&server, &user, None, "k");

    // No Content-Type, Content-Length: 0.
    let response = server.request(
        "POST",
        "/v1/notifications/read-all",
        &[("Authorization", &auth)],
        Some(b""),
    );
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(updated(&response), 2);
    assert_eq!(unread(&server, &token, ""), 0);

    // No body at all and no Content-Length (what `curl -X POST` sends).
    create(&server, &user, None, "k");
    let response = server.request(
        "POST",
        "/v1/notifications/read-all",
        &[("Authorization", &auth)],
        None,
    );
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(updated(&response), 1);
    assert_eq!(unread(&server, &token, ""), 0);
}

#[test]
fn every_bulk_refuses_unknown_fields_bad_values_and_ungranted_workspaces() {
    let server = TestServer::start();
    let user = new_user("read-all-refused");
    let token = user_token(&user, &["acme"]);
    create(&server, &user, Some("acme"), "k");
    create(&server, &user, None, "k");

    let cases = [
        (json!({"colour": "red"}), 400, "invalid_field", "colour:"),
        (
            json!({"kind": "k", "ids": []}),
            400,
            "invalid_field",
            "ids:",
        ),
        (json!({"kind": 7}), 400, "invalid_field", "kind:"),
        (json!({"kind": "bad kind!"}), 400, "invalid_field", "kind:"),
        (
            json!({"workspace": ["acme"]}),
            400,
            "invalid_field",
            "workspace:",
        ),
        (
            json!({"workspace": "secret"}),
            403,
            "workspace_forbidden",
            "workspace:",
        ),
        (json!(["acme"]), 400, "invalid_json", ""),
    ];
    // Every bulk reads its filters the same way (one function serves them).
    for path in ["read-all", "seen-all", "archive-all"].map(|b| format!("/v1/notifications/{b}")) {
        for (body, status, code, start) in &cases {
            let response = server.send_json("POST", &path, &token, body);
            assert_error(&response, *status, code, start, &format!("{path} {body}"));
        }
        let not_json = server.request(
            "POST",
            &path,
            &[
                ("Authorization", &format!("Bearer {token}")),
                ("Content-Type", "text/plain"),
            ],
            Some(b"workspace=acme"),
        );
        assert_error(
            &not_json,
            415,
            "unsupported_media_type",
            "",
            &format!("{path}: text/plain body"),
        );
    }
    assert_eq!(unread(&server, &token, ""), 2, "nothing was marked");
    assert!(list(&server, &token)
        .iter()
        .all(|n| n["seen_at"].is_null() && n["archived_at"].is_null()));
}

#[test]
fn unread_count_follows_creates_and_reads() {
    let server = TestServer::start();
    let user = new_user("count");
    let other = new_user("count-other");
    let token = user_token(&user, &["acme", "beta"]);
    let acme_only = user_token(&user, &["acme"]);
    let other_token = user_token(&other, &["*"]);

    assert_eq!(unread(&server, &token, ""), 0);
    let acme = create(&server, &user, Some("acme"), "k");
    assert_eq!(unread(&server, &token, ""), 1);
    let beta = create(&server, &user, Some("beta"), "k");
    let personal = create(&server, &user, None, "k");
    create(&server, &user, Some("secret"), "k");
    // Another user's notifications never count.
    create(&server, &other, None, "k");
    create(&server, &other, Some("acme"), "k");

    assert_eq!(unread(&server, &token, ""), 3);
    assert_eq!(
        unread(&server, &token, "?workspace=acme"),
        2,
        "acme + user-level"
    );
    assert_eq!(
        unread(&server, &token, "?workspace=beta"),
        2,
        "beta + user-level"
    );
    assert_eq!(
        unread(&server, &token, "?workspace="),
        3,
        "empty = no filter"
    );
    assert_eq!(
        unread(&server, &acme_only, ""),
        2,
        "only what the token sees"
    );
    assert_eq!(unread(&server, &other_token, ""), 2);

    assert_eq!(mark_ids(&server, &token, &[&personal]), 1);
    assert_eq!(unread(&server, &token, ""), 2);
    assert_eq!(unread(&server, &token, "?workspace=acme"), 1);
    assert_eq!(mark_ids(&server, &token, &[&acme]), 1);
    assert_eq!(unread(&server, &token, "?workspace=acme"), 0);
    assert_eq!(unread(&server, &token, "?workspace=beta"), 1);
    assert_eq!(mark_ids(&server, &token, &[&beta]), 1);
    assert_eq!(unread(&server, &token, ""), 0);

    create(&server, &user, None, "k");
    assert_eq!(unread(&server, &token, ""), 1);
    assert_eq!(updated(&read_all(&server, &token, &json!({}))), 1);
    assert_eq!(unread(&server, &token, ""), 0);
    assert_eq!(
        unread(&server, &other_token, ""),
        2,
        "the other user's are untouched"
    );

    assert_error(
        &server.get("/v1/notifications/unread-count?workspace=secret", &token),
        403,
        "workspace_forbidden",
        "workspace:",
        "a workspace the token does not grant",
    );
}
