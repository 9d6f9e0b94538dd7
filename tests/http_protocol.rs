//! HTTP behaviour of the REST listener (contract §4): body size limit (413) with a
//! declared length and chunked, content type (415), method (405) and path (404)
//! errors, /healthz and /readyz, 503 when a dependency is down, and the timeout that
//! closes idle and silent connections.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{
    new_user, read_one_response, service_token, user_token, wait_for_close, Response, TestServer,
};
use serde_json::{json, Value};

/// The request body limit of the contract: 64 KiB.
const LIMIT: usize = 64 * 1024;

/// How long a test waits for the server to do something it must do.
const DEADLINE: Duration = Duration::from_secs(10);

/// A valid create body for `user`, padded with trailing whitespace to exactly `len`
/// bytes: only its size can make it fail.
fn padded_create_body(user: &str, len: usize) -> Vec<u8> {
    let mut body = json!({"user_id": user, "kind": "padded", "payload": {}})
        .to_string()
        .into_bytes();
    assert!(body.len() < len);
    body.resize(len, b' ');
    body
}

fn assert_error(response: &Response, status: u16, code: &str) -> String {
    assert_eq!(response.status, status, "{}", response.text());
    assert_eq!(
        response.header("content-type"),
        Some("application/json"),
        "{:?}",
        response.headers
    );
    let body = response.json();
    let error = body["error"].as_object().expect("error object");
    assert_eq!(error.len(), 2, "error has exactly code and message: {body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    let message = body["error"]["message"].as_str().expect("message string");
    assert!(!message.is_empty());
    message.to_string()
}

fn post_with_length(server: &TestServer, body: &[u8]) -> Response {
    let token = service_token();
    server.request(
        "POST",
        "/v1/internal/notifications",
        &[
            ("Authorization", &format!("Bearer {token}")),
            ("Content-Type", "application/json"),
        ],
        Some(body),
    )
}

fn post_chunked(server: &TestServer, body: &[u8]) -> Response {
    let token = service_token();
    let mut raw = format!(
        "POST /v1/internal/notifications HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\
         Authorization: Bearer {token}\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\n\r\n"
    )
    .into_bytes();
    for chunk in body.chunks(5000) {
        raw.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        raw.extend_from_slice(chunk);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    server.raw(&raw)
}

fn count(server: &TestServer, user: &str) -> usize {
    let list = server.get("/v1/notifications", &user_token(user, &[]));
    assert_eq!(list.status, 200, "{}", list.text());
    list.json()["notifications"]
        .as_array()
        .expect("notifications")
        .len()
}

#[test]
fn bodies_over_64_kib_are_413_with_a_declared_length_or_chunked() {
    let server = TestServer::start();
    let user = new_user("limit");

    for body_len in [65 * 1024, LIMIT + 1] {
        let body = padded_create_body(&user, body_len);
        let message = assert_error(&post_with_length(&server, &body), 413, "payload_too_large");
        assert_eq!(message, "body: larger than 65536 bytes");
        let message = assert_error(&post_chunked(&server, &body), 413, "payload_too_large");
        assert_eq!(message, "body: larger than 65536 bytes");
    }
    assert_eq!(
        count(&server, &user),
        0,
        "nothing over the limit was stored"
    );

    // Just under and exactly at the limit: accepted, both ways.
    for body_len in [LIMIT - 1, LIMIT] {
        let body = padded_create_body(&user, body_len);
        let response = post_with_length(&server, &body);
        assert_eq!(response.status, 201, "{body_len}: {}", response.text());
        let response = post_chunked(&server, &body);
        assert_eq!(response.status, 201, "{body_len}: {}", response.text());
    }
    assert_eq!(count(&server, &user), 4);
}

#[test]
fn a_large_body_on_a_user_endpoint_is_413_too() {
    let server = TestServer::start();
    let user = new_user("limit-user");
    let token = user_token(&user, &[]);
    let mut body = json!({"ids": [uuid::Uuid::now_v7().to_string()]})
        .to_string()
        .into_bytes();
    body.resize(65 * 1024, b' ');
    let headers = [
        ("Authorization", format!("Bearer {token}")),
        ("Content-Type", "application/json".to_string()),
    ];
    let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let response = server.request("PATCH", "/v1/notifications/read", &headers, Some(&body));
    assert_error(&response, 413, "payload_too_large");

    body.truncate(LIMIT - 1);
    let response = server.request("PATCH", "/v1/notifications/read", &headers, Some(&body));
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.json(), json!({"updated": 0}));
}

#[test]
fn bodies_that_are_not_declared_json_are_415() {
    let server = TestServer::start();
    let user = new_user("media");
    let service = format!("Bearer {}", service_token());
    let reader = format!("Bearer {}", user_token(&user, &[]));
    let create = json!({"user_id": user, "kind": "k", "payload": {}}).to_string();
    let mark = json!({"ids": [uuid::Uuid::now_v7().to_string()]}).to_string();

    let cases: [(&str, &str, &str, Option<&str>, &str); 6] = [
        (
            "POST",
            "/v1/internal/notifications",
            &service,
            Some("text/plain"),
            &create,
        ),
        (
            "POST",
            "/v1/internal/notifications",
            &service,
            None,
            &create,
        ),
        (
            "POST",
            "/v1/internal/notifications",
            &service,
            Some("application/jsonx"),
            &create,
        ),
        (
            "PATCH",
            "/v1/notifications/read",
            &reader,
            Some("text/plain"),
            &mark,
        ),
        ("PATCH", "/v1/notifications/read", &reader, None, &mark),
        (
            "POST",
            "/v1/notifications/read-all",
            &reader,
            Some("text/plain"),
            "{}",
        ),
    ];
    for (method, path, auth, content_type, body) in cases {
        let mut headers = vec![("Authorization", auth)];
        if let Some(content_type) = content_type {
            headers.push(("Content-Type", content_type));
        }
        let response = server.request(method, path, &headers, Some(body.as_bytes()));
        let message = assert_error(&response, 415, "unsupported_media_type");
        assert_eq!(
            message, "Content-Type must be application/json",
            "{method} {path} {content_type:?}"
        );
    }
    assert_eq!(count(&server, &user), 0);

    // The same body with a JSON content type (parameters allowed) is accepted.
    let response = server.request(
        "POST",
        "/v1/internal/notifications",
        &[
            ("Authorization", &service),
            ("Content-Type", "Application/JSON; charset=utf-8"),
        ],
        Some(create.as_bytes()),
    );
    assert_eq!(response.status, 201, "{}", response.text());
}

#[test]
fn wrong_methods_are_405_and_unknown_paths_404() {
    let server = TestServer::start();
    let token = user_token(&new_user("routes"), &[]);
    let auth = format!("Bearer {token}");
    for (method, path, allowed) in [
        ("DELETE", "/v1/notifications", "GET"),
        ("POST", "/v1/notifications", "GET"),
        ("GET", "/v1/internal/notifications", "POST"),
        ("GET", "/v1/notifications/read", "PATCH"),
        ("PUT", "/healthz", "GET"),
    ] {
        let response = server.request(method, path, &[("Authorization", &auth)], None);
        let message = assert_error(&response, 405, "method_not_allowed");
        assert_eq!(
            message,
            format!("method not allowed; allowed: {allowed}"),
            "{method} {path}"
        );
    }
    for path in [
        // `/` is the inbox page (src/face).
        "/index.html",
        "/v1",
        "/v1/notification",
        "/v1/notifications/",
        "/v2/notifications",
        "/nope?x=1",
    ] {
        let response = server.request("GET", path, &[("Authorization", &auth)], None);
        let message = assert_error(&response, 404, "not_found");
        assert_eq!(message, "no such endpoint", "{path}");
    }
}

#[test]
fn healthz_and_readyz_with_both_dependencies_up() {
    let server = TestServer::start();
    let health = server.request("GET", "/healthz", &[], None);
    assert_eq!(health.status, 200, "{}", health.text());
    assert_eq!(health.json(), json!({"status": "ok"}));

    let ready = server.request("GET", "/readyz", &[], None);
    assert_eq!(ready.status, 200, "{}", ready.text());
    assert_eq!(
        ready.json(),
        json!({"status": "ready", "checks": {"postgresql": "up", "redis": "up"}})
    );
}

fn server_with(database_url: Option<&str>, redis_url: Option<&str>) -> TestServer {
    let mut settings = common::settings();
    if let Some(url) = database_url {
        settings.database_url = Some(url.into());
    }
    if let Some(url) = redis_url {
        settings.redis_url = Some(url.into());
    }
    TestServer::with(settings)
}

#[test]
fn postgresql_down_is_503_on_readyz_and_the_api() {
    // Nothing listens on port 1: the server must still start and say what is wrong.
    let server = server_with(Some("postgres://postgres@127.0.0.1:1/x"), None);

    let health = server.request("GET", "/healthz", &[], None);
    assert_eq!(health.status, 200, "{}", health.text());

    let ready = server.request("GET", "/readyz", &[], None);
    assert_eq!(ready.status, 503, "{}", ready.text());
    let body = ready.json();
    assert_eq!(body["checks"], json!({"postgresql": "down", "redis": "up"}));
    assert_eq!(body["error"]["code"], "service_unavailable");
    assert_eq!(body["error"]["message"], "postgresql unavailable");

    let user = new_user("pgdown");
    let list = server.get("/v1/notifications", &user_token(&user, &[]));
    let message = assert_error(&list, 503, "service_unavailable");
    assert_eq!(message, "postgresql is unavailable");
    assert_eq!(list.header("retry-after"), Some("5"), "{:?}", list.headers);
    assert!(!message.contains("127.0.0.1"), "no connection details leak");

    let create = server.send_json(
        "POST",
        "/v1/internal/notifications",
        &service_token(),
        &json!({"user_id": user, "kind": "k", "payload": {}}),
    );
    let message = assert_error(&create, 503, "service_unavailable");
    assert_eq!(message, "postgresql is unavailable");

    // Token checks still come first: a bad token is a 401, not a 503.
    let refused = server.get("/v1/notifications", "abc");
    assert_error(&refused, 401, "unauthorized");
}

#[test]
fn redis_down_is_503_on_readyz() {
    let server = server_with(None, Some("redis://127.0.0.1:1"));
    let ready = server.request("GET", "/readyz", &[], None);
    assert_eq!(ready.status, 503, "{}", ready.text());
    let body = ready.json();
    assert_eq!(body["checks"], json!({"postgresql": "up", "redis": "down"}));
    assert_eq!(body["error"]["code"], "service_unavailable");
    assert_eq!(body["error"]["message"], "redis unavailable");
}

#[test]
fn both_down_names_both() {
    let server = server_with(
        Some("postgres://postgres@127.0.0.1:1/x"),
        Some("redis://127.0.0.1:1"),
    );
    let ready = server.request("GET", "/readyz", &[], None);
    assert_eq!(ready.status, 503, "{}", ready.text());
    let body = ready.json();
    assert_eq!(
        body["checks"],
        json!({"postgresql": "down", "redis": "down"})
    );
    assert_eq!(body["error"]["message"], "postgresql and redis unavailable");
}

fn short_timeout_server() -> TestServer {
    let mut settings = common::settings();
    settings.http_timeout = Some("1s".into());
    TestServer::with(settings)
}

#[test]
fn an_idle_keep_alive_connection_is_closed_after_the_http_timeout() {
    let server = short_timeout_server();
    let mut stream = TcpStream::connect(server.http_addr()).expect("connect");
    stream.set_read_timeout(Some(DEADLINE)).expect("timeout");

    // Two requests on one connection: keep-alive works...
    for _ in 0..2 {
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
            .expect("send");
        let (head, body) = read_one_response(&mut stream);
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        let body: Value = serde_json::from_slice(&body).expect("JSON");
        assert_eq!(body, json!({"status": "ok"}));
    }
    // ...and once idle, the server hangs up, after about the configured second.
    let waited = wait_for_close(&mut stream);
    assert!(
        waited >= Duration::from_millis(500),
        "closed after {waited:?}: too early for a 1 s idle timeout"
    );
}

#[test]
fn a_connection_that_sends_nothing_is_closed() {
    let server = short_timeout_server();
    let mut silent = TcpStream::connect(server.http_addr()).expect("connect");
    let waited = wait_for_close(&mut silent);
    assert!(
        waited >= Duration::from_millis(500),
        "closed after {waited:?}: too early for a 1 s timeout"
    );
}

#[test]
fn the_listener_keeps_accepting_after_a_quiet_period_longer_than_the_timeout() {
    let server = short_timeout_server();
    // The silent connection's close marks a stretch of at least the HTTP timeout in
    // which nothing new connected to this server.
    let mut silent = TcpStream::connect(server.http_addr()).expect("connect");
    wait_for_close(&mut silent);
    let mut stream = TcpStream::connect(server.http_addr()).unwrap_or_else(|e| {
        panic!(
            "the REST listener stopped accepting after a quiet period of NOTIFD_HTTP_TIMEOUT: {e}"
        )
    });
    stream.set_read_timeout(Some(DEADLINE)).expect("timeout");
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
        .expect("send");
    let (head, body) = read_one_response(&mut stream);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(
        serde_json::from_slice::<Value>(&body).expect("JSON"),
        json!({"status": "ok"})
    );
    // Every worker is still serving: as many sequential requests as workers, and more.
    for _ in 0..8 {
        let health = server.request("GET", "/healthz", &[], None);
        assert_eq!(health.status, 200, "{}", health.text());
    }
}

#[test]
fn a_connection_stalled_mid_request_is_closed() {
    let server = short_timeout_server();
    let mut stalled = TcpStream::connect(server.http_addr()).expect("connect");
    stalled
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: te")
        .expect("send");
    let started = Instant::now();
    stalled.set_read_timeout(Some(DEADLINE)).expect("timeout");
    let mut rest = Vec::new();
    match stalled.read_to_end(&mut rest) {
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        Err(e) => panic!("the server did not close a stalled connection: {e}"),
    }
    assert!(started.elapsed() < DEADLINE);
    // Whatever it said before closing, it did not serve the half request.
    let text = String::from_utf8_lossy(&rest);
    assert!(!text.contains("\"status\":\"ok\""), "{text}");
}

/// The old front (tiny_http) could leave some of a burst of new keep-alive
/// connections waiting 5 to 30 s for a free thread. Every connection of each burst
/// must get its first answer within 1 s, even on a loaded test machine.
#[test]
fn a_burst_of_keep_alive_connections_is_answered_promptly() {
    use std::io::{Read, Write};
    let server = TestServer::start();
    for burst in 0..4 {
        let mut streams: Vec<std::net::TcpStream> = (0..16)
            .map(|_| {
                let stream = std::net::TcpStream::connect(server.http_addr()).expect("connect");
                stream
                    .set_read_timeout(Some(std::time::Duration::from_secs(10)))
                    .expect("timeout");
                stream
            })
            .collect();
        let started = std::time::Instant::now();
        for stream in &mut streams {
            stream
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
                .expect("send");
        }
        for stream in &mut streams {
            let mut buf = [0u8; 256];
            let n = stream.read(&mut buf).expect("an answer");
            assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "burst {burst}");
        }
        let took = started.elapsed();
        assert!(
            took < std::time::Duration::from_secs(1),
            "burst {burst} took {took:?}"
        );
    }
}
