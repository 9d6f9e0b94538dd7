//! The heartbeat done by helper threads (server pings written while the connection
//! thread sleeps, client pongs taken off the socket by the poller thread), against
//! a client that writes raw frames: pongs split across TCP segments, a text `ping`
//! split mid-frame, a frame whose payload looks like a pong, and a pong sent together
//! with a close frame. None of it may be
//! lost, misread or taken for idleness, and delivery carries on.
//!
//! Tests wait on events (reads with deadlines); the pauses between the halves of a
//! split frame are what the test is about, not waits for the server.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::raw_ws::{RawClient, BINARY, CLOSE, MASK, PING, PONG, TEXT};
use common::{new_user, user_token, TestServer};
use serde_json::{json, Value};

fn server_with_fast_heartbeat() -> TestServer {
    let mut settings = common::settings();
    settings.ping_interval = Some("100ms".into());
    settings.idle_timeout = Some("1s".into());
    TestServer::with(settings)
}

#[test]
fn split_pongs_and_frames_keep_a_connection_alive_and_delivering() {
    let server = server_with_fast_heartbeat();
    let user = new_user("rawbeat");
    let mut client = RawClient::connect(&server, &user_token(&user, &["acme"]));
    let mut pongs = 0;

    // Three idle timeouts of nothing but pongs (half of them split): never idle.
    let opened = Instant::now();
    let mut text_pongs = 0;
    while opened.elapsed() < Duration::from_secs(3) {
        let (opcode, payload) = client.read_frame();
        assert_eq!(
            opcode,
            PING,
            "after {:?} and {pongs} pongs: {:?}",
            opened.elapsed(),
            String::from_utf8_lossy(&payload)
        );
        client.answer(&payload, &mut pongs);
        // Now and then a text `ping`, cut in the middle of its payload.
        if pongs.is_multiple_of(5) {
            client.send_split(&RawClient::frame(TEXT, b"ping"), 7);
            let (opcode, payload) = client.next_non_ping(&mut pongs);
            assert_eq!((opcode, payload.as_slice()), (TEXT, &b"pong"[..]));
            text_pongs += 1;
        }
    }
    assert!(pongs >= 15, "{pongs} pongs in 3 s at a 100 ms interval");
    assert!(text_pongs >= 2, "{text_pongs} text pongs");

    // A binary frame whose payload, as sent, looks exactly like a pong, its header
    // and payload in separate segments: the payload belongs to the frame, and must
    // not be taken for a pong between frames.
    let looks_like_pong = [0x8A, 0x80, 1, 2, 3, 4];
    let payload: Vec<u8> = (0..6).map(|i| looks_like_pong[i] ^ MASK[i % 4]).collect();
    client.send_split(&RawClient::frame(BINARY, &payload), 6);
    // Alone on the socket for a moment, as a pong would be.
    std::thread::sleep(Duration::from_millis(30));
    client
        .tcp
        .write_all(&RawClient::frame(TEXT, b"ping"))
        .expect("text ping");
    let (opcode, payload) = client.next_non_ping(&mut pongs);
    assert_eq!((opcode, payload.as_slice()), (TEXT, &b"pong"[..]));

    // Still delivering.
    let created = server.create(&json!({
        "user_id": user, "workspace": "acme", "kind": "heartbeat.check", "payload": {}
    }));
    let (opcode, payload) = client.next_non_ping(&mut pongs);
    assert_eq!(opcode, TEXT);
    let received: Value = serde_json::from_slice(&payload).expect("notification JSON");
    assert_eq!(received, created);
}

#[test]
fn a_close_sent_with_a_pong_is_answered_at_once() {
    let server = server_with_fast_heartbeat();
    let mut client = RawClient::connect(&server, &user_token(&new_user("pongclose"), &["acme"]));
    let (opcode, ping) = client.read_frame();
    assert_eq!(opcode, PING);
    // One segment: a pong, then a close with code 1000.
    let mut bytes = RawClient::frame(PONG, &ping);
    bytes.extend(RawClient::frame(CLOSE, &1000u16.to_be_bytes()));
    client.tcp.write_all(&bytes).expect("pong + close");
    let asked = Instant::now();
    loop {
        let (opcode, payload) = client.read_frame();
        if opcode == CLOSE {
            assert_eq!(payload.get(..2), Some(&1000u16.to_be_bytes()[..]));
            break;
        }
        assert_eq!(opcode, PING, "only pings before the close reply");
    }
    // Well before the 1 s idle timeout: the close was read, not timed out.
    assert!(
        asked.elapsed() < Duration::from_millis(500),
        "{:?}",
        asked.elapsed()
    );
}
