//! The `since` replay against a client that stops reading: the history is sent from
//! the live loop (never a blocking write), and a client that takes no data for 20 s is
//! cut off, so the connection ends within bounded time.

mod common;

use std::time::{Duration, Instant};

use common::{new_user, service_token, user_token, TestServer};
use serde_json::json;

#[test]
fn a_client_that_stops_reading_its_history_is_dropped() {
    let server = TestServer::start();
    let user = new_user("replaystall");
    // About 8 MB of history: far more than the socket buffers on both sides hold.
    let mut first_id = String::new();
    for round in 0..80 {
        let items: Vec<_> = (0..10)
            .map(|i| json!({"user_id": user, "workspace": "acme", "kind": "k", "payload": {"pad": "x".repeat(10_000), "i": i}}))
            .collect();
        let response = server.send_json(
            "POST",
            "/v1/internal/notifications/batch",
            &service_token(),
            &json!({ "notifications": items }),
        );
        assert_eq!(response.status, 201, "{}", response.text());
        if round == 0 {
            first_id = response.json()["notifications"][0]["id"]
                .as_str()
                .unwrap_or_default()
                .to_string();
        }
    }
    // Connect with `since` and never read a byte.
    let token = user_token(&user, &["acme"]);
    let ws = common::ws_connect_small_receive_buffer(
        server.ws_addr(),
        &format!("token={token}&workspaceSlug=acme&since={first_id}"),
        4096,
    );
    let client = ws.get_ref().local_addr().expect("client address");
    // The replay runs and stalls: history waits unsent in the server's socket.
    let deadline = Instant::now() + Duration::from_secs(10);
    while common::server_send_queue(server.ws_addr(), client) == 0 {
        assert_eq!(
            server.ws_connections(),
            1,
            "the connection ended before replaying"
        );
        assert!(Instant::now() < deadline, "no history was sent");
        std::thread::sleep(Duration::from_millis(20));
    }
    let deadline = Instant::now() + Duration::from_secs(45);
    while server.ws_connections() > 0 {
        assert!(
            Instant::now() < deadline,
            "the stalled replay still holds its connection"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
