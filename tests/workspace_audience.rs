//! Workspace audience (contract §1 `audience`, §4 "Workspace audience"): one create
//! with `"audience":"workspace"` reaches every user granted the workspace, on every
//! instance, and no one else; lists merge it in order with the user's own, `since`
//! replays it, read/seen/archived state is per user, and the counts stay exactly what
//! the lists show. Each test uses workspaces of its own (a broadcast is visible to
//! everyone granted its workspace, and the tests of this binary share a database).

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{
    assert_error, assert_only_pong_pending, counts, new_user, next_notification, redis_url,
    user_token, wait_for_subscribers, TestServer, Ws,
};
use serde_json::{json, Value};

const WITHIN: Duration = Duration::from_secs(10);

/// A workspace slug no other test uses.
fn new_workspace(tag: &str) -> String {
    new_user(&format!("ws-{tag}"))
}

fn broadcast(server: &TestServer, workspace: &str, kind: &str) -> Value {
    server.create(&json!({
        "audience": "workspace", "workspace": workspace, "kind": kind, "payload": {"all": true}
    }))
}

fn own(server: &TestServer, user: &str, workspace: Option<&str>, kind: &str) -> Value {
    server.create(&json!({"user_id": user, "workspace": workspace, "kind": kind, "payload": {}}))
}

fn connect(server: &TestServer, user: &str, granted: &[&str], on: &str) -> Ws {
    server.ws(&format!(
        "token={}&workspaceSlug={on}",
        user_token(user, granted)
    ))
}

fn connect_v1(server: &TestServer, user: &str, granted: &[&str], on: &str) -> Ws {
    let query = format!("token={}&workspaceSlug={on}", user_token(user, granted));
    common::ws_connect(
        server.ws_addr(),
        &query,
        &[("Sec-WebSocket-Protocol", "notifd.v1")],
    )
}

fn next_event(ws: &mut Ws) -> Value {
    let text = common::next_text(ws).expect("an event before the deadline");
    serde_json::from_str(&text).expect("event JSON")
}

/// The next `counts` event's (unread, unseen), skipping other events.
fn next_counts(ws: &mut Ws) -> (i64, i64) {
    loop {
        let event = next_event(ws);
        if event["event"] == "counts" {
            return (
                event["unread"].as_i64().expect("unread"),
                event["unseen"].as_i64().expect("unseen"),
            );
        }
    }
}

/// Every notification a token lists with `query`, following cursors (pages of `limit`).
fn list_all(server: &TestServer, token: &str, query: &str, limit: usize) -> Vec<Value> {
    let mut all = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..1000 {
        let mut path = format!("/v1/notifications?limit={limit}&{query}");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let response = server.get(&path, token);
        assert_eq!(response.status, 200, "{path}: {}", response.text());
        let body = response.json();
        all.extend(
            body["notifications"]
                .as_array()
                .expect("array")
                .iter()
                .cloned(),
        );
        match body["cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => return all,
        }
    }
    panic!("more than 1000 pages");
}

fn ids(list: &[Value]) -> Vec<String> {
    list.iter()
        .map(|n| n["id"].as_str().expect("id").to_string())
        .collect()
}

/// The counts match what the lists show (unread: listed unread and unarchived;
/// unseen: listed unseen and unarchived), for the token's whole view.
fn assert_counts_match_lists(server: &TestServer, token: &str, who: &str) {
    let unread = list_all(server, token, "unread=true", 100).len() as i64;
    let unseen = list_all(server, token, "", 100)
        .iter()
        .filter(|n| n["seen_at"].is_null())
        .count() as i64;
    assert_eq!(counts(server, token, ""), (unread, unseen), "{who}");
}

fn mark(server: &TestServer, token: &str, mark: &str, ids: &[&str]) -> u64 {
    let path = format!("/v1/notifications/{mark}");
    let response = server.send_json("PATCH", &path, token, &json!({ "ids": ids }));
    assert_eq!(response.status, 200, "{path}: {}", response.text());
    response.json()["updated"].as_u64().expect("updated")
}

fn bulk(server: &TestServer, token: &str, bulk: &str, body: &Value) -> u64 {
    let path = format!("/v1/notifications/{bulk}");
    let response = server.send_json("POST", &path, token, body);
    assert_eq!(response.status, 200, "{path}: {}", response.text());
    response.json()["updated"].as_u64().expect("updated")
}

fn find<'a>(list: &'a [Value], id: &Value) -> Option<&'a Value> {
    list.iter().find(|n| n["id"] == *id)
}

#[test]
fn a_broadcast_reaches_every_granted_user_on_every_instance_and_no_one_else() {
    let settings = common::settings();
    let prefix = settings.redis_prefix.clone().expect("prefix");
    let (a, b) = common::two_instances(settings);
    let (slug, other) = (new_workspace("live"), new_workspace("live-other"));
    let (u1, u2, u3) = (new_user("bc1"), new_user("bc2"), new_user("bc3"));
    let mut on_a = connect(&a, &u1, &[&slug], &slug);
    let mut on_b = connect(&b, &u2, &[&slug], &slug);
    let mut outsider = connect(&a, &u3, &[&other], &other);
    let channel = format!("{prefix}notifications:workspace:{slug}");
    // One subscriber per instance holding a connection on the workspace.
    wait_for_subscribers(&redis_url(), &channel, 2, WITHIN);
    let outsiders_channel = format!("{prefix}notifications:workspace:{other}");
    wait_for_subscribers(&redis_url(), &outsiders_channel, 1, WITHIN);

    let created = broadcast(&b, &slug, "MAINTENANCE");
    assert_eq!(created["audience"], "workspace");
    assert_eq!(created["user_id"], Value::Null);
    assert_eq!(created["workspace"], slug.as_str());
    for (ws, who) in [(&mut on_a, "u1 on a"), (&mut on_b, "u2 on b")] {
        let got = next_notification(ws);
        assert_eq!(got, created, "{who} gets the JSON of §1");
    }
    assert_only_pong_pending(&mut outsider, "a user on another workspace");
    assert_only_pong_pending(&mut on_a, "u1, once");

    // Listed and counted for the two granted users, not for the third.
    for user in [&u1, &u2] {
        let token = user_token(user, &[&slug]);
        let listed = list_all(&a, &token, "", 50);
        assert_eq!(
            ids(&listed),
            [created["id"].as_str().expect("id")],
            "{user}"
        );
        assert_eq!(counts(&b, &token, ""), (1, 1), "{user}");
        assert_eq!(counts(&b, &token, &format!("?workspace={slug}")), (1, 1));
    }
    let token3 = user_token(&u3, &[&other]);
    assert!(list_all(&a, &token3, "", 50).is_empty());
    assert_eq!(counts(&a, &token3, ""), (0, 0));
    // Nor by filtering on it: a token that does not grant the workspace is a 403.
    let filtered = a.get(&format!("/v1/notifications?workspace={slug}"), &token3);
    assert_error(
        &filtered,
        403,
        "workspace_forbidden",
        "workspace",
        "u3 on the workspace",
    );

    // The workspace channel goes when the last connection on it leaves an instance.
    drop(on_a);
    wait_for_subscribers(&redis_url(), &channel, 1, WITHIN);
    drop(on_b);
    wait_for_subscribers(&redis_url(), &channel, 0, WITHIN);
}

#[test]
fn read_seen_and_archived_are_per_user_and_counts_stay_what_the_lists_show() {
    let server = TestServer::start();
    let slug = new_workspace("state");
    let (u1, u2) = (new_user("st1"), new_user("st2"));
    let (t1, t2) = (user_token(&u1, &[&slug]), user_token(&u2, &[&slug]));
    let first = broadcast(&server, &slug, "B1");
    let mine = own(&server, &u1, Some(&slug), "OWN");
    let second = broadcast(&server, &slug, "B2");
    let user_level = own(&server, &u1, None, "LEVEL");
    assert_eq!(counts(&server, &t1, ""), (4, 4));
    assert_eq!(counts(&server, &t2, ""), (2, 2));

    let id = |n: &Value| n["id"].as_str().expect("id").to_string();
    assert_eq!(mark(&server, &t1, "read", &[&id(&first), &id(&mine)]), 2);
    assert_eq!(
        mark(&server, &t1, "read", &[&id(&first)]),
        0,
        "idempotent: the first read_at is kept"
    );
    assert_eq!(counts(&server, &t1, ""), (2, 4));
    assert_eq!(counts(&server, &t2, ""), (2, 2), "u2's state is their own");
    let listed1 = list_all(&server, &t1, "", 50);
    let listed2 = list_all(&server, &t2, "", 50);
    assert_eq!(find(&listed1, &first["id"]).expect("listed")["read"], true);
    assert_eq!(find(&listed2, &first["id"]).expect("listed")["read"], false);
    assert_eq!(
        ids(&list_all(&server, &t1, "unread=true", 50)),
        [id(&user_level), id(&second)]
    );

    // Unread again; seen; archived (out of the default list and the counts).
    assert_eq!(mark(&server, &t1, "unread", &[&id(&first)]), 1);
    assert_eq!(mark(&server, &t1, "unread", &[&id(&first)]), 0);
    assert_eq!(mark(&server, &t1, "seen", &[&id(&second)]), 1);
    assert_eq!(mark(&server, &t1, "archive", &[&id(&second)]), 1);
    assert_counts_match_lists(&server, &t1, "u1 after marks");
    assert!(find(&list_all(&server, &t1, "", 50), &second["id"]).is_none());
    let archived = list_all(&server, &t1, "archived=true", 50);
    assert_eq!(ids(&archived), [id(&second)]);
    assert!(archived[0]["seen_at"].is_string());
    assert!(find(&list_all(&server, &t2, "", 50), &second["id"]).is_some());
    assert_eq!(mark(&server, &t1, "unarchive", &[&id(&second)]), 1);

    // The bulks cover broadcasts too, with their filters.
    let third = broadcast(&server, &slug, "B3");
    assert_eq!(
        bulk(&server, &t2, "read-all", &json!({"kind": "B3"})),
        1,
        "the kind filter"
    );
    assert_eq!(
        bulk(&server, &t2, "read-all", &json!({ "workspace": slug })),
        2
    );
    assert_eq!(bulk(&server, &t2, "read-all", &json!({})), 0);
    assert_eq!(counts(&server, &t2, ""), (0, 3));
    assert_eq!(bulk(&server, &t2, "seen-all", &json!({})), 3);
    assert_eq!(bulk(&server, &t2, "archive-all", &json!({})), 3);
    assert!(list_all(&server, &t2, "", 50).is_empty());
    assert_eq!(list_all(&server, &t2, "archived=true", 50).len(), 3);
    assert_eq!(counts(&server, &t1, ""), (4, 4), "u2's bulks left u1 alone");
    assert!(find(&list_all(&server, &t1, "", 50), &third["id"]).is_some());
    for (token, who) in [(&t1, "u1"), (&t2, "u2")] {
        assert_counts_match_lists(&server, token, who);
    }
    // Another user's token cannot mark through ids it does not see.
    let stranger = user_token(&new_user("st3"), &["elsewhere"]);
    assert_eq!(mark(&server, &stranger, "read", &[&id(&third)]), 0);
}

#[test]
fn lists_merge_broadcasts_in_order_and_pages_neither_skip_nor_repeat() {
    let server = TestServer::start();
    let (slug, also) = (new_workspace("page"), new_workspace("page-also"));
    let user = new_user("pager");
    let mut expected = Vec::new();
    for n in 0..7 {
        expected.push(broadcast(&server, &slug, &format!("B{n}")));
        expected.push(own(&server, &user, Some(&slug), &format!("O{n}")));
        expected.push(broadcast(&server, &also, &format!("A{n}")));
        expected.push(own(&server, &user, None, &format!("U{n}")));
    }
    expected.reverse();
    let token = user_token(&user, &[&slug, &also]);
    for limit in [1, 3, 5, 100] {
        let listed = list_all(&server, &token, "", limit);
        assert_eq!(ids(&listed), ids(&expected), "limit {limit}");
    }
    // One workspace's view: its broadcasts, the user's own there and user-level ones.
    let one: Vec<Value> = expected
        .iter()
        .filter(|n| n["workspace"] != also.as_str())
        .cloned()
        .collect();
    let listed = list_all(&server, &token, &format!("workspace={slug}"), 4);
    assert_eq!(ids(&listed), ids(&one));
    // A token granting only one workspace sees only that one's broadcasts.
    let narrow = user_token(&user, &[&slug]);
    assert_eq!(ids(&list_all(&server, &narrow, "", 6)), ids(&one));
    let kinds: HashSet<String> = list_all(&server, &token, "kind=B3", 10)
        .iter()
        .map(|n| n["kind"].as_str().expect("kind").to_string())
        .collect();
    assert_eq!(kinds, HashSet::from(["B3".to_string()]));
}

#[test]
fn star_tokens_see_the_broadcasts_of_every_workspace() {
    let server = TestServer::start();
    let (x, y) = (new_workspace("star-x"), new_workspace("star-y"));
    let user = new_user("star");
    let star = user_token(&user, &["*"]);
    let before = counts(&server, &star, "");
    let mut on_x = connect(&server, &user, &["*"], &x);
    let bx = broadcast(&server, &x, "X");
    let by = broadcast(&server, &y, "Y");
    assert_eq!(next_notification(&mut on_x), bx);
    assert_only_pong_pending(&mut on_x, "a connection on x gets nothing of y");
    let listed = list_all(&server, &star, "", 100);
    assert!(find(&listed, &bx["id"]).is_some() && find(&listed, &by["id"]).is_some());
    let after = counts(&server, &star, "");
    assert_eq!((after.0 - before.0, after.1 - before.1), (2, 2));
    assert_eq!(counts(&server, &star, &format!("?workspace={y}")), (1, 1));
    assert_eq!(
        bulk(&server, &star, "read-all", &json!({ "workspace": x })),
        1
    );
    assert_eq!(counts(&server, &star, &format!("?workspace={x}")), (0, 1));
}

#[test]
fn event_protocol_devices_get_broadcasts_counts_and_each_users_own_updates() {
    let server = TestServer::start();
    let slug = new_workspace("v1");
    let (u1, u2) = (new_user("v1a"), new_user("v1b"));
    let mut phone = connect_v1(&server, &u1, &[&slug], &slug);
    let mut laptop = connect_v1(&server, &u1, &[&slug], &slug);
    let mut other = connect_v1(&server, &u2, &[&slug], &slug);
    for ws in [&mut phone, &mut laptop, &mut other] {
        assert_eq!(next_event(ws)["event"], "synced");
        assert_eq!(next_counts(ws), (0, 0));
    }
    let created = broadcast(&server, &slug, "ALL");
    for ws in [&mut phone, &mut laptop, &mut other] {
        let frame = next_event(ws);
        assert_eq!(frame["event"], "notification", "{frame}");
        assert_eq!(frame["notification"]["id"], created["id"]);
        assert_eq!(next_counts(ws), (1, 1));
    }
    let id = created["id"].as_str().expect("id");
    let t1 = user_token(&u1, &[&slug]);
    assert_eq!(mark(&server, &t1, "read", &[id]), 1);
    for ws in [&mut phone, &mut laptop] {
        let updated = next_event(ws);
        assert_eq!(updated["event"], "updated", "{updated}");
        assert_eq!(updated["ids"], json!([id]));
        assert!(updated["changes"]["read_at"].is_string());
        assert_eq!(next_counts(ws), (0, 1));
    }
    assert_only_pong_pending(&mut other, "u2 hears nothing of u1's read");
    assert_eq!(counts(&server, &user_token(&u2, &[&slug]), ""), (1, 1));
}

#[test]
fn since_replays_broadcasts_with_the_users_own_state() {
    let server = TestServer::start();
    let slug = new_workspace("since");
    let user = new_user("since");
    let token = user_token(&user, &[&slug]);
    let mark_from = own(&server, &user, Some(&slug), "FIRST");
    let b1 = broadcast(&server, &slug, "B1");
    let mine = own(&server, &user, None, "MINE");
    let b2 = broadcast(&server, &slug, "B2");
    let b1_id = b1["id"].as_str().expect("id");
    assert_eq!(mark(&server, &token, "read", &[b1_id]), 1);
    let mut ws = server.ws(&format!(
        "token={token}&workspaceSlug={slug}&since={}",
        mark_from["id"].as_str().expect("id")
    ));
    let replayed: Vec<Value> = (0..3).map(|_| next_notification(&mut ws)).collect();
    assert_eq!(ids(&replayed), ids(&[b1, mine, b2]), "oldest first");
    assert_eq!(replayed[0]["read"], true, "the user's own read state");
    assert_eq!(replayed[2]["read"], false);
    assert_only_pong_pending(&mut ws, "replayed once");
}

#[test]
fn a_broadcast_expires_for_everyone_and_the_counts_follow() {
    let server = TestServer::start();
    let slug = new_workspace("exp");
    let (u1, u2) = (new_user("exp1"), new_user("exp2"));
    let (t1, t2) = (user_token(&u1, &[&slug]), user_token(&u2, &[&slug]));
    let mut live = connect_v1(&server, &u2, &[&slug], &slug);
    assert_eq!(next_event(&mut live)["event"], "synced");
    assert_eq!(next_counts(&mut live), (0, 0));
    let expires = time::OffsetDateTime::now_utc() + time::Duration::milliseconds(1500);
    let at = expires
        .format(&time::format_description::well_known::Rfc3339)
        .expect("format");
    let created = server.create(&json!({
        "audience": "workspace", "workspace": slug, "kind": "SHORT", "payload": {},
        "expires_at": at
    }));
    let id = created["id"].as_str().expect("id");
    assert_eq!(mark(&server, &t1, "read", &[id]), 1, "u1 read it in time");
    assert_eq!(counts(&server, &t1, ""), (0, 1));
    assert_eq!(counts(&server, &t2, ""), (1, 1));
    // u2's device: the notification, then the counts at expiry.
    let frame = next_event(&mut live);
    assert_eq!(frame["notification"]["id"], id);
    assert_eq!(next_counts(&mut live), (1, 1));
    assert_eq!(next_counts(&mut live), (0, 0), "at expiry");
    assert!(time::OffsetDateTime::now_utc() >= expires);
    for (token, who) in [(&t1, "u1"), (&t2, "u2")] {
        assert!(
            list_all(&server, token, "archived=any", 50).is_empty(),
            "{who}"
        );
        assert_eq!(counts(&server, token, ""), (0, 0), "{who}");
    }
    // The row and its state rows are gone.
    let mut db = postgres::Client::connect(&common::database_url(), postgres::NoTls).expect("db");
    let uuid: uuid::Uuid = id.parse().expect("uuid");
    let left: i64 = db
        .query_one(
            "SELECT (SELECT count(*) FROM notifications WHERE id = $1) \
                  + (SELECT count(*) FROM notification_states WHERE notification_id = $1)",
            &[&uuid],
        )
        .expect("count")
        .get(0);
    assert_eq!(left, 0);
}

#[test]
fn a_workspace_audience_create_is_validated_batched_and_idempotent() {
    let server = TestServer::start();
    let service = common::service_token();
    let post =
        |body: Value| server.send_json("POST", "/v1/internal/notifications", &service, &body);
    let slug = new_workspace("valid");
    assert_error(
        &post(json!({"audience": "workspace", "workspace": slug, "user_id": "u", "kind": "k"})),
        400,
        "invalid_field",
        "user_id",
        "a user with audience workspace",
    );
    assert_error(
        &post(json!({"audience": "workspace", "kind": "k"})),
        400,
        "invalid_field",
        "workspace",
        "no workspace",
    );
    assert_error(
        &post(json!({"audience": "team", "user_id": "u", "kind": "k"})),
        400,
        "invalid_field",
        "audience",
        "an unknown audience",
    );
    assert_error(
        &post(json!({"user_id": "workspace:acme", "kind": "k"})),
        400,
        "invalid_field",
        "user_id",
        "a user id that names a workspace channel",
    );
    let user = new_user("batch");
    let response = server.send_json(
        "POST",
        "/v1/internal/notifications/batch",
        &service,
        &json!({"notifications": [
            {"audience": "workspace", "workspace": slug, "kind": "BATCH", "payload": {}},
            {"user_id": user, "workspace": slug, "kind": "BATCH", "payload": {}},
        ]}),
    );
    assert_eq!(response.status, 201, "{}", response.text());
    let token = user_token(&user, &[&slug]);
    assert_eq!(list_all(&server, &token, "", 10).len(), 2);

    let keyed = |key: &str| {
        server.request(
            "POST",
            "/v1/internal/notifications",
            &[
                ("Authorization", &format!("Bearer {service}")),
                ("Content-Type", "application/json"),
                ("Idempotency-Key", key),
            ],
            Some(
                json!({"audience": "workspace", "workspace": slug, "kind": "KEYED", "payload": {}})
                    .to_string()
                    .as_bytes(),
            ),
        )
    };
    let key = new_user("key");
    let (once, again) = (keyed(&key), keyed(&key));
    assert_eq!((once.status, again.status), (201, 201));
    assert_eq!(once.json(), again.json());
    assert_eq!(list_all(&server, &token, "kind=KEYED", 10).len(), 1);
}
