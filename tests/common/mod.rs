//! The test harness: a real notifd on 127.0.0.1:0 against real PostgreSQL (a fresh
//! database per test binary) and real Redis (a unique channel prefix per server),
//! plus a raw HTTP client, token minting and WebSocket helpers.
#![allow(dead_code)]

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use notifd::auth::{self, Claims};
use notifd::cli::Settings;
use notifd::{Config, Server};
use serde_json::Value;

pub const SECRET: &str = "test-secret-0123456789-abcdefghij";

/// The PostgreSQL URL tests create their databases through.
pub fn admin_database_url() -> String {
    std::env::var("NOTIFD_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

pub fn redis_url() -> String {
    std::env::var("NOTIFD_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

fn unique(tag: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{tag}_{}_{}", std::process::id(), nanos % 1_000_000_000_000)
}

/// A database URL for this test binary: created once, empty, named `notifd_t_…` so
/// `scripts/test` can drop leftovers.
pub fn database_url() -> String {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        let admin: postgres::Config = admin_database_url()
            .parse()
            .expect("NOTIFD_TEST_DATABASE_URL parses");
        let name = unique("notifd_t");
        let mut client = admin
            .connect(postgres::NoTls)
            .expect("PostgreSQL reachable for tests");
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .expect("create test database");
        let mut url = admin_database_url();
        let cut = url.rfind('/').expect("URL has a database part");
        url.truncate(cut + 1);
        url.push_str(&name);
        url
    })
    .clone()
}

/// Settings for a test server: ports 0, a fresh Redis prefix, the test secret.
pub fn settings() -> Settings {
    Settings {
        database_url: Some(database_url()),
        redis_url: Some(redis_url()),
        redis_prefix: Some(format!("{}:", unique("t"))),
        http_addr: Some("127.0.0.1:0".into()),
        ws_addr: Some("127.0.0.1:0".into()),
        jwt_secret: Some(SECRET.into()),
        http_workers: Some("4".into()),
        db_pool_size: Some("4".into()),
        ..Settings::default()
    }
}

/// A notifd running in this process; shuts down on drop.
pub struct TestServer {
    server: Option<Server>,
    pub config: Config,
}

impl TestServer {
    pub fn start() -> TestServer {
        TestServer::with(settings())
    }

    pub fn with(settings: Settings) -> TestServer {
        let config = Config::from_settings(&settings).expect("test config is valid");
        TestServer::with_config(config)
    }

    /// A server with a configuration a test adjusted in code.
    pub fn with_config(config: Config) -> TestServer {
        let server = Server::start(&config).expect("server starts");
        TestServer {
            server: Some(server),
            config,
        }
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.server.as_ref().expect("running").http_addr()
    }

    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.server.as_ref().expect("running").metrics_addr()
    }

    pub fn ws_addr(&self) -> SocketAddr {
        self.server.as_ref().expect("running").ws_addr()
    }

    /// WebSocket connections the server holds now.
    pub fn ws_connections(&self) -> usize {
        self.server.as_ref().expect("running").ws_connections()
    }

    /// Opens a WebSocket with this query string (`token=…&workspaceSlug=…`).
    pub fn ws(&self, query: &str) -> Ws {
        ws_connect(self.ws_addr(), query, &[])
    }

    /// Stops the server now (graceful shutdown), as drop would.
    pub fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown();
        }
    }

    pub fn get(&self, path: &str, token: &str) -> Response {
        self.request(
            "GET",
            path,
            &[("Authorization", &format!("Bearer {token}"))],
            None,
        )
    }

    pub fn send_json(&self, method: &str, path: &str, token: &str, body: &Value) -> Response {
        let body = body.to_string();
        self.request(
            method,
            path,
            &[
                ("Authorization", &format!("Bearer {token}")),
                ("Content-Type", "application/json"),
            ],
            Some(body.as_bytes()),
        )
    }

    /// Creates a notification through the internal API; panics unless 201.
    pub fn create(&self, body: &Value) -> Value {
        let response = self.send_json("POST", "/v1/internal/notifications", &service_token(), body);
        assert_eq!(response.status, 201, "create failed: {}", response.text());
        response.json()
    }

    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Response {
        request_to(self.http_addr(), method, path, headers, body)
    }

    /// Sends raw bytes and reads the whole response (the request must say `Connection: close`).
    pub fn raw(&self, bytes: &[u8]) -> Response {
        raw_to(self.http_addr(), bytes)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown();
        }
    }
}

/// How long the HTTP helpers wait for the server.
pub const HTTP_DEADLINE: Duration = Duration::from_secs(10);

/// Reads one response with a `Content-Length` from a kept-alive connection.
pub fn read_one_response(stream: &mut TcpStream) -> (String, Vec<u8>) {
    let started = Instant::now();
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buffer[..end]).to_string();
            let length: usize = head
                .lines()
                .filter_map(|l| l.split_once(':'))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
                .map(|(_, v)| v.trim().parse().expect("Content-Length"))
                .unwrap_or_else(|| panic!("no Content-Length: {head}"));
            if buffer.len() >= end + 4 + length {
                let body = buffer[end + 4..end + 4 + length].to_vec();
                assert_eq!(buffer.len(), end + 4 + length, "nothing after the response");
                return (head, body);
            }
        }
        assert!(
            started.elapsed() < HTTP_DEADLINE,
            "no complete response in time"
        );
        let n = stream.read(&mut chunk).expect("read response");
        assert!(n > 0, "closed before the response was complete");
        buffer.extend_from_slice(&chunk[..n]);
    }
}

/// Waits until the server closes the connection; returns how long that took.
/// Fails if the deadline passes first or if the server sends anything else.
pub fn wait_for_close(stream: &mut TcpStream) -> Duration {
    let started = Instant::now();
    let mut chunk = [0u8; 1024];
    loop {
        let left = HTTP_DEADLINE
            .checked_sub(started.elapsed())
            .filter(|d| !d.is_zero())
            .unwrap_or_else(|| {
                panic!("the server did not close the connection in {HTTP_DEADLINE:?}")
            });
        stream.set_read_timeout(Some(left)).expect("timeout");
        match stream.read(&mut chunk) {
            Ok(0) => return started.elapsed(),
            Ok(n) => panic!(
                "unexpected bytes on an idle connection: {:?}",
                String::from_utf8_lossy(&chunk[..n])
            ),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!("the server did not close the connection in {HTTP_DEADLINE:?}")
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => panic!("expected an orderly close, got {e}"),
        }
    }
}

/// One HTTP/1.1 request on its own connection (`Connection: close`).
pub fn request_to(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Response {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if let Some(body) = body {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    let mut raw = head.into_bytes();
    raw.extend_from_slice(body.unwrap_or_default());
    raw_to(addr, &raw)
}

/// Sends raw bytes to `addr` and reads the whole response.
pub fn raw_to(addr: SocketAddr, bytes: &[u8]) -> Response {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    // The server may answer (413) and close before reading everything we send.
    let _ = stream.write_all(bytes);
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    Response::parse(&response)
}

/// A test WebSocket client: a blocking socket with a 10 s read deadline.
pub type Ws = tungstenite::WebSocket<TcpStream>;

/// A client whose socket has a receive buffer of about `bytes`, so a client that does
/// not read stalls the server's writes after little data.
pub fn ws_connect_small_receive_buffer(addr: SocketAddr, query: &str, bytes: usize) -> Ws {
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    // Set before connecting, so the advertised window stays small.
    socket.set_recv_buffer_size(bytes).expect("SO_RCVBUF");
    socket.connect(&addr.into()).expect("connect");
    let stream: TcpStream = socket.into();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let (ws, _) = tungstenite::client(format!("ws://{addr}/?{query}"), stream).expect("handshake");
    ws
}

/// The bytes the server's kernel holds unsent on the connection from `client` (the
/// `tx_queue` of /proc/net/tcp: the test and the server share one host).
pub fn server_send_queue(server: SocketAddr, client: SocketAddr) -> u64 {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp (Linux)");
    let (local, remote) = (
        format!(":{:04X}", server.port()),
        format!(":{:04X}", client.port()),
    );
    table
        .lines()
        .skip(1)
        .find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let ours = fields.get(1)?.ends_with(&local) && fields.get(2)?.ends_with(&remote);
            let (tx, _rx) = fields.get(4)?.split_once(':')?;
            ours.then(|| u64::from_str_radix(tx, 16).ok()).flatten()
        })
        .unwrap_or(0)
}

/// Opens a WebSocket to `addr` with `query` and extra request headers.
pub fn ws_connect(addr: SocketAddr, query: &str, headers: &[(&str, &str)]) -> Ws {
    use tungstenite::client::IntoClientRequest;
    let mut request = format!("ws://{addr}/?{query}")
        .into_client_request()
        .expect("ws request");
    for (name, value) in headers {
        request.headers_mut().insert(
            tungstenite::http::HeaderName::from_bytes(name.as_bytes()).expect("header name"),
            value.parse().expect("header value"),
        );
    }
    let stream = TcpStream::connect(addr).expect("ws connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let (ws, _) = tungstenite::client(request, stream).expect("ws handshake");
    ws
}

/// (unread, unseen) of `unread-count` with `query`.
pub fn counts(server: &TestServer, token: &str, query: &str) -> (i64, i64) {
    let response = server.get(&format!("/v1/notifications/unread-count{query}"), token);
    assert_eq!(response.status, 200, "{query}: {}", response.text());
    let body = response.json();
    (
        body["unread"].as_i64().expect("unread"),
        body["unseen"].as_i64().expect("unseen"),
    )
}

/// The next notification on `ws`, skipping pings and pongs; panics on close or timeout.
pub fn next_notification(ws: &mut Ws) -> Value {
    loop {
        match ws.read().expect("a notification before the deadline") {
            tungstenite::Message::Text(text) => {
                return serde_json::from_str(text.as_str()).expect("notification JSON")
            }
            tungstenite::Message::Close(frame) => panic!("closed while waiting: {frame:?}"),
            _ => continue,
        }
    }
}

/// The next text frame (control frames skipped); `Err` on close, error or timeout.
pub fn next_text(ws: &mut Ws) -> Result<String, String> {
    loop {
        match ws.read() {
            Ok(tungstenite::Message::Text(text)) => return Ok(text.to_string()),
            Ok(tungstenite::Message::Close(frame)) => return Err(format!("closed: {frame:?}")),
            Ok(_) => continue,
            Err(err) => return Err(format!("read failed: {err}")),
        }
    }
}

/// Sends the text `ping`; the very next text frame must be `pong`. Proves that no
/// notification was queued for this client before the round trip.
pub fn assert_only_pong_pending(ws: &mut Ws, who: &str) {
    ws.send(tungstenite::Message::text("ping"))
        .expect("send ping");
    let text = next_text(ws).unwrap_or_else(|e| panic!("{who}: no pong: {e}"));
    assert_eq!(
        text, "pong",
        "{who}: got something before the pong (a notification not meant for it, or a duplicate)"
    );
}

/// Reads until the server closes; returns the close code and reason.
pub fn expect_close(ws: &mut Ws) -> (u16, String) {
    loop {
        match ws.read() {
            Ok(tungstenite::Message::Close(Some(frame))) => {
                return (u16::from(frame.code), frame.reason.to_string())
            }
            Ok(tungstenite::Message::Close(None)) => return (1005, String::new()),
            Ok(_) => continue,
            Err(err) => panic!("no close frame before the connection ended: {err}"),
        }
    }
}

/// A parsed HTTP response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn parse(raw: &[u8]) -> Response {
        let split = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or_else(|| {
                panic!(
                    "no complete HTTP response: {:?}",
                    String::from_utf8_lossy(raw)
                )
            });
        let head = String::from_utf8_lossy(&raw[..split]).to_string();
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .expect("status line");
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let mut response = Response {
            status,
            headers,
            body: raw[split + 4..].to_vec(),
        };
        if response
            .header("transfer-encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
        {
            response.body = dechunk(&response.body);
        }
        response
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).to_string()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The `error.code` of an error body.
    pub fn error_code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

/// Decodes a chunked body (notifd sends `Content-Length`; this keeps the reader
/// honest for any server that chunks).
fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    loop {
        let line_end = raw
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("chunk size line");
        let size_text = String::from_utf8_lossy(&raw[..line_end]).to_string();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .unwrap_or_else(|e| panic!("chunk size {size_text:?}: {e}"));
        raw = &raw[line_end + 2..];
        if size == 0 {
            return body;
        }
        body.extend_from_slice(&raw[..size]);
        assert_eq!(&raw[size..size + 2], b"\r\n", "chunk ends with CRLF");
        raw = &raw[size + 2..];
    }
}

pub fn mint(claims: &Claims) -> String {
    auth::mint(jsonwebtoken::Algorithm::HS256, SECRET.as_bytes(), claims).expect("mint")
}

/// A user token for `sub` granting `workspaces`, valid for an hour.
pub fn user_token(sub: &str, workspaces: &[&str]) -> String {
    mint(&Claims {
        sub: Some(sub.into()),
        exp: auth::unix_now() + 3600,
        workspaces: Some(workspaces.iter().map(|s| s.to_string()).collect()),
        workspace: None,
        scope: None,
    })
}

/// A service token with the publish scope.
pub fn service_token() -> String {
    mint(&Claims {
        sub: Some("test-service".into()),
        exp: auth::unix_now() + 3600,
        workspaces: None,
        workspace: None,
        scope: Some(auth::PUBLISH_SCOPE.into()),
    })
}

/// A unique user id, so tests sharing a database never see each other's rows.
pub fn new_user(tag: &str) -> String {
    unique(tag)
}

/// Asserts an error reply: status, `error.code`, and the start of `error.message`.
pub fn assert_error(response: &Response, status: u16, code: &str, message_start: &str, what: &str) {
    assert_eq!(response.status, status, "{what}: {}", response.text());
    assert_eq!(response.error_code(), code, "{what}: {}", response.text());
    let message = response.json()["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        message.starts_with(message_start),
        "{what}: message {message:?} should start with {message_start:?}"
    );
}

// ---------------------------------------------------------------------------
// Outages and start-up (appended by the robustness work)
// ---------------------------------------------------------------------------

/// A connection to PostgreSQL through the admin URL (roles, `pg_terminate_backend`).
pub fn admin_client() -> postgres::Client {
    admin_database_url()
        .parse::<postgres::Config>()
        .expect("NOTIFD_TEST_DATABASE_URL parses")
        .connect(postgres::NoTls)
        .expect("PostgreSQL reachable for tests")
}

/// The notifd binary with an empty environment but what a test server needs: this
/// binary's database, the shared Redis under a fresh prefix (`tag`), free ports, the
/// test secret. Callers add or override settings.
pub fn notifd_command(tag: &str) -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_notifd"));
    command
        .env_clear()
        .env("NOTIFD_DATABASE_URL", database_url())
        .env("NOTIFD_REDIS_URL", redis_url())
        .env("NOTIFD_REDIS_PREFIX", format!("{}:", new_user(tag)))
        .env("NOTIFD_HTTP_ADDR", "127.0.0.1:0")
        .env("NOTIFD_WS_ADDR", "127.0.0.1:0")
        .env("NOTIFD_JWT_SECRET", SECRET);
    command
}

/// The lines a child writes to stderr, read on a thread of their own so a test can
/// wait for one with a deadline (`recv_timeout`).
pub fn stderr_lines(child: &mut std::process::Child) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead;
    let stderr = child.stderr.take().expect("stderr is piped");
    let (send, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if send.send(line).is_err() {
                return;
            }
        }
    });
    lines
}

/// A notifd child (`serve`), killed on drop, with its stderr lines as they come and
/// the ones read so far.
pub struct Running {
    pub child: std::process::Child,
    pub lines: std::sync::mpsc::Receiver<String>,
    pub log: Vec<String>,
}

impl Running {
    /// Spawns `command` (stdout discarded, stderr read line by line).
    pub fn spawn(mut command: std::process::Command) -> Running {
        let mut child = command
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("notifd starts");
        let lines = stderr_lines(&mut child);
        Running {
            child,
            lines,
            log: Vec::new(),
        }
    }

    /// Reads log lines until one contains `needle`; panics after 20 s.
    pub fn wait_for(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            let Ok(line) = self.lines.recv_timeout(left) else {
                break;
            };
            self.log.push(line.clone());
            if line.contains(needle) {
                return line;
            }
        }
        panic!(
            "no log line with {needle:?}; log so far:\n{}",
            self.log.join("\n")
        );
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `redis-server` of the test's own on `port`, killed on drop (a panicking test
/// included), so a test can stop and restart Redis without touching the machine's.
/// Panics where redis-server is not installed: a Redis outage test that cannot run
/// must fail, not pass.
pub struct RedisProcess {
    pub port: u16,
    child: Option<std::process::Child>,
}

impl RedisProcess {
    pub fn start(port: u16) -> RedisProcess {
        let child = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--bind", "127.0.0.1"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("redis-server runs (install redis-server)");
        let mut redis = RedisProcess {
            port,
            child: Some(child),
        };
        redis.wait_ready(Duration::from_secs(10));
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Polls PING until PONG (bounded): the server is up.
    fn wait_ready(&mut self, within: Duration) {
        let deadline = std::time::Instant::now() + within;
        while !redis_answers(self.port) {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("redis-server on port {} exited: {status}", self.port);
            }
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server answers PING within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn redis_answers(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let mut reply = [0u8; 7];
    stream.write_all(b"PING\r\n").is_ok()
        && stream.read_exact(&mut reply).is_ok()
        && &reply == b"+PONG\r\n"
}

/// A port nobody listens on, below Linux's ephemeral range (32768 and up): while a
/// test's redis-server is down its port must not be handed to an outgoing
/// connection, or the restart could not bind it again.
pub fn free_low_port() -> u16 {
    let seed = u64::from(std::process::id())
        ^ SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::from(d.subsec_nanos()))
            .unwrap_or(0);
    (0..2_000u64)
        .map(|i| 20_000 + ((seed + i * 7_919) % 12_000) as u16)
        .find(|&port| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok())
        .expect("a free port below the ephemeral range")
}

/// The Redis channel of `user`'s notifications under `prefix`.
pub fn user_channel(prefix: &str, user: &str) -> String {
    format!("{prefix}notifications:{user}")
}

/// How many clients of the Redis at `url` are subscribed to `channel` now (`None`
/// when Redis does not answer).
pub fn channel_subscribers(url: &str, channel: &str) -> Option<i64> {
    let client = redis::Client::open(url).ok()?;
    let mut conn = client
        .get_connection_with_timeout(Duration::from_secs(1))
        .ok()?;
    let (_, n): (String, i64) = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(channel)
        .query(&mut conn)
        .ok()?;
    Some(n)
}

/// Waits (bounded) until exactly `count` clients of the Redis at `url` listen on
/// `channel` (an instance subscribes to the channels of the users connected to it).
/// Polls Redis for a state change; nothing waits on a guess.
pub fn wait_for_subscribers(url: &str, channel: &str, count: i64, within: Duration) {
    let deadline = std::time::Instant::now() + within;
    loop {
        let now = channel_subscribers(url, channel);
        if now == Some(count) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{count} subscriber(s) on {channel} within {within:?}; have {now:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Two instances on one database and one Redis prefix (each starts once its
/// subscriber is connected).
pub fn two_instances(settings: Settings) -> (TestServer, TestServer) {
    let a = TestServer::with(settings.clone());
    let b = TestServer::with(settings);
    (a, b)
}

/// A notifd on a redis-server of the test's own (it starts once its subscriber is
/// connected).
pub fn server_on_own_redis() -> (RedisProcess, String, TestServer) {
    let redis = RedisProcess::start(free_low_port());
    let mut settings = settings();
    settings.redis_url = Some(redis.url());
    let prefix = settings.redis_prefix.clone().expect("prefix");
    let server = TestServer::with(settings);
    (redis, prefix, server)
}

pub mod cluster;
pub mod raw_ws;
