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
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    socket.set_recv_buffer_size(4096).expect("small buffer");
    socket.connect(&server.ws_addr().into()).expect("connect");
    let stream: std::net::TcpStream = socket.into();
    let request = format!(
        "ws://{}/?token={token}&workspaceSlug=acme&since={first_id}",
        server.ws_addr()
    );
    let (_ws, _) = tungstenite::client(request.as_str(), stream).expect("handshake");
    let deadline = Instant::now() + Duration::from_secs(45);
    while server.ws_connections() > 0 {
        assert!(
            Instant::now() < deadline,
            "the stalled replay still holds its connection"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
