//! The built binary: `notifd serve` starts, serves REST and WebSocket, logs one line
//! per event without any token, secret or payload content, and on SIGTERM closes
//! WebSockets with 1001 and exits 0. Also `--help`, `--version`, `token`, and a bad
//! setting stopping start-up with one line naming the variable.

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{expect_close, next_notification, ws_connect, Response, Running};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_notifd");
const PAYLOAD_MARKER: &str = "payload-content-that-must-not-be-logged";

fn command(format: &str) -> Command {
    let mut command = common::notifd_command("smoke");
    command.env("NOTIFD_LOG_FORMAT", format);
    command
}

fn start(format: &str) -> Running {
    let mut command = command(format);
    command.arg("serve");
    Running::spawn(command)
}

/// The value of `key` in a text (`key=value`) or JSON log line.
fn field(line: &str, key: &str) -> String {
    if let Ok(Value::Object(map)) = serde_json::from_str::<Value>(line) {
        return map
            .get(key)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
    }
    line.split(' ')
        .find_map(|part| part.strip_prefix(&format!("{key}=")))
        .unwrap_or_default()
        .to_string()
}

fn http(addr: SocketAddr, method: &str, path: &str, token: &str, body: Option<&Value>) -> Response {
    let body = body.map(Value::to_string);
    let auth = format!("Bearer {token}");
    let headers = [
        ("Authorization", auth.as_str()),
        ("Content-Type", "application/json"),
    ];
    common::request_to(
        addr,
        method,
        path,
        &headers,
        body.as_deref().map(str::as_bytes),
    )
}

fn serve_and_terminate(format: &str) {
    let mut running = start(format);
    let started = running.wait_for("notifd started");
    let http_addr: SocketAddr = field(&started, "http_addr")
        .parse()
        .expect("http_addr in the start line");
    let ws_addr: SocketAddr = field(&started, "ws_addr")
        .parse()
        .expect("ws_addr in the start line");
    let user = common::new_user("smokeuser");
    let user_token = common::user_token(&user, &["acme"]);
    let service_token = common::service_token();

    let mut ws = ws_connect(
        ws_addr,
        &format!("token={user_token}&workspaceSlug=acme"),
        &[],
    );
    running.wait_for("ws opened");
    let created = http(
        http_addr,
        "POST",
        "/v1/internal/notifications",
        &service_token,
        Some(
            &json!({"user_id": user, "workspace": "acme", "kind": "k", "payload": {"secret": PAYLOAD_MARKER}}),
        ),
    );
    assert_eq!(created.status, 201, "{}", created.text());
    assert_eq!(
        next_notification(&mut ws)["payload"]["secret"],
        PAYLOAD_MARKER
    );
    let listed = http(http_addr, "GET", "/v1/notifications", &user_token, None);
    assert_eq!(listed.status, 200);
    assert_eq!(
        http(http_addr, "GET", "/v1/notifications", "not-a-token", None).status,
        401
    );

    // SIGTERM: the client hears 1001, the process exits 0 within 10 s.
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(running.child.id() as i32, libc::SIGTERM) };
    assert_eq!(expect_close(&mut ws).0, 1001);
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = running.child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "still running 10 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "exit status {status}");
    running.wait_for("notifd stopped");
    while let Ok(line) = running.lines.recv_timeout(Duration::from_secs(2)) {
        running.log.push(line);
    }
    let log = running.log.join("\n");
    for needle in [
        "http request",
        "route=/v1/notifications",
        "ws opened",
        "ws closed",
        "code=1001",
    ] {
        let needle = if format == "json" {
            needle
                .replace("route=", "\"route\":\"")
                .replace("code=", "\"code\":")
        } else {
            needle.to_string()
        };
        assert!(log.contains(&needle), "log lacks {needle:?}:\n{log}");
    }
    for secret in [
        user_token.as_str(),
        service_token.as_str(),
        common::SECRET,
        PAYLOAD_MARKER,
        "not-a-token",
    ] {
        assert!(
            !log.contains(secret),
            "the log holds a secret or payload ({format}):\n{log}"
        );
    }
    // No fragment of a token either (its signature part is the secret-bearing bit).
    let signature = user_token.rsplit('.').next().expect("signature");
    assert!(!log.contains(signature));
}

#[test]
fn serve_logs_text_without_secrets_and_exits_0_on_sigterm() {
    serve_and_terminate("text");
}

#[test]
fn serve_logs_json_without_secrets_and_exits_0_on_sigterm() {
    serve_and_terminate("json");
}

#[test]
fn a_bad_setting_stops_start_up_with_one_line_naming_it() {
    for (variable, value) in [
        ("NOTIFD_HTTP_ADDR", "not-an-address"),
        ("NOTIFD_PING_INTERVAL", "soon"),
        ("NOTIFD_JWT_ALGORITHM", "HS999"),
    ] {
        let output = command("text")
            .env(variable, value)
            .arg("serve")
            .output()
            .expect("runs");
        assert_eq!(output.status.code(), Some(2), "{variable}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains(variable), "{stderr}");
    }
    let output = command("text")
        .env_remove("NOTIFD_JWT_SECRET")
        .arg("serve")
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("NOTIFD_JWT_SECRET"));
}

#[test]
fn an_empty_setting_means_its_default() {
    // As an env-file line `NOTIFD_MAX_CONNECTIONS=` gives it.
    let mut command = command("text");
    for variable in [
        "NOTIFD_MAX_CONNECTIONS",
        "NOTIFD_WS_QUEUE",
        "NOTIFD_RETENTION_DAYS",
        "NOTIFD_PING_INTERVAL",
        "NOTIFD_HTTP_ADDR",
        "NOTIFD_METRICS_ADDR",
    ] {
        command.env(variable, "");
    }
    let output = command
        .args(["token", "--sub", "alice"])
        .output()
        .expect("runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn help_version_and_token() {
    let help = Command::new(BIN).arg("--help").output().expect("runs");
    let help = String::from_utf8_lossy(&help.stdout);
    for name in [
        "NOTIFD_DATABASE_URL",
        "NOTIFD_REDIS_PREFIX",
        "NOTIFD_WS_ADDR",
        "NOTIFD_MAX_CONNECTIONS",
        "NOTIFD_RETENTION_DAYS",
    ] {
        assert!(help.contains(name), "--help lacks {name}");
    }
    assert!(help.contains("default: 0.0.0.0:8080"));
    let version = Command::new(BIN).arg("--version").output().expect("runs");
    assert!(String::from_utf8_lossy(&version.stdout).contains(env!("CARGO_PKG_VERSION")));

    let token = command("text")
        .args([
            "token",
            "--sub",
            "alice",
            "--workspace",
            "acme",
            "--ttl",
            "5m",
        ])
        .output()
        .expect("runs");
    assert!(token.status.success());
    let token = String::from_utf8_lossy(&token.stdout).trim().to_string();
    let verifier = notifd::auth::Verifier::new(
        &notifd::Config::from_settings(&common::settings())
            .expect("config")
            .jwt,
    )
    .expect("verifier");
    let identity = verifier.verify(&token).expect("the minted token verifies");
    assert_eq!(identity.user_id, "alice");
    assert!(identity.grants_workspace("acme"));
    assert!(identity.expires_at <= notifd::auth::unix_now() + 300);
}
