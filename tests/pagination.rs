//! Listing notifications (`GET /v1/notifications`): newest-first keyset pages, `limit`,
//! the opaque `cursor` (and refusal of a malformed or altered one), and the `kind`,
//! `unread` and `workspace` filters on their own and combined with pagination.

mod common;

use std::collections::HashSet;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::{assert_error, new_user, user_token, TestServer};
use serde_json::{json, Value};

/// Creates `count` notifications for `user`, one after another; returns their ids in
/// creation order (oldest first).
fn create_many(server: &TestServer, user: &str, count: usize, tag: &str) -> Vec<String> {
    (0..count)
        .map(|i| {
            id_of(&server.create(&json!({
                "user_id": user, "kind": "TICK", "title": format!("{tag} {i}"), "payload": {"i": i}
            })))
        })
        .collect()
}

fn create_one(server: &TestServer, user: &str, workspace: Option<&str>, kind: &str) -> String {
    id_of(&server.create(&json!({
        "user_id": user, "workspace": workspace, "kind": kind, "payload": {}
    })))
}

fn id_of(notification: &Value) -> String {
    notification["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {notification}"))
        .to_string()
}

/// One page: (ids in listed order, next cursor). Panics unless 200.
fn page(server: &TestServer, token: &str, query: &str) -> (Vec<String>, Option<String>) {
    let response = server.get(&format!("/v1/notifications{query}"), token);
    assert_eq!(response.status, 200, "{query}: {}", response.text());
    let body = response.json();
    let ids = body["notifications"]
        .as_array()
        .unwrap_or_else(|| panic!("no notifications array: {body}"))
        .iter()
        .map(id_of)
        .collect();
    let cursor = match &body["cursor"] {
        Value::Null => None,
        Value::String(text) => Some(text.clone()),
        other => panic!("cursor is neither null nor a string: {other}"),
    };
    (ids, cursor)
}

/// Walks every page of `query` (which must already hold `limit=N` and end without `&`),
/// checking that every page but the last is full; returns the ids in listed order and the
/// page sizes.
fn walk(server: &TestServer, token: &str, query: &str, limit: usize) -> (Vec<String>, Vec<usize>) {
    let mut all = Vec::new();
    let mut sizes = Vec::new();
    let (mut ids, mut cursor) = page(server, token, &format!("?{query}"));
    loop {
        sizes.push(ids.len());
        all.extend(ids);
        let Some(next) = cursor else { break };
        assert_eq!(
            *sizes.last().expect("a page"),
            limit,
            "a page followed by a cursor is full"
        );
        assert!(sizes.len() < 1000, "the walk does not end");
        (ids, cursor) = page(server, token, &format!("?{query}&cursor={next}"));
    }
    (all, sizes)
}

fn owned(ids: &[&String]) -> Vec<String> {
    ids.iter().map(|id| id.to_string()).collect()
}

fn newest_first(created: &[String]) -> Vec<String> {
    created.iter().rev().cloned().collect()
}

fn mark_read(server: &TestServer, token: &str, ids: &[&String]) {
    let response = server.send_json(
        "PATCH",
        "/v1/notifications/read",
        token,
        &json!({ "ids": ids }),
    );
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.json()["updated"], ids.len());
}

#[test]
fn pages_of_50_50_20_then_a_null_cursor_newest_first() {
    let server = TestServer::start();
    let user = new_user("pages");
    let token = user_token(&user, &[]);
    let created = create_many(&server, &user, 120, "n");

    // No `limit`: the default page is 50.
    let (first, cursor1) = page(&server, &token, "");
    assert_eq!(first.len(), 50);
    let cursor1 = cursor1.expect("a cursor after page 1 of 3");
    let (second, cursor2) = page(&server, &token, &format!("?cursor={cursor1}"));
    assert_eq!(second.len(), 50);
    let cursor2 = cursor2.expect("a cursor after page 2 of 3");
    assert_ne!(cursor1, cursor2);
    let (third, cursor3) = page(&server, &token, &format!("?cursor={cursor2}"));
    assert_eq!(third.len(), 20);
    assert_eq!(cursor3, None, "the last page has a null cursor");

    let listed: Vec<String> = [first, second, third].concat();
    let distinct: HashSet<&String> = listed.iter().collect();
    assert_eq!(distinct.len(), 120, "no id is listed twice");
    assert_eq!(
        listed,
        newest_first(&created),
        "exactly the 120 created, the latest created listed first"
    );

    // The order is also the (created_at DESC, id DESC) of the rows themselves.
    let body = server.get("/v1/notifications?limit=100", &token).json();
    let rows = body["notifications"].as_array().expect("array");
    for pair in rows.windows(2) {
        let (newer, older) = (&pair[0], &pair[1]);
        let key = |n: &Value| {
            (
                n["created_at"].as_str().unwrap_or_default().to_string(),
                uuid::Uuid::parse_str(n["id"].as_str().unwrap_or_default()).expect("uuid"),
            )
        };
        assert!(key(newer) > key(older), "{newer} listed before {older}");
    }
}

#[test]
fn a_walk_has_no_duplicate_and_no_gap_while_new_notifications_arrive() {
    let server = TestServer::start();
    let user = new_user("walk");
    let token = user_token(&user, &[]);
    let original = create_many(&server, &user, 120, "old");

    let (first, cursor) = page(&server, &token, "");
    let cursor = cursor.expect("cursor after page 1");
    let newer = create_many(&server, &user, 30, "new-a");
    let (second, cursor) = page(&server, &token, &format!("?cursor={cursor}"));
    let cursor = cursor.expect("cursor after page 2");
    let newest = create_many(&server, &user, 30, "new-b");
    let (third, cursor) = page(&server, &token, &format!("?cursor={cursor}"));
    assert_eq!(cursor, None, "page 3 is the last page of the walk");
    assert_eq!(
        (first.len(), second.len(), third.len()),
        (50, 50, 20),
        "new notifications do not shift the pages of a walk"
    );

    let walked: Vec<String> = [first, second, third].concat();
    let distinct: HashSet<&String> = walked.iter().collect();
    assert_eq!(distinct.len(), walked.len(), "no duplicate across pages");
    assert_eq!(
        walked,
        newest_first(&original),
        "exactly the original 120, in order: nothing skipped, nothing new mixed in"
    );

    // A fresh walk starts with the new ones, newest first.
    let (fresh, sizes) = walk(&server, &token, "limit=100", 100);
    assert_eq!(sizes, vec![100, 80]);
    let expected: Vec<String> = newest_first(&[original, newer, newest].concat());
    assert_eq!(fresh, expected);
}

#[test]
fn limit_1_and_100_are_honoured_and_out_of_range_limits_are_400() {
    let server = TestServer::start();
    let user = new_user("limit");
    let token = user_token(&user, &[]);
    let created = create_many(&server, &user, 101, "n");
    let expected = newest_first(&created);

    let (one, cursor) = page(&server, &token, "?limit=1");
    assert_eq!(one, expected[..1].to_vec(), "limit=1 gives the newest only");
    let cursor = cursor.expect("more after the first of 101");
    let (next, _) = page(&server, &token, &format!("?limit=1&cursor={cursor}"));
    assert_eq!(next, expected[1..2].to_vec(), "and then the one before it");

    let (hundred, cursor) = page(&server, &token, "?limit=100");
    assert_eq!(hundred, expected[..100].to_vec());
    let cursor = cursor.expect("one more after 100 of 101");
    let (last, cursor) = page(&server, &token, &format!("?limit=100&cursor={cursor}"));
    assert_eq!(last, expected[100..].to_vec());
    assert_eq!(cursor, None);

    // A last page that is exactly full still says null: no empty trailing page.
    let (_, after_51) = page(&server, &token, "?limit=51");
    let after_51 = after_51.expect("cursor after 51 of 101");
    let (fifty, cursor) = page(&server, &token, &format!("?limit=50&cursor={after_51}"));
    assert_eq!(fifty, expected[51..].to_vec());
    assert_eq!(cursor, None, "the final, full page has a null cursor");

    for bad in ["0", "101", "abc", "-1", "1.5", "99999999999999999999"] {
        let response = server.get(&format!("/v1/notifications?limit={bad}"), &token);
        assert_error(
            &response,
            400,
            "invalid_field",
            "limit:",
            &format!("limit={bad}"),
        );
    }
}

#[test]
fn a_malformed_or_altered_cursor_is_400_and_an_empty_one_means_the_first_page() {
    let server = TestServer::start();
    let user = new_user("cursor");
    let token = user_token(&user, &[]);
    let created = create_many(&server, &user, 5, "n");
    let expected = newest_first(&created);

    let (_, cursor) = page(&server, &token, "?limit=2");
    let cursor = cursor.expect("cursor after 2 of 5");
    // The genuine cursor works.
    let (next, _) = page(&server, &token, &format!("?limit=2&cursor={cursor}"));
    assert_eq!(next, expected[2..4].to_vec());

    // An empty cursor is no cursor: the first page.
    let (first, _) = page(&server, &token, "?limit=2&cursor=");
    assert_eq!(first, expected[..2].to_vec());

    let bytes = URL_SAFE_NO_PAD
        .decode(&cursor)
        .expect("the cursor is base64url");
    let mut bad: Vec<(String, String)> = vec![
        ("garbage".into(), "garbage".into()),
        ("truncated".into(), cursor[..cursor.len() - 2].to_string()),
        ("extended".into(), format!("{cursor}AA")),
        ("not base64".into(), "%21%21%21%21".into()),
    ];
    // Every single flipped bit of the decoded cursor, wherever it is (version, time, id,
    // check value), is caught.
    for index in 0..bytes.len() {
        let mut altered = bytes.clone();
        altered[index] ^= 0x01;
        bad.push((
            format!("byte {index} flipped"),
            URL_SAFE_NO_PAD.encode(&altered),
        ));
    }
    // One character changed in the middle of the text.
    let mut chars: Vec<char> = cursor.chars().collect();
    let middle = chars.len() / 2;
    chars[middle] = if chars[middle] == 'A' { 'B' } else { 'A' };
    bad.push(("middle char changed".into(), chars.into_iter().collect()));

    for (what, text) in bad {
        assert_ne!(text, cursor, "{what}: the test must alter the cursor");
        let response = server.get(&format!("/v1/notifications?limit=2&cursor={text}"), &token);
        assert_error(&response, 400, "invalid_cursor", "cursor:", &what);
    }
}

#[test]
fn kind_unread_and_workspace_filters() {
    let server = TestServer::start();
    let user = new_user("filters");
    let other = new_user("filters-other");
    let token = user_token(&user, &["acme", "beta"]);
    let n0 = create_one(&server, &user, Some("acme"), "JOB_FAILED");
    let n1 = create_one(&server, &user, None, "record_created");
    let n2 = create_one(&server, &user, Some("beta"), "JOB_FAILED");
    let n3 = create_one(&server, &user, Some("acme"), "record_created");
    let n4 = create_one(&server, &user, None, "JOB_FAILED");
    let n5 = create_one(&server, &user, Some("beta"), "record_created");
    // Not visible to the token (workspace not granted), nor to this user (other user).
    let _n6 = create_one(&server, &user, Some("secret"), "JOB_FAILED");
    let _o1 = create_one(&server, &other, None, "JOB_FAILED");
    let _o2 = create_one(&server, &other, Some("acme"), "JOB_FAILED");

    let list = |query: &str| page(&server, &token, query).0;

    assert_eq!(list(""), owned(&[&n5, &n4, &n3, &n2, &n1, &n0]));
    assert_eq!(list("?kind=JOB_FAILED"), owned(&[&n4, &n2, &n0]));
    assert_eq!(list("?kind=record_created"), owned(&[&n5, &n3, &n1]));
    assert_eq!(list("?kind=NO_SUCH_KIND"), Vec::<String>::new());

    // A workspace filter shows what a WebSocket on that workspace receives: that
    // workspace's notifications plus the user-level ones (workspace null), never another
    // workspace's.
    assert_eq!(list("?workspace=acme"), owned(&[&n4, &n3, &n1, &n0]));
    assert_eq!(list("?workspace=beta"), owned(&[&n5, &n4, &n2, &n1]));
    assert_eq!(
        list("?workspace=beta&kind=record_created"),
        owned(&[&n5, &n1])
    );

    mark_read(&server, &token, &[&n0, &n3, &n5]);
    assert_eq!(list("?unread=true"), owned(&[&n4, &n2, &n1]));
    assert_eq!(list("?unread=true&workspace=acme"), owned(&[&n4, &n1]));
    assert_eq!(list("?unread=true&kind=JOB_FAILED"), owned(&[&n4, &n2]));
    assert_eq!(
        list("?unread=false"),
        owned(&[&n5, &n4, &n3, &n2, &n1, &n0]),
        "unread=false does not filter"
    );
    let body = server.get("/v1/notifications?unread=true", &token).json();
    for n in body["notifications"].as_array().expect("array") {
        assert_eq!(n["read"], false, "{n}");
        assert_eq!(n["read_at"], Value::Null, "{n}");
    }

    // A token granting only acme sees acme and user-level ones, with or without the filter.
    let acme_only = user_token(&user, &["acme"]);
    assert_eq!(
        page(&server, &acme_only, "").0,
        owned(&[&n4, &n3, &n1, &n0])
    );

    assert_error(
        &server.get("/v1/notifications?unread=maybe", &token),
        400,
        "invalid_field",
        "unread:",
        "unread=maybe",
    );
    assert_error(
        &server.get("/v1/notifications?kind=bad%20kind!", &token),
        400,
        "invalid_field",
        "kind:",
        "kind with a space",
    );
    assert_error(
        &server.get("/v1/notifications?workspace=secret", &token),
        403,
        "workspace_forbidden",
        "workspace:",
        "a workspace the token does not grant",
    );
    assert_error(
        &server.get("/v1/notifications?workspace=bad%20slug", &token),
        400,
        "invalid_field",
        "workspace:",
        "a malformed workspace slug",
    );
}

/// A created notification: (id, workspace, kind).
type Made = (String, Option<&'static str>, &'static str);

#[test]
fn filters_combine_with_pagination() {
    let server = TestServer::start();
    let user = new_user("filter-walk");
    let token = user_token(&user, &["acme", "beta"]);
    // 30 notifications cycling through (workspace, kind).
    let shapes = [
        (Some("acme"), "A"),
        (None, "B"),
        (Some("beta"), "A"),
        (Some("acme"), "B"),
        (None, "A"),
    ];
    let created: Vec<Made> = (0..30)
        .map(|i| {
            let (workspace, kind) = shapes[i % shapes.len()];
            (create_one(&server, &user, workspace, kind), workspace, kind)
        })
        .collect();
    // Mark every fourth one read.
    let to_read: Vec<&String> = created.iter().step_by(4).map(|(id, _, _)| id).collect();
    mark_read(&server, &token, &to_read);
    let read: HashSet<&String> = to_read.iter().copied().collect();

    let expect = |keep: &dyn Fn(&Made) -> bool| -> Vec<String> {
        created
            .iter()
            .rev()
            .filter(|n| keep(n))
            .map(|(id, _, _)| id.clone())
            .collect()
    };
    let cases: Vec<(&str, Vec<String>)> = vec![
        ("kind=A", expect(&|(_, _, k)| *k == "A")),
        (
            "workspace=acme",
            expect(&|(_, w, _)| w.is_none() || *w == Some("acme")),
        ),
        ("unread=true", expect(&|(id, _, _)| !read.contains(id))),
        (
            "unread=true&workspace=beta&kind=A",
            expect(&|(id, w, k)| {
                !read.contains(id) && (w.is_none() || *w == Some("beta")) && *k == "A"
            }),
        ),
    ];
    for (filter, expected) in cases {
        assert!(
            expected.len() > 3,
            "{filter}: the case must span several pages"
        );
        let (walked, sizes) = walk(&server, &token, &format!("{filter}&limit=3"), 3);
        assert_eq!(walked, expected, "{filter}, walked 3 at a time");
        assert_eq!(
            sizes.len(),
            expected.len().div_ceil(3),
            "{filter}: {sizes:?}"
        );
    }
}
