//! The event protocol `notifd.v1` (contract §3.1), end to end against real servers:
//! the subprotocol is negotiated only when asked for; a v1 client gets every
//! notification as a `notification` event, one `synced` after its `since` replay
//! (or at once), `counts` on connect and after every change of its view's counts, and
//! `updated` events for state changes made through any device on any instance, in
//! order after the notifications they refer to. A plain connection on the same user
//! gets none of the events.
//!
//! Absence is proved by ordering, never by sleeping: after something a client must
//! not get, it sends the text `ping`, and the next frame must be `pong`.

mod common;

use std::net::TcpStream;
use std::time::Duration;

use common::{new_user, user_token, TestServer, Ws};
use serde_json::{json, Value};
use tungstenite::client::IntoClientRequest;
use tungstenite::Message;

const PROTOCOL: &str = "notifd.v1";

/// Opens a connection offering `protocols` (comma-separated); returns it with the
/// subprotocol the server selected, if any.
fn open(
    server: &TestServer,
    token: &str,
    workspace: &str,
    extra: &str,
    protocols: &str,
) -> (Ws, Option<String>) {
    let url = format!(
        "ws://{}/?token={token}&workspaceSlug={workspace}{extra}",
        server.ws_addr()
    );
    let mut request = url.into_client_request().expect("ws request");
    if !protocols.is_empty() {
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            protocols.parse().expect("header value"),
        );
    }
    let stream = TcpStream::connect(server.ws_addr()).expect("ws connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let (ws, response) = tungstenite::client(request, stream).expect("ws handshake");
    let selected = response
        .headers()
        .get("Sec-WebSocket-Protocol")
        .map(|v| v.to_str().expect("ASCII").to_string());
    (ws, selected)
}

/// The head of the server's answer to an upgrade offering `protocols`.
fn raw_upgrade(server: &TestServer, token: &str, protocols: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = TcpStream::connect(server.ws_addr()).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let request = format!(
        "GET /?token={token}&workspaceSlug=acme HTTP/1.1\r\nHost: notifd\r\n\
         Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: {protocols}\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).expect("send upgrade");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = stream.read(&mut byte).expect("read the answer");
        assert_eq!(
            n,
            1,
            "the server answers the upgrade: {:?}",
            String::from_utf8_lossy(&head)
        );
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// A v1 connection of `user` (granted `grants`) on `workspace`; asserts the server
/// selected the protocol.
fn connect_v1(
    server: &TestServer,
    user: &str,
    grants: &[&str],
    workspace: &str,
    extra: &str,
) -> Ws {
    let token = user_token(user, grants);
    let (ws, selected) = open(server, &token, workspace, extra, PROTOCOL);
    assert_eq!(
        selected.as_deref(),
        Some(PROTOCOL),
        "the server selects notifd.v1"
    );
    ws
}

/// The next event (control frames skipped); panics on close, timeout or non-JSON.
fn next_event(ws: &mut Ws) -> Value {
    loop {
        match ws.read().expect("an event before the deadline") {
            Message::Text(text) => {
                let event: Value = serde_json::from_str(text.as_str())
                    .unwrap_or_else(|e| panic!("event JSON ({e}): {text}"));
                assert!(
                    event["event"].is_string(),
                    "every v1 frame has an event: {event}"
                );
                return event;
            }
            Message::Close(frame) => panic!("closed while waiting for an event: {frame:?}"),
            _ => continue,
        }
    }
}

/// The next event, which must be `name`.
fn expect_event(ws: &mut Ws, name: &str) -> Value {
    let event = next_event(ws);
    assert_eq!(event["event"], name, "expected a {name} event, got {event}");
    event
}

fn expect_counts(ws: &mut Ws, unread: i64, unseen: i64) {
    let event = expect_event(ws, "counts");
    assert_eq!(
        (event["unread"].as_i64(), event["unseen"].as_i64()),
        (Some(unread), Some(unseen)),
        "counts: {event}"
    );
}

/// Reads the connect sequence (`synced`, then `counts`) and returns `synced`.
fn expect_connected(ws: &mut Ws, unread: i64, unseen: i64) -> Value {
    let synced = expect_event(ws, "synced");
    expect_counts(ws, unread, unseen);
    synced
}

/// Nothing is pending on `ws`: a text ping is answered by the very next frame.
fn assert_nothing_pending(ws: &mut Ws, who: &str) {
    common::assert_only_pong_pending(ws, who);
}

fn create(server: &TestServer, user: &str, workspace: Option<&str>, kind: &str) -> Value {
    server.create(&json!({
        "user_id": user,
        "workspace": workspace,
        "kind": kind,
        "payload": {},
    }))
}

fn id_of(notification: &Value) -> String {
    notification["id"].as_str().expect("id").to_string()
}

/// A notification event carrying `created`, then the new counts.
fn expect_arrival(ws: &mut Ws, created: &Value, unread: i64, unseen: i64) {
    let event = expect_event(ws, "notification");
    assert_eq!(
        &event["notification"], created,
        "the notification event carries §1's JSON"
    );
    expect_counts(ws, unread, unseen);
}

fn patch(server: &TestServer, user: &str, grants: &[&str], action: &str, ids: &[String]) -> Value {
    let response = server.send_json(
        "PATCH",
        &format!("/v1/notifications/{action}"),
        &user_token(user, grants),
        &json!({ "ids": ids }),
    );
    assert_eq!(response.status, 200, "{action}: {}", response.text());
    response.json()
}

fn two_instances() -> (TestServer, TestServer) {
    common::two_instances(common::settings())
}

// ---------------------------------------------------------------------------

#[test]
fn the_subprotocol_is_selected_only_when_asked_for() {
    let server = TestServer::start();
    let user = new_user("proto");
    let token = user_token(&user, &["acme"]);
    let (_, plain) = open(&server, &token, "acme", "", "");
    assert_eq!(plain, None, "a plain client gets no subprotocol");
    // Only an unknown one offered: the upgrade completes without selecting any (a
    // client library then gives up, as RFC 6455 says; read at the HTTP level here).
    let head = raw_upgrade(&server, &token, "graphql-ws");
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        !head.to_ascii_lowercase().contains("sec-websocket-protocol"),
        "an unknown subprotocol is not selected: {head}"
    );
    let (_, chosen) = open(&server, &token, "acme", "", "graphql-ws, notifd.v1");
    assert_eq!(chosen.as_deref(), Some(PROTOCOL), "notifd.v1 among others");
}

#[test]
fn a_v1_client_gets_synced_then_counts_then_each_notification() {
    let server = TestServer::start();
    let user = new_user("connect");
    create(&server, &user, Some("acme"), "before.one");
    create(&server, &user, None, "before.two");
    create(&server, &user, Some("other"), "not.in.view");

    let mut ws = connect_v1(&server, &user, &["acme", "other"], "acme", "");
    let synced = expect_connected(&mut ws, 2, 2);
    assert_eq!(synced["through"], Value::Null, "no since: nothing replayed");

    let created = create(&server, &user, Some("acme"), "live");
    expect_arrival(&mut ws, &created, 3, 3);
    // A notification of another workspace is not in this view: no event at all.
    create(&server, &user, Some("other"), "elsewhere");
    assert_nothing_pending(&mut ws, "v1 client on acme");
}

#[test]
fn since_replay_is_followed_by_exactly_one_synced() {
    let server = TestServer::start();
    let user = new_user("since");
    let first = create(&server, &user, Some("acme"), "n.1");
    let second = create(&server, &user, Some("acme"), "n.2");
    let third = create(&server, &user, None, "n.3");

    let since = format!("&since={}", id_of(&first));
    let mut ws = connect_v1(&server, &user, &["acme"], "acme", &since);
    for expected in [&second, &third] {
        let event = expect_event(&mut ws, "notification");
        assert_eq!(&event["notification"], expected, "replayed oldest first");
    }
    let synced = expect_connected(&mut ws, 3, 3);
    assert_eq!(
        synced["through"], third["id"],
        "synced names the last replayed id"
    );

    let live = create(&server, &user, Some("acme"), "n.4");
    expect_arrival(&mut ws, &live, 4, 4);
    assert_nothing_pending(&mut ws, "after the replay");
}

#[test]
fn a_mark_on_one_instance_reaches_v1_clients_on_both_as_updated_then_counts() {
    let (a, b) = two_instances();
    let user = new_user("across");
    let grants = ["acme"];
    let mut on_a = connect_v1(&a, &user, &grants, "acme", "");
    let mut on_b = connect_v1(&b, &user, &grants, "acme", "");
    expect_connected(&mut on_a, 0, 0);
    expect_connected(&mut on_b, 0, 0);

    let created = create(&a, &user, Some("acme"), "job.failed");
    expect_arrival(&mut on_a, &created, 1, 1);
    expect_arrival(&mut on_b, &created, 1, 1);

    let id = id_of(&created);
    assert_eq!(
        patch(&a, &user, &grants, "read", std::slice::from_ref(&id))["updated"],
        1
    );
    for ws in [&mut on_b, &mut on_a] {
        let updated = expect_event(ws, "updated");
        assert_eq!(updated["ids"], json!([id]), "{updated}");
        assert!(updated["changes"]["read_at"].is_string(), "{updated}");
        expect_counts(ws, 0, 1);
    }

    assert_eq!(
        patch(&b, &user, &grants, "seen", std::slice::from_ref(&id))["updated"],
        1
    );
    for ws in [&mut on_a, &mut on_b] {
        let updated = expect_event(ws, "updated");
        assert!(updated["changes"]["seen_at"].is_string(), "{updated}");
        expect_counts(ws, 0, 0);
    }

    // Undo read: read_at back to null, the unread count back up.
    assert_eq!(
        patch(&a, &user, &grants, "unread", std::slice::from_ref(&id))["updated"],
        1
    );
    for ws in [&mut on_a, &mut on_b] {
        let updated = expect_event(ws, "updated");
        assert_eq!(updated["changes"]["read_at"], Value::Null, "{updated}");
        expect_counts(ws, 1, 0);
    }

    // A repeat changes nothing and sends nothing.
    assert_eq!(patch(&a, &user, &grants, "unread", &[id])["updated"], 0);
    assert_nothing_pending(&mut on_a, "client on A after a no-op");
    assert_nothing_pending(&mut on_b, "client on B after a no-op");
}

#[test]
fn a_bulk_change_is_one_updated_event_with_its_filter_and_through() {
    let (a, b) = two_instances();
    let user = new_user("bulk");
    let grants = ["acme"];
    let mut ws = connect_v1(&b, &user, &grants, "acme", "");
    expect_connected(&mut ws, 0, 0);
    let one = create(&a, &user, Some("acme"), "bulk.kind");
    expect_arrival(&mut ws, &one, 1, 1);
    let two = create(&a, &user, Some("acme"), "bulk.kind");
    expect_arrival(&mut ws, &two, 2, 2);

    let response = a.send_json(
        "POST",
        "/v1/notifications/read-all",
        &user_token(&user, &grants),
        &json!({"workspace": "acme", "kind": "bulk.kind"}),
    );
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.json()["updated"], 2);
    let updated = expect_event(&mut ws, "updated");
    assert_eq!(
        updated["filter"],
        json!({"workspace": "acme", "kind": "bulk.kind"}),
        "{updated}"
    );
    assert_eq!(
        updated["through"], two["id"],
        "through: the highest id affected"
    );
    assert!(updated["changes"]["read_at"].is_string(), "{updated}");
    expect_counts(&mut ws, 0, 2);
}

#[test]
fn a_change_outside_a_connections_view_sends_it_nothing() {
    let server = TestServer::start();
    let user = new_user("view");
    let grants = ["a", "b"];
    let mut on_b = connect_v1(&server, &user, &grants, "b", "");
    expect_connected(&mut on_b, 0, 0);
    let in_a = create(&server, &user, Some("a"), "only.a");
    assert_eq!(
        patch(&server, &user, &grants, "read", &[id_of(&in_a)])["updated"],
        1
    );
    assert_nothing_pending(&mut on_b, "a connection on b after a change in a");
}

#[test]
fn a_plain_client_of_the_same_user_sees_no_event_frames() {
    let server = TestServer::start();
    let user = new_user("plain");
    let grants = ["acme"];
    let token = user_token(&user, &grants);
    let (mut plain, _) = open(&server, &token, "acme", "", "");
    let mut v1 = connect_v1(&server, &user, &grants, "acme", "");
    expect_connected(&mut v1, 0, 0);

    let created = create(&server, &user, Some("acme"), "plain.kind");
    assert_eq!(
        common::next_notification(&mut plain),
        created,
        "bare §1 JSON"
    );
    expect_arrival(&mut v1, &created, 1, 1);
    patch(&server, &user, &grants, "read", &[id_of(&created)]);
    expect_event(&mut v1, "updated");
    expect_counts(&mut v1, 0, 1);
    assert_nothing_pending(&mut plain, "plain client after a state change");
}
