//! Seen and archived state: `PATCH /v1/notifications/{seen,unread,archive,unarchive}`
//! (visibility, idempotence; their validation is `read_state`'s, shared with read),
//! `POST …/seen-all` and `…/archive-all`, the list's `archived` filter,
//! `unread-count`'s two counts following every change, the state message each change
//! publishes on Redis, and that a down Redis fails no mark.

mod common;

use std::time::Duration;

use common::{assert_error, counts, new_user, user_token, Response, TestServer};
use serde_json::{json, Value};

fn create(server: &TestServer, user: &str, workspace: Option<&str>, kind: &str) -> String {
    let created = server.create(&json!({
        "user_id": user, "workspace": workspace, "kind": kind, "payload": {}
    }));
    created["id"].as_str().expect("id").to_string()
}

/// `PATCH /v1/notifications/{mark}` with `ids`; returns `updated`, panics unless 200.
fn mark(server: &TestServer, token: &str, mark: &str, ids: &[&String]) -> u64 {
    let path = format!("/v1/notifications/{mark}");
    let response = server.send_json("PATCH", &path, token, &json!({ "ids": ids }));
    updated(&response, &path)
}

/// `POST /v1/notifications/{bulk}` with a body; returns `updated`, panics unless 200.
fn bulk(server: &TestServer, token: &str, bulk: &str, body: &Value) -> u64 {
    let path = format!("/v1/notifications/{bulk}");
    updated(&server.send_json("POST", &path, token, body), &path)
}

fn updated(response: &Response, what: &str) -> u64 {
    assert_eq!(response.status, 200, "{what}: {}", response.text());
    let body = response.json();
    assert_eq!(body.as_object().map(|o| o.len()), Some(1), "{body}");
    body["updated"].as_u64().expect("updated")
}

/// Ids of one list page with `query`, and its cursor.
fn page(server: &TestServer, token: &str, query: &str) -> (Vec<String>, Option<String>) {
    let response = server.get(&format!("/v1/notifications?{query}"), token);
    assert_eq!(response.status, 200, "{query}: {}", response.text());
    let body = response.json();
    let ids = body["notifications"]
        .as_array()
        .expect("array")
        .iter()
        .map(|n| n["id"].as_str().expect("id").to_string())
        .collect();
    (ids, body["cursor"].as_str().map(String::from))
}

fn ids(query: &str, server: &TestServer, token: &str) -> Vec<String> {
    let (ids, cursor) = page(server, token, query);
    assert_eq!(cursor, None, "one page: {query}");
    ids
}

fn find(server: &TestServer, token: &str, id: &str) -> Value {
    let response = server.get("/v1/notifications?archived=any&limit=100", token);
    response.json()["notifications"]
        .as_array()
        .expect("array")
        .iter()
        .find(|n| n["id"] == id)
        .cloned()
        .unwrap_or_else(|| panic!("{id} not listed"))
}

#[test]
fn marks_are_idempotent_undoable_and_move_both_counts() {
    let server = TestServer::start();
    let user = new_user("marks");
    let token = user_token(&user, &[]);
    let a = create(&server, &user, None, "k");
    let b = create(&server, &user, None, "k");
    assert_eq!(counts(&server, &token, ""), (2, 2));

    assert_eq!(mark(&server, &token, "seen", &[&a, &b]), 2);
    assert_eq!(
        mark(&server, &token, "seen", &[&a, &b]),
        0,
        "again: nothing new"
    );
    assert_eq!(counts(&server, &token, ""), (2, 0));
    let seen = find(&server, &token, &a);
    assert_eq!(seen["seen"], true, "{seen}");
    assert_eq!(seen["updated_at"], seen["seen_at"], "{seen}");
    assert_eq!(seen["read"], false, "seen is not read: {seen}");

    assert_eq!(mark(&server, &token, "read", &[&a]), 1);
    assert_eq!(counts(&server, &token, ""), (1, 0));
    assert_eq!(
        mark(&server, &token, "unread", &[&a, &b]),
        1,
        "only a was read"
    );
    assert_eq!(mark(&server, &token, "unread", &[&a]), 0);
    let undone = find(&server, &token, &a);
    assert_eq!(
        (undone["read"].clone(), undone["read_at"].clone()),
        (json!(false), Value::Null)
    );
    assert_eq!(counts(&server, &token, ""), (2, 0));

    // Archived ones leave the counts (both) and the default list; unarchive restores.
    assert_eq!(mark(&server, &token, "unread", &[&a]), 0);
    assert_eq!(mark(&server, &token, "archive", &[&a]), 1);
    assert_eq!(mark(&server, &token, "archive", &[&a]), 0);
    assert_eq!(counts(&server, &token, ""), (1, 0));
    assert_eq!(ids("", &server, &token), vec![b.clone()]);
    assert_eq!(ids("archived=true", &server, &token), vec![a.clone()]);
    assert_eq!(
        ids("archived=any", &server, &token),
        vec![b.clone(), a.clone()]
    );
    let archived = find(&server, &token, &a);
    assert_eq!(
        archived["updated_at"], archived["archived_at"],
        "{archived}"
    );
    // Marking an archived one read moves no count: it is not counted.
    assert_eq!(mark(&server, &token, "read", &[&a]), 1);
    assert_eq!(counts(&server, &token, ""), (1, 0));
    assert_eq!(mark(&server, &token, "unarchive", &[&a]), 1);
    assert_eq!(mark(&server, &token, "unarchive", &[&a]), 0);
    assert_eq!(find(&server, &token, &a)["archived_at"], Value::Null);
    assert_eq!(counts(&server, &token, ""), (1, 0), "a is read and seen");
    assert_eq!(mark(&server, &token, "unread", &[&a]), 1);
    assert_eq!(counts(&server, &token, ""), (2, 0));
}

#[test]
fn other_users_ids_and_ungranted_workspaces_are_ignored_by_every_mark() {
    let server = TestServer::start();
    let (alice, bob) = (new_user("alice"), new_user("bob"));
    let alice_acme = user_token(&alice, &["acme"]);
    let alice_all = user_token(&alice, &["*"]);
    let bob_all = user_token(&bob, &["*"]);
    let bobs = create(&server, &bob, None, "k");
    let secret = create(&server, &alice, Some("secret"), "k");
    let mine = create(&server, &alice, Some("acme"), "k");
    for (name, undo) in [("read", "unread"), ("seen", ""), ("archive", "unarchive")] {
        assert_eq!(
            mark(&server, &alice_acme, name, &[&bobs, &secret, &mine]),
            1,
            "{name}"
        );
        if !undo.is_empty() {
            assert_eq!(
                mark(&server, &alice_acme, undo, &[&bobs, &secret, &mine]),
                1,
                "{undo}"
            );
        }
    }
    for (token, id) in [(&bob_all, &bobs), (&alice_all, &secret)] {
        let n = find(&server, token, id);
        for field in ["read_at", "seen_at", "archived_at"] {
            assert_eq!(n[field], Value::Null, "untouched {field}: {n}");
        }
    }
    assert_eq!(counts(&server, &bob_all, ""), (1, 1));
    assert_eq!(
        counts(&server, &alice_all, ""),
        (2, 1),
        "mine is seen; secret untouched"
    );
    assert_eq!(
        counts(&server, &alice_acme, ""),
        (1, 0),
        "the token does not see secret"
    );
    assert_eq!(counts(&server, &alice_all, "?workspace=secret"), (1, 1));
    assert_error(
        &server.get(
            "/v1/notifications/unread-count?workspace=secret",
            &alice_acme,
        ),
        403,
        "workspace_forbidden",
        "workspace:",
        "a workspace the token does not grant",
    );
}

#[test]
fn seen_all_and_archive_all_take_read_alls_filters() {
    let server = TestServer::start();
    let user = new_user("bulk");
    let token = user_token(&user, &["acme", "beta"]);
    let all = user_token(&user, &["*"]);
    let acme_a = create(&server, &user, Some("acme"), "A");
    let acme_b = create(&server, &user, Some("acme"), "B");
    let beta_a = create(&server, &user, Some("beta"), "A");
    let personal = create(&server, &user, None, "B");
    create(&server, &user, Some("secret"), "A");
    assert_eq!(counts(&server, &token, ""), (4, 4));
    assert_eq!(counts(&server, &token, "?workspace=acme"), (3, 3));

    assert_eq!(
        bulk(&server, &token, "seen-all", &json!({"workspace": "acme"})),
        3
    );
    assert_eq!(counts(&server, &token, ""), (4, 1));
    assert_eq!(
        bulk(&server, &token, "seen-all", &json!({"kind": "A"})),
        1,
        "beta_a"
    );
    assert_eq!(bulk(&server, &token, "seen-all", &json!({})), 0);
    assert_eq!(
        counts(&server, &all, ""),
        (5, 1),
        "secret: the token did not grant it"
    );

    assert_eq!(
        bulk(&server, &token, "archive-all", &json!({"kind": "B"})),
        2
    );
    assert_eq!(
        bulk(&server, &token, "archive-all", &json!({"kind": "B"})),
        0
    );
    assert_eq!(counts(&server, &token, ""), (2, 0));
    assert_eq!(
        ids("archived=true", &server, &token),
        vec![personal.clone(), acme_b.clone()]
    );
    assert_eq!(
        ids("", &server, &token),
        vec![beta_a.clone(), acme_a.clone()]
    );
    let auth = format!("Bearer {token}");
    let bodiless = server.request(
        "POST",
        "/v1/notifications/archive-all",
        &[("Authorization", &auth)],
        None,
    );
    assert_eq!(updated(&bodiless, "archive-all without a body"), 2);
    assert_eq!(counts(&server, &token, ""), (0, 0));
    assert_eq!(counts(&server, &all, ""), (1, 1), "secret stays");
}

#[test]
fn the_archived_filter_combines_with_unread_kind_workspace_and_paging() {
    let server = TestServer::start();
    let user = new_user("archived");
    let token = user_token(&user, &["acme", "beta"]);
    // Oldest first: 6 in acme (kinds alternate), 2 in beta, 1 user-level.
    let acme: Vec<String> = (0..6)
        .map(|i| {
            create(
                &server,
                &user,
                Some("acme"),
                if i % 2 == 0 { "A" } else { "B" },
            )
        })
        .collect();
    let beta: Vec<String> = (0..2)
        .map(|_| create(&server, &user, Some("beta"), "A"))
        .collect();
    let personal = create(&server, &user, None, "A");
    let newest_first =
        |ids: &[&String]| ids.iter().rev().map(|s| s.to_string()).collect::<Vec<_>>();
    // Archive acme 0, 1, 2 and beta 0; read acme 0 and 3.
    assert_eq!(
        mark(
            &server,
            &token,
            "archive",
            &[&acme[0], &acme[1], &acme[2], &beta[0]]
        ),
        4
    );
    assert_eq!(mark(&server, &token, "read", &[&acme[0], &acme[3]]), 2);

    assert_eq!(
        ids("archived=true", &server, &token),
        newest_first(&[&acme[0], &acme[1], &acme[2], &beta[0]])
    );
    assert_eq!(
        ids("archived=true&unread=true", &server, &token),
        newest_first(&[&acme[1], &acme[2], &beta[0]])
    );
    assert_eq!(
        ids("archived=true&kind=A", &server, &token),
        newest_first(&[&acme[0], &acme[2], &beta[0]])
    );
    assert_eq!(
        ids("archived=true&workspace=beta", &server, &token),
        vec![beta[0].clone()]
    );
    assert_eq!(
        ids("unread=true&workspace=acme", &server, &token),
        newest_first(&[&acme[4], &acme[5], &personal])
    );
    assert_eq!(
        ids("archived=false&kind=B", &server, &token),
        newest_first(&[&acme[3], &acme[5]])
    );
    assert_eq!(ids("archived=any&unread=true", &server, &token).len(), 7);

    // Paging through archived ones, two at a time: every one once, newest first.
    let mut walked = Vec::new();
    let mut query = "archived=true&limit=2".to_string();
    loop {
        let (ids, cursor) = page(&server, &token, &query);
        walked.extend(ids);
        let Some(cursor) = cursor else { break };
        query = format!("archived=true&limit=2&cursor={cursor}");
    }
    assert_eq!(
        walked,
        newest_first(&[&acme[0], &acme[1], &acme[2], &beta[0]])
    );

    for bad in ["yes", "2", "TRUE", "all"] {
        let response = server.get(&format!("/v1/notifications?archived={bad}"), &token);
        assert_error(&response, 400, "invalid_field", "archived:", bad);
    }
}

/// Reads the next message on `pubsub` within 5 s, as JSON.
fn next_message(pubsub: &mut redis::PubSub<'_>) -> Value {
    let message = pubsub.get_message().expect("a state message within 5 s");
    let text: String = message.get_payload().expect("text payload");
    serde_json::from_str(&text).expect("JSON")
}

#[test]
fn each_change_publishes_what_it_changed_and_the_counters_it_left() {
    let server = TestServer::start();
    let user = new_user("publish");
    let token = user_token(&user, &["acme"]);
    let client = redis::Client::open(common::redis_url()).expect("redis URL");
    let mut conn = client.get_connection().expect("redis");
    let mut pubsub = conn.as_pubsub();
    let channel = format!("{}notifd:state:{user}", server.config.redis_prefix);
    pubsub.subscribe(&channel).expect("subscribe");
    pubsub
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");

    let a = create(&server, &user, Some("acme"), "k");
    let b = create(&server, &user, None, "k");
    // Each create publishes the counter row it moved (a `counts` event, no change),
    // after answering: two creates' messages may arrive in either order.
    let mut moved: Vec<Value> = (0..2).map(|_| next_message(&mut pubsub)).collect();
    moved.sort_by_key(|m| m["counters"][0]["workspace"].is_null());
    for (workspace, created) in [json!("acme"), Value::Null].into_iter().zip(moved) {
        assert_eq!(created["change"], Value::Null, "{created}");
        assert!(
            created["counters"][0]["version"].as_i64() > Some(0),
            "the row carries its version: {created}"
        );
        assert_eq!(
            created["counters"],
            json!([{"workspace": workspace, "unread": 1, "unseen": 1,
                    "version": created["counters"][0]["version"]}]),
            "the row the create moved"
        );
    }
    assert_eq!(mark(&server, &token, "read", &[&a, &b]), 2);
    let read = next_message(&mut pubsub);
    assert_eq!(read["user_id"], user.as_str());
    assert_eq!(read["change"]["by"], "ids");
    let at = find(&server, &token, &a)["read_at"].clone();
    assert_eq!(read["change"]["changes"], json!({"read_at": at}));
    assert_eq!(
        read["change"]["ids"],
        json!([{"id": a, "workspace": "acme"}, {"id": b, "workspace": null}]),
        "the changed ids, oldest first"
    );
    let rows = read["counters"].as_array().expect("counters").clone();
    assert_eq!(rows.len(), 2, "{read}");
    assert_eq!(
        (
            rows[0]["workspace"].clone(),
            rows[0]["unread"].clone(),
            rows[0]["unseen"].clone()
        ),
        (Value::Null, json!(0), json!(1))
    );
    assert_eq!(
        (rows[1]["workspace"].clone(), rows[1]["unread"].clone()),
        (json!("acme"), json!(0))
    );

    // Nothing changed: nothing published. The next message is the undo's.
    assert_eq!(mark(&server, &token, "read", &[&a]), 0);
    assert_eq!(mark(&server, &token, "unread", &[&a]), 1);
    let undo = next_message(&mut pubsub);
    assert_eq!(undo["change"]["changes"], json!({"read_at": null}));
    assert_eq!(undo["counters"][0]["workspace"], "acme");
    assert_eq!(undo["counters"][0]["unread"], 1);
    assert!(
        undo["counters"][0]["version"].as_i64() > rows[1]["version"].as_i64(),
        "the version grew: {undo} after {read}"
    );

    assert_eq!(
        bulk(
            &server,
            &token,
            "archive-all",
            &json!({"workspace": "acme"})
        ),
        2
    );
    let archived = next_message(&mut pubsub);
    let change = &archived["change"];
    assert_eq!(change["by"], "bulk");
    assert_eq!(change["filter"], json!({"workspace": "acme", "kind": null}));
    assert_eq!(change["through"], json!(b), "the highest id it changed");
    assert!(change["changes"]["archived_at"].is_string(), "{archived}");
    let counters: Vec<(Value, Value, Value)> = archived["counters"]
        .as_array()
        .expect("counters")
        .iter()
        .map(|r| {
            (
                r["workspace"].clone(),
                r["unread"].clone(),
                r["unseen"].clone(),
            )
        })
        .collect();
    assert_eq!(
        counters,
        vec![
            (Value::Null, json!(0), json!(0)),
            (json!("acme"), json!(0), json!(0))
        ]
    );
}

#[test]
fn marks_answer_at_once_while_redis_is_down() {
    // Declared first, dropped last: the server shuts down while Redis still runs.
    let (mut redis, _prefix, server) = common::server_on_own_redis();
    let user = new_user("outage");
    let token = user_token(&user, &[]);
    let ids: Vec<String> = (0..10).map(|_| create(&server, &user, None, "k")).collect();
    redis.kill();
    for (i, id) in ids.iter().enumerate() {
        let started = std::time::Instant::now();
        assert_eq!(mark(&server, &token, "archive", &[id]), 1);
        // Far below the 500 ms a publish may wait on a Redis connection.
        assert!(
            i == 0 || started.elapsed() < Duration::from_millis(400),
            "mark {i} waited {:?} on the down Redis",
            started.elapsed()
        );
    }
    // A bulk covers archived ones too (they are still the user's).
    assert_eq!(bulk(&server, &token, "seen-all", &json!({})), 10);
    assert_eq!(counts(&server, &token, ""), (0, 0));
}
