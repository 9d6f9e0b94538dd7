//! The REST front against clients that break the rules or push its limits (contract
//! §4 "Protocol", §7): every one gets an answer and a closed connection, never a
//! hang or a leak, and everyone else is still served. Also keep-alive, pipelining,
//! HTTP/1.0, `Expect: 100-continue`, HEAD, panic containment and shutdown.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{read_one_response, wait_for_close, Response, TestServer, HTTP_DEADLINE};
use notifd::Config;

/// Open descriptors of this process (the in-process server's and the test's).
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").expect("procfs").count()
}

fn connect(server: &TestServer) -> TcpStream {
    let stream = TcpStream::connect(server.http_addr()).expect("connect");
    stream
        .set_read_timeout(Some(HTTP_DEADLINE))
        .expect("timeout");
    stream
}

/// Sends `bytes` on a new connection and reads until the server closes it.
fn exchange(server: &TestServer, bytes: &[u8]) -> Response {
    common::raw_to(server.http_addr(), bytes)
}

fn assert_refused(response: &Response, status: u16, code: &str) {
    assert_eq!(response.status, status, "{}", response.text());
    assert_eq!(response.error_code(), code, "{}", response.text());
    assert_eq!(response.header("connection"), Some("close"));
}

/// Waits until `check` holds, polling; panics with `what` after the deadline.
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + HTTP_DEADLINE;
    while !check() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn newer_http_versions_are_answered_505_and_release_their_descriptors() {
    let server = TestServer::start();
    // Warm up: the pools open their connections on first use.
    assert_eq!(server.request("GET", "/healthz", &[], None).status, 200);
    let before = open_fds();
    for i in 0..200 {
        let line: &[u8] = if i % 2 == 0 {
            b"GET / HTTP/2.0\r\n\r\n"
        } else {
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
        };
        let response = exchange(&server, line);
        assert_refused(&response, 505, "http_version_not_supported");
    }
    assert_refused(
        &exchange(&server, b"GET / HTTP/1.2\r\nHost: t\r\n\r\n"),
        505,
        "http_version_not_supported",
    );
    // Every refused connection is closed by the server, so none holds a descriptor.
    eventually(
        "descriptors of refused connections were not released",
        || open_fds() <= before + 2,
    );
    assert_eq!(server.request("GET", "/healthz", &[], None).status, 200);
}

#[test]
fn non_ascii_bytes_are_served_in_header_values_and_refused_elsewhere() {
    let server = TestServer::start();
    let utf8 = "GET /healthz HTTP/1.1\r\nHost: t\r\nX-Note: caf\u{e9}\r\nConnection: close\r\n\r\n";
    let response = exchange(&server, utf8.as_bytes());
    assert_eq!(response.status, 200, "{}", response.text());
    // A raw Latin-1 byte (obs-text, not UTF-8) in a value is served too.
    let mut latin = b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Note: caf".to_vec();
    latin.extend_from_slice(&[0xe9]);
    latin.extend_from_slice(b"\r\nConnection: close\r\n\r\n");
    assert_eq!(exchange(&server, &latin).status, 200);
    // The README's placeholder pasted as-is, in the target: an answer, not a silence.
    let target = "GET /v1/notifications?cursor=\u{2026} HTTP/1.1\r\nHost: t\r\n\r\n";
    assert_refused(&exchange(&server, target.as_bytes()), 400, "bad_request");
    let name = "GET /healthz HTTP/1.1\r\nHost: t\r\nX-Caf\u{e9}: 1\r\n\r\n";
    assert_refused(&exchange(&server, name.as_bytes()), 400, "bad_request");
    let control = b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-A: a\x01b\r\n\r\n";
    assert_refused(&exchange(&server, control), 400, "bad_request");
}

#[test]
fn a_huge_header_gets_431_and_is_not_read_to_its_end() {
    let server = TestServer::start();
    let mut stream = connect(&server);
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Big: ")
        .expect("send");
    // 64 MiB of header value: the server answers after 16 KiB and drops a bounded
    // amount more, so the client cannot push it all.
    let filler = vec![b'a'; 64 * 1024];
    let mut sent = 0usize;
    stream
        .set_write_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    while sent < 64 * 1024 * 1024 {
        match stream.write(&filler) {
            Ok(n) => sent += n,
            Err(_) => break,
        }
    }
    assert!(
        sent < 16 * 1024 * 1024,
        "the server read {sent} bytes of one header"
    );
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 431 "), "{text}");
    assert!(text.contains("request_header_fields_too_large"), "{text}");
    assert_eq!(server.request("GET", "/healthz", &[], None).status, 200);
}

fn server_with_timeout(timeout: &str) -> TestServer {
    let mut settings = common::settings();
    settings.http_timeout = Some(timeout.into());
    TestServer::with(settings)
}

#[test]
fn a_head_sent_one_byte_a_second_is_cut_off_by_the_head_deadline() {
    let server = server_with_timeout("2s");
    let mut stream = connect(&server);
    let head = b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let started = Instant::now();
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let mut answer = Vec::new();
    // A byte every 200 ms: each read is well inside the timeout, the whole head never.
    for byte in head.iter() {
        if stream.write_all(&[*byte]).is_err() {
            break;
        }
        let mut chunk = [0u8; 512];
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
        if !answer.is_empty() {
            break;
        }
    }
    let took = started.elapsed();
    let text = String::from_utf8_lossy(&answer);
    assert!(
        text.starts_with("HTTP/1.1 408 "),
        "after {took:?}: {text:?}"
    );
    assert!(
        took < Duration::from_secs(4),
        "the head deadline of 2 s fired after {took:?}"
    );
}

#[test]
fn a_body_sent_slowly_is_cut_off_too() {
    let server = server_with_timeout("1s");
    let mut stream = connect(&server);
    stream
        .write_all(b"POST /v1/internal/notifications HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
        .expect("send");
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408 "), "{text:?}");
}

#[test]
fn smuggling_shapes_are_400() {
    let server = TestServer::start();
    for raw in [
        &b"POST /healthz HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"[..],
        b"POST /healthz HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        b"POST /healthz HTTP/1.1\r\nHost: t\r\nContent-Length: 3, 4\r\n\r\nabcd",
        b"POST /healthz HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n0\r\n\r\n",
        b"POST /healthz HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n0\r\n\r\n",
        b"POST /healthz HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\n\r\n",
    ] {
        assert_refused(&exchange(&server, raw), 400, "bad_request");
    }
    assert_refused(
        &exchange(
            &server,
            b"POST /healthz HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n",
        ),
        501,
        "not_implemented",
    );
}

/// Reads `n` responses (each with a `Content-Length`) that may arrive in one segment;
/// returns their heads.
fn read_responses(stream: &mut TcpStream, n: usize) -> Vec<String> {
    let deadline = Instant::now() + HTTP_DEADLINE;
    let mut buffer = Vec::new();
    let mut heads = Vec::new();
    let mut chunk = [0u8; 4096];
    while heads.len() < n {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buffer[..end]).to_string();
            let length: usize = head
                .lines()
                .filter_map(|l| l.split_once(':'))
                .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.trim().parse().ok())
                .unwrap_or_else(|| panic!("no Content-Length: {head}"));
            if buffer.len() >= end + 4 + length {
                buffer.drain(..end + 4 + length);
                heads.push(head);
                continue;
            }
        }
        assert!(
            Instant::now() < deadline,
            "only {} responses of {n}",
            heads.len()
        );
        let got = stream.read(&mut chunk).expect("read");
        assert!(got > 0, "closed after {} responses of {n}", heads.len());
        buffer.extend_from_slice(&chunk[..got]);
    }
    assert!(buffer.is_empty(), "bytes after the last response");
    heads
}

#[test]
fn keep_alive_pipelining_and_http_1_0() {
    let server = TestServer::start();
    let mut stream = connect(&server);
    // Three requests in one write; three answers, in order, on the same connection.
    stream
        .write_all(
            b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n\
              GET /nope HTTP/1.1\r\nHost: t\r\n\r\n\
              PUT /healthz HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\n{}",
        )
        .expect("send");
    let heads = read_responses(&mut stream, 3);
    for (head, status) in heads.iter().zip(["200", "404", "405"]) {
        assert!(head.starts_with(&format!("HTTP/1.1 {status} ")), "{head}");
        assert!(head.contains("Connection: keep-alive"), "{head}");
    }
    // HTTP/1.0: closed after the answer unless keep-alive is asked for.
    let response = exchange(&server, b"GET /healthz HTTP/1.0\r\n\r\n");
    assert_eq!(response.status, 200);
    assert_eq!(response.header("connection"), Some("close"));
    let mut old = connect(&server);
    for _ in 0..2 {
        old.write_all(b"GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            .expect("send");
        let (head, _) = read_one_response(&mut old);
        assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
        assert!(head.contains("Connection: keep-alive"), "{head}");
    }
    // HEAD: the GET's headers, no body.
    let mut stream = connect(&server);
    stream
        .write_all(
            b"HEAD /healthz HTTP/1.1\r\nHost: t\r\n\r\nGET /healthz HTTP/1.1\r\nHost: t\r\n\r\n",
        )
        .expect("send");
    // The HEAD answer names the GET's length but carries no body: what follows its
    // blank line is at once the GET's answer.
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    while !got.ends_with(b"}") {
        let n = stream.read(&mut chunk).expect("read");
        assert!(n > 0, "closed early");
        got.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&got);
    let (head_answer, rest) = text.split_once("\r\n\r\n").expect("a head");
    assert!(head_answer.starts_with("HTTP/1.1 200 "), "{text}");
    assert!(head_answer.contains("Content-Length: 15"), "{text}");
    assert!(
        rest.starts_with("HTTP/1.1 200 OK\r\n"),
        "the HEAD answer carried a body: {text}"
    );
}

#[test]
fn expect_100_continue_gets_continue_before_the_body() {
    let server = TestServer::start();
    let mut stream = connect(&server);
    let body = br#"{"ids":["0190a5d2-8f8a-7c3e-9b1a-5e5b2d7f1c01"]}"#;
    let token = common::user_token(&common::new_user("expect"), &[]);
    stream
        .write_all(
            format!(
                "PATCH /v1/notifications/read HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\n\
                 Content-Type: application/json\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        )
        .expect("send head");
    let mut interim = [0u8; 25];
    stream.read_exact(&mut interim).expect("100 Continue");
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    stream.write_all(body).expect("send body");
    let (head, body) = read_one_response(&mut stream);
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    assert_eq!(body, br#"{"updated":0}"#);
}

/// `n` keep-alive connections, each proven by one answered request.
fn served_connections(server: &TestServer, n: usize) -> Vec<TcpStream> {
    (0..n)
        .map(|_| {
            let mut stream = connect(server);
            stream
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
                .expect("send");
            read_one_response(&mut stream);
            stream
        })
        .collect()
}

#[test]
fn past_the_connection_cap_a_new_connection_gets_503_with_retry_after() {
    let mut settings = common::settings();
    settings.http_max_connections = Some("8".into());
    let server = TestServer::with(settings);
    let mut held = served_connections(&server, 8);
    let refused = exchange(&server, b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_refused(&refused, 503, "service_unavailable");
    assert_eq!(refused.header("retry-after"), Some("1"));
    // The held connections are still served.
    for stream in &mut held {
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
            .expect("send");
        let (head, _) = read_one_response(stream);
        assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    }
    held.truncate(4);
    eventually("no room after four connections closed", || {
        exchange(
            &server,
            b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        )
        .status
            == 200
    });
}

#[test]
fn a_panicking_handler_answers_500_and_nothing_else_is_affected() {
    let mut config = Config::from_settings(&common::settings()).expect("config");
    config.test_faults = true;
    let server = TestServer::with_config(config);
    let mut bystander = connect(&server);
    for _ in 0..3 {
        let response = server.request("GET", notifd::api::TEST_PANIC_PATH, &[], None);
        assert_eq!(response.status, 500, "{}", response.text());
        assert_eq!(response.error_code(), "internal_error");
        let response = server.request("GET", "/healthz", &[], None);
        assert_eq!(response.status, 200);
    }
    bystander
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        .expect("send");
    let (head, _) = read_one_response(&mut bystander);
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    // Without the switch the route does not exist.
    let plain = TestServer::start();
    let response = plain.request("GET", notifd::api::TEST_PANIC_PATH, &[], None);
    assert_eq!(response.status, 404);
}

#[test]
fn shutdown_closes_idle_keep_alive_connections_promptly() {
    let mut server = TestServer::start();
    let mut idle = connect(&server);
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        .expect("send");
    read_one_response(&mut idle);
    let started = Instant::now();
    server.stop();
    assert!(started.elapsed() < Duration::from_secs(3));
    wait_for_close(&mut idle);
}

/// A notifd process under a descriptor limit of `nofile`, with its start-up log read
/// up to the line that names its addresses.
struct LimitedServer {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    http_addr: std::net::SocketAddr,
}

impl Drop for LimitedServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl LimitedServer {
    fn start(nofile: u64, extra: &[(&str, &str)]) -> LimitedServer {
        use std::os::unix::process::CommandExt;
        let mut command = common::notifd_command("limited");
        command
            .env("NOTIFD_DB_POOL_SIZE", "2")
            .env("NOTIFD_MAX_CONNECTIONS", "16")
            .envs(extra.iter().copied())
            .arg("serve")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        // SAFETY: setrlimit is async-signal-safe and touches only the child.
        unsafe {
            command.pre_exec(move || {
                let limit = libc::rlimit {
                    rlim_cur: nofile,
                    rlim_max: nofile,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = command.spawn().expect("notifd starts");
        let lines = common::stderr_lines(&mut child);
        let mut server = LimitedServer {
            child,
            lines,
            http_addr: "127.0.0.1:1".parse().expect("addr"),
        };
        let started = server.wait_for("notifd started");
        let addr = started
            .split(' ')
            .find_map(|part| part.strip_prefix("http_addr="))
            .expect("http_addr in the start-up line");
        server.http_addr = addr.parse().expect("an address");
        server
    }

    fn wait_for(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(_) => break,
            }
        }
        panic!("no log line with {needle:?}");
    }

    fn healthz(&self) -> Option<u16> {
        let mut stream = TcpStream::connect(self.http_addr).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            .ok()?;
        let mut raw = Vec::new();
        let _ = stream.read_to_end(&mut raw);
        (!raw.is_empty()).then(|| Response::parse(&raw).status)
    }
}

#[test]
fn out_of_descriptors_the_rest_port_survives_and_serves_again() {
    // A cap far above what 128 descriptors allow: accept itself runs out.
    let mut server = LimitedServer::start(128, &[("NOTIFD_HTTP_MAX_CONNECTIONS", "5000")]);
    let held: Vec<TcpStream> = (0..300)
        .map(|_| TcpStream::connect(server.http_addr).expect("the backlog takes it"))
        .collect();
    server.wait_for("REST accept failing");
    // Clients the descriptors could not take are answered 503, not left waiting (the
    // first try can lose the freed descriptor to another thread of notifd; accepting
    // resumes at the next sweep).
    for stream in &held {
        stream.set_nonblocking(true).expect("non-blocking");
    }
    eventually(
        "no client was answered 503 while descriptors ran out",
        || {
            held.iter().any(|stream| {
            let mut answer = [0u8; 64];
            matches!((&*stream).read(&mut answer), Ok(n) if answer[..n].starts_with(b"HTTP/1.1 503 "))
        })
        },
    );
    assert!(
        server.child.try_wait().expect("wait").is_none(),
        "notifd died of descriptor exhaustion"
    );
    drop(held);
    eventually(
        "/healthz never answered after the descriptors freed up",
        || server.healthz() == Some(200),
    );
    server.wait_for("REST accepting again");
}

#[test]
fn the_default_rest_cap_fits_the_descriptor_limit() {
    // With the default cap, the front refuses before the descriptors run out.
    let server = LimitedServer::start(400, &[]);
    let mut held = Vec::new();
    let mut refused = 0;
    for _ in 0..400 {
        let mut stream = TcpStream::connect(server.http_addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
            .expect("send");
        let (head, _) = read_one_response(&mut stream);
        if head.starts_with("HTTP/1.1 503 ") {
            assert!(head.contains("Retry-After: 1"), "{head}");
            refused += 1;
        } else {
            assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
            held.push(stream);
        }
    }
    assert!(
        refused > 0,
        "400 connections under a limit of 400 were all taken"
    );
    assert!(
        held.len() > 50,
        "only {} connections were served",
        held.len()
    );
    drop(held);
    eventually("/healthz did not answer once connections closed", || {
        server.healthz() == Some(200)
    });
}

#[test]
fn api_answers_say_how_to_authenticate_and_are_not_cached() {
    let server = TestServer::start();
    let missing = server.request("GET", "/v1/notifications", &[], None);
    assert_eq!(missing.status, 401);
    assert_eq!(
        missing.header("www-authenticate"),
        Some(r#"Bearer realm="notifd""#)
    );
    let bad = server.get("/v1/notifications", "not-a-token");
    assert_eq!(bad.status, 401);
    assert_eq!(
        bad.header("www-authenticate"),
        Some(r#"Bearer realm="notifd", error="invalid_token""#)
    );
    let token = common::user_token(&common::new_user("headers"), &[]);
    for response in [missing, server.get("/v1/notifications", &token)] {
        assert_eq!(response.header("cache-control"), Some("no-store"));
    }
    let health = server.request("GET", "/healthz", &[], None);
    assert_eq!(health.header("cache-control"), None);
}

/// CPU seconds process `pid` has used.
fn process_cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("procfs");
    let fields: Vec<&str> = stat.rsplit_once(')').expect("stat").1.split(' ').collect();
    let ticks: f64 =
        fields[12].parse::<f64>().expect("utime") + fields[13].parse::<f64>().expect("stime");
    ticks / 100.0
}

#[test]
fn a_half_closed_client_that_stops_reading_costs_no_cpu_and_is_cut_off() {
    // A server of its own process: its CPU is not shared with other tests' servers.
    let server = LimitedServer::start(4096, &[("NOTIFD_HTTP_TIMEOUT", "1s")]);
    let pid = server.child.id();
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    socket.set_recv_buffer_size(4096).expect("small buffer");
    socket.connect(&server.http_addr.into()).expect("connect");
    let mut stream: TcpStream = socket.into();
    // Far more answers than the two socket buffers hold; then half-close and read nothing.
    let mut requests = Vec::new();
    for _ in 0..3000 {
        requests.extend_from_slice(b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n");
    }
    stream.write_all(&requests).expect("send");
    stream
        .shutdown(std::net::Shutdown::Write)
        .expect("half-close");
    std::thread::sleep(Duration::from_millis(300));
    let before = process_cpu_seconds(pid);
    std::thread::sleep(Duration::from_secs(2));
    let spent = process_cpu_seconds(pid) - before;
    assert!(
        spent < 0.5,
        "{spent:.2} s of CPU in 2 s for one stalled client"
    );
    // Its write deadline (1 s without progress) has passed: reading now finds the end.
    stream
        .set_read_timeout(Some(HTTP_DEADLINE))
        .expect("timeout");
    let mut sink = Vec::new();
    match stream.read_to_end(&mut sink) {
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        Err(e) => panic!("the stalled connection was not closed: {e}"),
    }
    assert!(
        sink.len() < 3000 * 1000,
        "every answer was written: no stall"
    );
}

#[test]
fn every_client_past_the_cap_gets_503_even_when_the_refusal_slots_are_full() {
    let mut settings = common::settings();
    settings.http_max_connections = Some("4".into());
    let server = TestServer::with(settings);
    let _held = served_connections(&server, 4);
    // More refused clients than the front keeps refusal slots (64), none reading yet.
    let refused: Vec<TcpStream> = (0..150).map(|_| connect(&server)).collect();
    for (i, mut stream) in refused.into_iter().enumerate() {
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        let text = String::from_utf8_lossy(&answer);
        assert!(text.starts_with("HTTP/1.1 503 "), "client {i}: {text:?}");
        assert!(text.contains("Retry-After: 1"), "client {i}: {text:?}");
    }
}

#[test]
fn a_batch_body_over_64_kib_needs_a_publishing_token_first() {
    let server = TestServer::start();
    let mut body = br#"{"notifications":[]}"#.to_vec();
    body.resize(200 * 1024, b' ');
    let user = format!(
        "Bearer {}",
        common::user_token(&common::new_user("batchauth"), &[])
    );
    let service = format!("Bearer {}", common::service_token());
    let path = "/v1/internal/notifications/batch";
    let json = ("Content-Type", "application/json");
    let none = server.request("POST", path, &[json], Some(&body));
    assert_eq!(none.status, 401, "{}", none.text());
    let reader = server.request("POST", path, &[json, ("Authorization", &user)], Some(&body));
    assert_eq!(reader.status, 403, "{}", reader.text());
    assert_eq!(reader.error_code(), "insufficient_scope");
    // The publisher's body is read whole and judged on its content.
    let publisher = server.request(
        "POST",
        path,
        &[json, ("Authorization", &service)],
        Some(&body),
    );
    assert_eq!(publisher.status, 400, "{}", publisher.text());
    assert_eq!(publisher.error_code(), "invalid_field");
}
