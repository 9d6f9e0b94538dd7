//! When notifd cannot use its PostgreSQL, `notifd migrate` and `notifd serve` say
//! which server (host:port, database, user) and what it answered (connection
//! refused, role missing, no permission to create the database) instead of a bare
//! "db error", and never print the password of the URL. `serve` keeps retrying in
//! the background, each log line saying the same.

mod common;

use std::net::TcpListener;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const PASSWORD: &str = "pw-that-must-never-be-printed";

fn notifd(database_url: &str) -> Command {
    let mut command = common::notifd_command("startup");
    command.env("NOTIFD_DATABASE_URL", database_url);
    command
}

fn migrate(database_url: &str) -> (Output, String) {
    let output = notifd(database_url)
        .arg("migrate")
        .output()
        .expect("notifd runs");
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    assert!(!output.status.success(), "migrate must fail: {stderr}");
    assert!(
        !stderr.contains(PASSWORD),
        "the password is printed: {stderr}"
    );
    (output, stderr)
}

/// A local port nobody listens on (bound, then released).
fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The admin URL with another user, password, port or database.
fn url(user: &str, port: u16, database: &str) -> String {
    format!("postgres://{user}:{PASSWORD}@127.0.0.1:{port}/{database}")
}

fn admin_port() -> u16 {
    let config: postgres::Config = common::admin_database_url().parse().expect("admin URL");
    config.get_ports().first().copied().unwrap_or(5432)
}

#[test]
fn migrate_names_the_server_and_its_answer() {
    let port = closed_port();
    let (_, stderr) = migrate(&url("postgres", port, "notifd_x"));
    let want = format!("127.0.0.1:{port}");
    assert!(stderr.contains(&want), "names {want}: {stderr}");
    assert!(stderr.contains("Connection refused"), "says why: {stderr}");

    let (_, stderr) = migrate(&url("notifd_t_no_such_role", admin_port(), "notifd_x"));
    assert!(
        stderr.contains(&format!("127.0.0.1:{}", admin_port()))
            && stderr.contains(r#"role "notifd_t_no_such_role" does not exist"#),
        "names the server and its answer: {stderr}"
    );
}

/// A login role without CREATEDB, dropped again at the end (a panic included).
struct Role(String);

impl Drop for Role {
    fn drop(&mut self) {
        let _ = common::admin_client().batch_execute(&format!("DROP ROLE IF EXISTS {}", self.0));
    }
}

#[test]
fn migrate_says_when_the_missing_database_cannot_be_created() {
    let role = Role(common::new_user("notifd_t_role"));
    common::admin_client()
        .batch_execute(&format!("CREATE ROLE {} LOGIN NOCREATEDB", role.0))
        .expect("create role");
    let (_, stderr) = migrate(&url(&role.0, admin_port(), "notifd_t_never_created"));
    for part in [
        r#"database "notifd_t_never_created" does not exist"#,
        &format!("127.0.0.1:{}", admin_port()),
        "permission denied to create database",
    ] {
        assert!(stderr.contains(part), "says {part:?}: {stderr}");
    }
}

#[test]
fn serve_keeps_retrying_and_each_log_line_names_the_server_and_cause() {
    let port = closed_port();
    let mut child = notifd(&url("postgres", port, "notifd_x"))
        .arg("serve")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("notifd starts");
    let lines = common::stderr_lines(&mut child);
    // The first attempt at start, then at least one retry in the background.
    let mut failures = Vec::new();
    let mut log = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while failures.len() < 2 {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(line) = lines.recv_timeout(left) else {
            break;
        };
        if line.contains("cannot apply migrations") {
            failures.push(line.clone());
        }
        log.push(line);
    }
    let _ = child.kill();
    let _ = child.wait();
    let log = log.join("\n");
    assert_eq!(failures.len(), 2, "a failure at start and a retry: {log}");
    for line in &failures {
        assert!(
            line.contains(&format!("127.0.0.1:{port}")) && line.contains("Connection refused"),
            "names the server and the cause: {line}"
        );
    }
    assert!(!log.contains(PASSWORD), "the password is printed: {log}");
}

#[test]
fn a_port_in_use_names_the_setting_and_the_address() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("a port");
    let addr = taken.local_addr().expect("address").to_string();
    for variable in ["NOTIFD_HTTP_ADDR", "NOTIFD_WS_ADDR"] {
        let output = notifd(&common::database_url())
            .env(variable, &addr)
            .arg("serve")
            .stdin(Stdio::null())
            .output()
            .expect("notifd runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            !output.status.success(),
            "{variable}: started on a taken port"
        );
        let line = stderr
            .lines()
            .find(|l| l.contains("cannot listen"))
            .unwrap_or_else(|| panic!("{variable}: no bind error; stderr:\n{stderr}"));
        assert!(
            line.contains(&format!("{variable}: cannot listen on {addr}")),
            "{line}"
        );
        assert!(line.contains("in use"), "{line}");
        assert!(!line.contains("internal error"), "{line}");
    }
}

#[test]
fn migrate_needs_only_the_database_settings() {
    let output = notifd(&common::database_url())
        .env_remove("NOTIFD_JWT_SECRET")
        .arg("migrate")
        .stdin(Stdio::null())
        .output()
        .expect("notifd runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("migration(s) applied"), "{stderr}");
}
