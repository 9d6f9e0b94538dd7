//! Every WebSocket close code of the contract (§3), each against a real notifd and a
//! real tungstenite client: 4001 (missing, malformed, wrongly signed, wrong-`alg` or
//! `sub`-less token; a token in an `Authorization: Bearer` header is accepted), 4002,
//! 4003 (at connect and later while connected), 4004, 4005 (newest connection wins,
//! other workspaces untouched), 4006 (a client that stops reading), 4000 (idle),
//! 1001 (graceful shutdown), 1009 (over 64 KiB), 1013 (connection limit); plus the
//! heartbeat (server pings, pongs count as activity, text `ping` gets `pong`), the
//! bound on a silent TCP client, and the HTTP 403 for a foreign `Origin`.
//!
//! Tests wait on events (reads with deadlines), never on sleeps; the one pause, in the
//! 4006 test, is the client's own stall.

mod common;

use std::io::Read;
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Once;
use std::time::{Duration, Instant};

use base64::Engine;
use common::{expect_close, mint, new_user, next_notification, user_token, TestServer, Ws};
use notifd::auth::{self, Claims};
use serde_json::json;
use tungstenite::client::IntoClientRequest;
use tungstenite::Message;

fn claims(sub: Option<&str>, workspaces: &[&str], exp: u64) -> Claims {
    Claims {
        sub: sub.map(String::from),
        exp,
        workspaces: Some(workspaces.iter().map(|s| s.to_string()).collect()),
        workspace: None,
        scope: None,
    }
}

fn query(token: &str, workspace: &str) -> String {
    format!("token={token}&workspaceSlug={workspace}")
}

/// Creates a notification for `user` in `workspace` (None: user-level) and asserts
/// that `ws` receives exactly it: proof that the connection is open and registered.
fn assert_receives(server: &TestServer, ws: &mut Ws, user: &str, workspace: Option<&str>) {
    let created = server.create(&json!({
        "user_id": user, "workspace": workspace, "kind": "close_codes.check", "payload": {}
    }));
    assert_eq!(next_notification(ws), created, "the connection gets it");
}

/// Opens a connection and returns the close code the server then sends.
fn close_code_of(server: &TestServer, query: &str) -> u16 {
    let mut ws = server.ws(query);
    expect_close(&mut ws).0
}

// ---- 4001 ------------------------------------------------------------------

#[test]
fn bad_tokens_are_closed_with_4001() {
    let server = TestServer::start();
    let user = new_user("c4001");
    let exp = auth::unix_now() + 3600;
    let valid = claims(Some(&user), &["acme"], exp);

    let wrong_secret = auth::mint(
        jsonwebtoken::Algorithm::HS256,
        b"another-secret-0123456789-abcdefghij",
        &valid,
    )
    .expect("mint");
    // Right secret, but HS512: the algorithm is pinned to HS256.
    let wrong_alg = auth::mint(
        jsonwebtoken::Algorithm::HS512,
        common::SECRET.as_bytes(),
        &valid,
    )
    .expect("mint");
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let alg_none = format!(
        "{}.{}.",
        b64.encode(br#"{"alg":"none","typ":"JWT"}"#),
        b64.encode(serde_json::to_vec(&valid).expect("claims JSON"))
    );
    let no_sub = mint(&claims(None, &["acme"], exp));

    let cases = [
        ("missing token", "workspaceSlug=acme".to_string()),
        ("empty token", "token=&workspaceSlug=acme".to_string()),
        ("malformed token", query("not.a-jwt", "acme")),
        ("wrong secret", query(&wrong_secret, "acme")),
        ("alg HS512", query(&wrong_alg, "acme")),
        ("alg none", query(&alg_none, "acme")),
        ("no sub", query(&no_sub, "acme")),
    ];
    for (what, q) in &cases {
        assert_eq!(close_code_of(&server, q), 4001, "{what}");
    }
    // The control case: the same claims, correctly signed, are admitted.
    let mut ws = server.ws(&query(&mint(&valid), "acme"));
    assert_receives(&server, &mut ws, &user, Some("acme"));
}

#[test]
fn a_token_in_an_authorization_header_is_accepted() {
    let server = TestServer::start();
    let user = new_user("bearer");
    let bearer = format!("Bearer {}", user_token(&user, &["acme"]));
    let mut ws = common::ws_connect(
        server.ws_addr(),
        "workspaceSlug=acme",
        &[("Authorization", &bearer)],
    );
    assert_receives(&server, &mut ws, &user, Some("acme"));
}

// ---- 4002, 4004 --------------------------------------------------------------

#[test]
fn a_missing_or_empty_workspace_slug_is_closed_with_4002() {
    let server = TestServer::start();
    let token = user_token(&new_user("c4002"), &["acme"]);
    assert_eq!(
        close_code_of(&server, &format!("token={token}")),
        4002,
        "missing"
    );
    assert_eq!(close_code_of(&server, &query(&token, "")), 4002, "empty");
}

#[test]
fn a_workspace_the_token_does_not_grant_is_closed_with_4004() {
    let server = TestServer::start();
    let user = new_user("c4004");
    let token = user_token(&user, &["a"]);
    assert_eq!(close_code_of(&server, &query(&token, "b")), 4004);
    // The granted one is fine.
    let mut ws = server.ws(&query(&token, "a"));
    assert_receives(&server, &mut ws, &user, Some("a"));
}

// ---- 4003 --------------------------------------------------------------------

#[test]
fn a_token_expired_at_connect_is_closed_with_4003() {
    let server = TestServer::start();
    let user = new_user("c4003");
    // Well past the default 30 s leeway.
    let token = mint(&claims(Some(&user), &["acme"], auth::unix_now() - 300));
    assert_eq!(close_code_of(&server, &query(&token, "acme")), 4003);
}

#[test]
fn a_token_expiring_while_connected_is_closed_with_4003() {
    let mut settings = common::settings();
    settings.jwt_leeway = Some("0s".into());
    let server = TestServer::with(settings);
    let user = new_user("c4003live");
    let token = mint(&claims(Some(&user), &["acme"], auth::unix_now() + 2));
    let mut ws = server.ws(&query(&token, "acme"));
    let opened = Instant::now();
    // Open and live first...
    assert_receives(&server, &mut ws, &user, Some("acme"));
    // ...then closed once `exp` passes (at most ~2 s from now, no leeway).
    let (code, _) = expect_close(&mut ws);
    assert_eq!(code, 4003);
    assert!(
        opened.elapsed() < Duration::from_secs(5),
        "closed {:?} after opening; exp was ≤ 2 s away",
        opened.elapsed()
    );
}

// ---- 4005 --------------------------------------------------------------------

#[test]
fn with_one_connection_per_user_a_newer_connection_replaces_the_older_one_with_4005() {
    let mut settings = common::settings();
    settings.connections_per_user = Some("1".into());
    let server = TestServer::with(settings);
    let user = new_user("c4005");
    let token = user_token(&user, &["a", "b"]);

    let mut other_workspace = server.ws(&query(&token, "b"));
    assert_receives(&server, &mut other_workspace, &user, Some("b"));
    let mut older = server.ws(&query(&token, "a"));
    // Registered (it receives) before the newer one opens.
    assert_receives(&server, &mut older, &user, Some("a"));

    let mut newer = server.ws(&query(&token, "a"));
    assert_eq!(expect_close(&mut older).0, 4005);

    // The newer connection keeps receiving its workspace's notifications...
    assert_receives(&server, &mut newer, &user, Some("a"));
    assert_receives(&server, &mut newer, &user, Some("a"));
    // ...the same user on another workspace was not replaced...
    assert_receives(&server, &mut other_workspace, &user, Some("b"));
    // ...and a user-level notification reaches both survivors.
    let created = server.create(&json!({"user_id": user, "kind": "user.level", "payload": {}}));
    assert_eq!(next_notification(&mut newer), created);
    assert_eq!(next_notification(&mut other_workspace), created);
}

#[test]
fn five_connections_per_user_by_default_and_a_sixth_replaces_the_oldest_with_4005() {
    let server = TestServer::start();
    let user = new_user("c4005_five");
    let token = user_token(&user, &["a"]);
    let mut open: Vec<Ws> = Vec::new();
    for _ in 0..5 {
        let mut ws = server.ws(&query(&token, "a"));
        // Registered (it receives) before the next one opens: the order is defined.
        common::assert_only_pong_pending(&mut ws, "a connection within the limit");
        open.push(ws);
    }
    // All five receive every notification.
    let created =
        server.create(&json!({"user_id": user, "workspace": "a", "kind": "five", "payload": {}}));
    for ws in &mut open {
        assert_eq!(next_notification(ws), created);
    }
    let mut sixth = server.ws(&query(&token, "a"));
    assert_eq!(expect_close(&mut open[0]).0, 4005, "the oldest is replaced");
    for ws in open.iter_mut().skip(1) {
        common::assert_only_pong_pending(ws, "the four newer ones stay");
    }
    assert_receives(&server, &mut sixth, &user, Some("a"));
}

// ---- 4006 --------------------------------------------------------------------

#[test]
fn a_client_that_does_not_read_is_closed_with_4006() {
    const QUEUE: usize = 16;
    let mut settings = common::settings();
    settings.ws_queue = Some(QUEUE.to_string());
    let server = TestServer::with(settings);
    let user = new_user("c4006");
    let mut ws = common::ws_connect_small_receive_buffer(
        server.ws_addr(),
        &query(&user_token(&user, &["acme"]), "acme"),
        16 * 1024,
    );
    let client = ws.get_ref().local_addr().expect("client address");
    assert_eq!(server.ws_connections(), 1);

    // ~24 KB of payload (~48 KB serialized with its `metadata` alias): every
    // notification weighs on the socket buffers.
    let blob = "x".repeat(24 * 1024);
    let body =
        json!({"user_id": user, "workspace": "acme", "kind": "flood", "payload": {"blob": blob}});

    // Flood without reading. The client's receive buffer fills, then the server's send
    // buffer (its size is the kernel's choice); from then on notifications wait in the
    // connection's queue, and once QUEUE of them wait the client is too slow. Stop
    // flooding soon after the send buffer is full.
    let stalled_enough = QUEUE + 10;
    let (mut created, mut stalled_for, mut last_queued) = (0, 0, 0);
    while created < 600 && stalled_for < stalled_enough && server.ws_connections() == 1 {
        server.create(&body);
        created += 1;
        let queued = common::server_send_queue(server.ws_addr(), client);
        if queued > 0 && queued == last_queued {
            stalled_for += 1;
        } else {
            stalled_for = 0;
        }
        last_queued = queued;
    }
    assert!(
        stalled_for >= stalled_enough,
        "the server's send queue never stalled ({created} created, {last_queued} bytes queued, \
         {} connections)",
        server.ws_connections()
    );

    // A client that stays stalled a while longer (a throttled background tab) still
    // gets its close frame, which waits behind the notifications it has not read.
    std::thread::sleep(std::time::Duration::from_secs(3));
    let mut received = 0;
    let code = loop {
        match ws.read() {
            Ok(Message::Text(_)) => received += 1,
            Ok(Message::Close(Some(frame))) => break u16::from(frame.code),
            Ok(Message::Close(None)) => break 1005,
            Ok(_) => continue,
            Err(err) => panic!("no close frame after {received} of {created} notifications: {err}"),
        }
    };
    assert_eq!(code, 4006, "after {received} of {created} notifications");
    assert!(
        received < created,
        "a too-slow client does not get everything"
    );
}

// ---- 1009 --------------------------------------------------------------------

/// Panics on the server's threads (named `notifd-…`) in this test binary so far. The
/// server runs in-process, so a hook sees them; the default output is kept.
fn server_panics() -> usize {
    static PANICS: AtomicUsize = AtomicUsize::new(0);
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            // The kernel's name: WebSocket threads are not std threads, so
            // `thread::current().name()` does not know theirs.
            let name = std::fs::read_to_string("/proc/thread-self/comm").unwrap_or_default();
            if name.starts_with("notifd-") {
                PANICS.fetch_add(1, Ordering::SeqCst);
            }
            previous(info);
        }));
    });
    PANICS.load(Ordering::SeqCst)
}

#[test]
fn a_client_message_over_64_kib_is_closed_with_1009() {
    let panics_before = server_panics();
    let server = TestServer::start();
    let token = user_token(&new_user("c1009"), &["acme", "edge"]);

    // Exactly 64 KiB is allowed: the connection stays and answers.
    let mut at_limit = server.ws(&query(&token, "edge"));
    at_limit
        .send(Message::text("y".repeat(64 * 1024)))
        .expect("send 64 KiB");
    common::assert_only_pong_pending(&mut at_limit, "the connection at the limit");

    let mut ws = server.ws(&query(&token, "acme"));
    ws.send(Message::text("x".repeat(64 * 1024 + 1)))
        .expect("send 64 KiB + 1");
    assert_eq!(expect_close(&mut ws).0, 1009);
    // The close ends cleanly (the client's reply is sent, then the server closes the
    // TCP connection) instead of with a reset.
    match ws.read() {
        Err(tungstenite::Error::ConnectionClosed) => {}
        other => panic!("expected a clean end after the close frame, got {other:?}"),
    }
    // The server did not read on past the refused frame (tungstenite forbids it).
    assert_eq!(server_panics(), panics_before, "a server thread panicked");
}

// ---- 1013 --------------------------------------------------------------------

#[test]
fn a_connection_over_the_limit_is_closed_with_1013() {
    let mut settings = common::settings();
    settings.max_connections = Some("2".into());
    let server = TestServer::with(settings);
    let (first_user, second_user) = (new_user("c1013a"), new_user("c1013b"));
    let mut first = server.ws(&query(&user_token(&first_user, &["acme"]), "acme"));
    let mut second = server.ws(&query(&user_token(&second_user, &["acme"]), "acme"));
    assert_receives(&server, &mut first, &first_user, Some("acme"));
    assert_receives(&server, &mut second, &second_user, Some("acme"));

    let third_user = new_user("c1013c");
    let third = query(&user_token(&third_user, &["acme"]), "acme");
    assert_eq!(close_code_of(&server, &third), 1013);

    // The first two stay open.
    assert_receives(&server, &mut first, &first_user, Some("acme"));
    assert_receives(&server, &mut second, &second_user, Some("acme"));
}

// ---- 4000 and the heartbeat --------------------------------------------------

#[test]
fn a_client_that_sends_nothing_is_closed_with_4000() {
    let mut settings = common::settings();
    settings.idle_timeout = Some("1s".into());
    settings.ping_interval = Some("30s".into());
    let server = TestServer::with(settings);
    let mut ws = server.ws(&query(&user_token(&new_user("c4000"), &["acme"]), "acme"));
    let opened = Instant::now();
    let (code, _) = expect_close(&mut ws);
    let waited = opened.elapsed();
    assert_eq!(code, 4000);
    // 1 s of silence; the client's only frame could be one pong to an early ping.
    assert!(
        waited >= Duration::from_millis(800) && waited < Duration::from_secs(5),
        "closed as idle after {waited:?} with a 1 s idle timeout"
    );
}

#[test]
fn the_server_pings_and_a_client_that_answers_is_not_idle() {
    let mut settings = common::settings();
    settings.ping_interval = Some("200ms".into());
    settings.idle_timeout = Some("1s".into());
    let server = TestServer::with(settings);
    let mut ws = server.ws(&query(&user_token(&new_user("beat"), &["acme"]), "acme"));
    ws.get_ref()
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");

    // A ping within 2 s (the read deadline).
    let opened = Instant::now();
    match ws.read().expect("a ping within 2 s") {
        Message::Ping(_) => {}
        other => panic!("expected a ping first, got {other:?}"),
    }
    // The client only ever sends pongs (tungstenite answers each ping on the next
    // read). Pongs are activity, so three idle timeouts pass without a close.
    let mut pings = 1;
    while opened.elapsed() < Duration::from_secs(3) {
        match ws.read() {
            Ok(Message::Ping(_)) => pings += 1,
            Ok(Message::Close(frame)) => {
                panic!("closed after {:?}: {frame:?}", opened.elapsed())
            }
            Ok(other) => panic!("unexpected {other:?}"),
            Err(err) => panic!("connection ended after {:?}: {err}", opened.elapsed()),
        }
    }
    assert!(pings >= 5, "{pings} pings in 3 s at a 200 ms interval");
    common::assert_only_pong_pending(&mut ws, "after the pings");
}

#[test]
fn a_text_ping_gets_a_text_pong() {
    let server = TestServer::start();
    let user = new_user("textping");
    let mut ws = server.ws(&query(&user_token(&user, &["acme"]), "acme"));
    common::assert_only_pong_pending(&mut ws, "first text ping");
    common::assert_only_pong_pending(&mut ws, "second text ping");
    // Still an ordinary connection afterwards.
    assert_receives(&server, &mut ws, &user, Some("acme"));
}

// ---- 1001 --------------------------------------------------------------------

#[test]
fn a_graceful_shutdown_closes_connections_with_1001() {
    let mut server = TestServer::start();
    let user = new_user("c1001");
    let mut ws = server.ws(&query(&user_token(&user, &["acme"]), "acme"));
    assert_receives(&server, &mut ws, &user, Some("acme"));

    let reader = std::thread::spawn(move || {
        let closed = expect_close(&mut ws);
        // Sends tungstenite's queued close reply, so the server's drain ends at once.
        let _ = ws.read();
        closed
    });
    let stopping = Instant::now();
    server.stop();
    let (code, _) = reader.join().expect("reader thread");
    assert_eq!(code, 1001);
    // Well inside the 5 s drain limit: the drain ended on the client's close reply,
    // not by giving up.
    assert!(
        stopping.elapsed() < Duration::from_secs(3),
        "shutdown took {:?}",
        stopping.elapsed()
    );
}

// ---- the handshake -----------------------------------------------------------

#[test]
fn a_silent_tcp_client_is_dropped() {
    let server = TestServer::start();
    let mut tcp = TcpStream::connect(server.ws_addr()).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(12)))
        .expect("timeout");
    let started = Instant::now();
    let mut buf = [0u8; 256];
    match tcp.read(&mut buf) {
        Ok(0) => {}
        Err(e)
            if !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) => {}
        Ok(n) => panic!(
            "the server sent {:?} to a client that said nothing",
            String::from_utf8_lossy(&buf[..n])
        ),
        Err(e) => panic!("still connected after {:?}: {e}", started.elapsed()),
    }
    // Dropped by the 10 s handshake limit, not refused at once.
    assert!(
        started.elapsed() >= Duration::from_secs(9),
        "dropped after {:?}",
        started.elapsed()
    );
}

#[test]
fn a_foreign_origin_gets_403_when_origins_are_configured() {
    let mut settings = common::settings();
    settings.cors_origins = Some("https://app.example".into());
    let server = TestServer::with(settings);
    let addr = server.ws_addr();
    let user = new_user("origin");
    let token = user_token(&user, &["acme", "other"]);

    let mut request = format!("ws://{addr}/?{}", query(&token, "acme"))
        .into_client_request()
        .expect("request");
    request.headers_mut().insert(
        "Origin",
        "https://evil.example".parse().expect("header value"),
    );
    let stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    match tungstenite::client(request, stream) {
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(response))) => {
            assert_eq!(response.status().as_u16(), 403)
        }
        Err(other) => panic!("expected an HTTP 403, got {other}"),
        Ok(_) => panic!("a foreign origin was upgraded"),
    }

    // The configured origin, and a client without Origin (wscat, services), connect.
    let mut allowed = common::ws_connect(
        addr,
        &query(&token, "acme"),
        &[("Origin", "https://app.example")],
    );
    assert_receives(&server, &mut allowed, &user, Some("acme"));
    let mut no_origin = server.ws(&query(&token, "other"));
    assert_receives(&server, &mut no_origin, &user, Some("other"));
}
