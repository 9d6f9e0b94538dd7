//! WebSocket basics: a client connects with `?token=&workspaceSlug=`, receives a
//! notification created through REST at once, and a refused one reads its close code.

mod common;

use common::{expect_close, new_user, next_notification, user_token, TestServer};
use serde_json::json;

#[test]
fn a_created_notification_reaches_the_connected_client() {
    let server = TestServer::start();
    let user = new_user("wslive");
    let mut ws = server.ws(&format!(
        "token={}&workspaceSlug=acme",
        user_token(&user, &["acme"])
    ));
    let created = server
        .create(&json!({"user_id": user, "workspace": "acme", "kind": "k", "payload": {"n": 1}}));
    assert_eq!(next_notification(&mut ws), created);
}

#[test]
fn a_missing_token_is_closed_with_4001() {
    let server = TestServer::start();
    let mut ws = server.ws("workspaceSlug=acme");
    assert_eq!(expect_close(&mut ws).0, 4001);
}
