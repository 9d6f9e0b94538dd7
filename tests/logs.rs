//! The log lines of the real binary: under systemd (`JOURNAL_STREAM` set) each starts
//! with its syslog priority, and without it none does; JSON lines start with `ts`,
//! `level`, `msg`; every line names its module; `NOTIFD_LOG` takes per-module levels
//! (the longest module prefix wins) and a bad one stops start-up; the migration
//! table's `NOTICE` is not logged at info on a start after the first.

mod common;

use std::net::SocketAddr;
use std::sync::Once;

use common::Running;

use serde_json::Value;

/// `notifd serve` with these extra variables, on a database migrated before, so
/// this start finds the migration table already there.
fn start(env: &[(&str, &str)]) -> Running {
    migrated();
    let mut command = common::notifd_command("logs");
    command.envs(env.iter().copied()).arg("serve");
    Running::spawn(command)
}

/// The REST address from the start line (text format).
fn http_addr(running: &mut Running) -> SocketAddr {
    let started = running.wait_for("notifd started");
    started
        .split(' ')
        .find_map(|part| part.strip_prefix("http_addr="))
        .and_then(|addr| addr.parse().ok())
        .unwrap_or_else(|| panic!("no http_addr in {started}"))
}

/// Applies the migrations once per test binary (the first start would otherwise
/// create the table instead of finding it).
fn migrated() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let output = common::notifd_command("logs")
            .arg("migrate")
            .output()
            .expect("notifd migrate runs");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    });
}

/// The level word of a text line after an optional `<N>` prefix: `INFO`, `WARN`, ….
fn text_level(line: &str) -> &str {
    line.split_whitespace().nth(1).unwrap_or_default()
}

fn expected_priority(level: &str) -> &'static str {
    match level.to_ascii_uppercase().as_str() {
        "ERROR" => "<3>",
        "WARN" => "<4>",
        "INFO" => "<6>",
        _ => "<7>",
    }
}

#[test]
fn under_systemd_each_line_starts_with_its_priority() {
    // Debug shows the migration notice (<7>); an oversized cap warns (<4>).
    let env = [
        ("JOURNAL_STREAM", "8:123456"),
        ("NOTIFD_LOG", "debug"),
        ("NOTIFD_MAX_CONNECTIONS", "100000000"),
    ];
    let mut text = start(&env);
    text.wait_for("notifd started");
    let mut seen = Vec::new();
    for line in &text.log {
        let (prefix, rest) = line.split_at(3.min(line.len()));
        assert_eq!(prefix, expected_priority(text_level(rest)), "{line}");
        seen.push(prefix.to_string());
    }
    for priority in ["<4>", "<6>", "<7>"] {
        assert!(
            seen.iter().any(|p| p == priority),
            "no {priority} line:\n{}",
            text.log.join("\n")
        );
    }

    let mut json = start(&[env[0], env[1], ("NOTIFD_LOG_FORMAT", "json")]);
    json.wait_for("notifd started");
    for line in &json.log {
        let (prefix, rest) = line.split_at(3.min(line.len()));
        let value: Value = serde_json::from_str(rest).unwrap_or_else(|e| panic!("{e}: {line}"));
        let level = value["level"].as_str().unwrap_or_default();
        assert_eq!(prefix, expected_priority(level), "{line}");
    }
}

#[test]
fn without_systemd_no_line_has_a_priority() {
    for format in ["text", "json"] {
        let mut serving = start(&[("NOTIFD_LOG", "debug"), ("NOTIFD_LOG_FORMAT", format)]);
        serving.wait_for("notifd started");
        assert!(serving.log.len() >= 2, "{:?}", serving.log);
        for line in &serving.log {
            assert!(!line.starts_with('<'), "{line}");
        }
    }
}

#[test]
fn json_lines_start_with_ts_level_msg_and_name_their_module() {
    let mut serving = start(&[("NOTIFD_LOG_FORMAT", "json")]);
    let started = serving.wait_for("notifd started");
    for line in &serving.log {
        let ts = line.find(r#"{"ts":""#);
        let level = line.find(r#"","level":""#);
        let msg = line.find(r#"","msg":""#);
        assert!(
            ts == Some(0) && level > ts && msg > level,
            "not ts, level, msg first: {line}"
        );
        let value: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        let module = value["module"].as_str().unwrap_or_default();
        assert!(module.starts_with("notifd"), "no module: {line}");
    }
    let value: Value = serde_json::from_str(&started).expect("JSON");
    assert_eq!(value["module"], "notifd::server", "{started}");
}

#[test]
fn text_lines_name_their_module() {
    let mut serving = start(&[]);
    let started = serving.wait_for("notifd started");
    assert!(started.contains(" module=notifd::server "), "{started}");
    for line in &serving.log {
        assert!(line.contains(" module=notifd"), "no module: {line}");
    }
}

/// Sends a request notifd refuses (505: logged at debug by `notifd::http`), then a
/// plain one (logged at info by `notifd::api`); returns the log up to the latter.
fn refused_then_served(serving: &mut Running) -> String {
    let addr = http_addr(serving);
    let refused = common::raw_to(addr, b"GET /healthz HTTP/2.0\r\nHost: t\r\n\r\n");
    assert_eq!(refused.status, 505);
    let served = common::request_to(addr, "GET", "/healthz", &[], None);
    assert_eq!(served.status, 200);
    // The refusal was logged before its answer was sent, so before this line.
    serving.wait_for("route=/healthz");
    serving.log.join("\n")
}

#[test]
fn per_module_levels_the_longest_prefix_wins() {
    // notifd=debug reaches notifd::store; notifd::http=info is longer and wins there.
    let mut serving = start(&[("NOTIFD_LOG", "info,notifd=debug,notifd::http=info")]);
    let log = refused_then_served(&mut serving);
    assert!(
        log.contains("DEBUG postgresql notice") && log.contains("module=notifd::store::migrate"),
        "no store debug line:\n{log}"
    );
    assert!(
        !log.contains("http request refused"),
        "http debug line:\n{log}"
    );

    // The other way round: only notifd::http is at debug.
    let mut serving = start(&[("NOTIFD_LOG", "info,notifd::http=debug")]);
    let log = refused_then_served(&mut serving);
    assert!(
        log.contains("DEBUG http request refused module=notifd::http::connection"),
        "no http debug line:\n{log}"
    );
    assert!(
        !log.contains("postgresql notice"),
        "store debug line:\n{log}"
    );
}

#[test]
fn the_migration_notice_is_not_logged_at_info() {
    let mut serving = start(&[]);
    serving.wait_for("notifd started");
    let log = serving.log.join("\n");
    assert!(!log.contains("NOTICE"), "{log}");
    assert!(!log.contains("already exists"), "{log}");
}

#[test]
fn a_bad_log_setting_stops_start_up_naming_it() {
    for value in ["loud", "info,notifd::store=chatty", "info,=debug"] {
        let output = common::notifd_command("logs")
            .env("NOTIFD_LOG", value)
            .arg("serve")
            .output()
            .expect("runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{value}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains("NOTIFD_LOG:"), "{stderr}");
    }
}
