//! The inbox page (`GET /`, contract §8) in a real browser: Debian's chromium driven
//! by playwright-core (`tests/browser/inbox.mjs`), never a downloaded browser. The
//! page signs in (a bad token shows a clear error), pages, receives a live
//! notification, marks it read and the badge drops (and, where the server has them,
//! marks unread, archives and unarchives), and survives a server restart,
//! resuming with `since` (no loss, no duplicate); a tab replaced by another (4005)
//! says so and reconnects only when asked; two tabs show the same state without a
//! reload (the server's notifd.v1); against a scripted peer the page applies each
//! `notification`, `updated` and `counts` event. Also: the page and its assets carry
//! their types and a strict Content-Security-Policy.

mod common;
#[path = "browser/support.rs"]
mod support;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;

const WORKSPACE: &str = "acme";
const SCENARIO_DEADLINE: Duration = Duration::from_secs(120);

/// One chromium at a time: on a 2-core machine several at once starve each other
/// past their deadlines. A test that failed while holding the lock does not poison it
/// for the others.
fn one_browser_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static BROWSER: std::sync::Mutex<()> = std::sync::Mutex::new(());
    BROWSER
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The browser `scripts/test` installs; its absence fails the test.
fn require_chromium() {
    assert!(
        Path::new("/usr/bin/chromium").is_file(),
        "/usr/bin/chromium is missing: scripts/test installs Debian's chromium package"
    );
    support::ensure_packages();
}

/// The environment a scenario reads: addresses, the user and the tokens.
fn scenario_env(server: &TestServer, user: &str) -> Vec<(&'static str, String)> {
    vec![
        ("NOTIFD_HTTP", format!("http://{}", server.http_addr())),
        ("NOTIFD_WS_PORT", server.ws_addr().port().to_string()),
        ("NOTIFD_WORKSPACE", WORKSPACE.to_string()),
        ("NOTIFD_USER", user.to_string()),
        ("NOTIFD_TOKEN", user_token(user, &[WORKSPACE])),
        (
            "NOTIFD_EXPIRED_TOKEN",
            support::expired_token(user, WORKSPACE),
        ),
        ("NOTIFD_SERVICE_TOKEN", service_token()),
    ]
}

fn screenshot_path() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/face");
    std::fs::create_dir_all(&dir).expect("target/face");
    dir.join("inbox.png")
}

#[test]
fn the_page_has_a_strict_policy_and_no_inline_script_or_style() {
    let server = TestServer::start();
    let page = server.request("GET", "/", &[], None);
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let policy = page.header("content-security-policy").expect("a CSP");
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
    ] {
        assert!(policy.contains(directive), "{directive} in {policy}");
    }
    assert!(!policy.contains("unsafe-inline"), "{policy}");
    let html = page.text();
    assert!(!html.contains("<style"), "no inline style element");
    assert!(!html.contains(" style="), "no inline style attribute");
    let scripts: Vec<&str> = html.split("<script").skip(1).collect();
    assert!(
        !scripts.is_empty()
            && scripts
                .iter()
                .all(|s| s.trim_start().starts_with("type=\"module\" src=\"/")),
        "only module scripts from this origin: {scripts:?}"
    );
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "no CDN"
    );
}

#[test]
fn the_assets_carry_their_types() {
    let server = TestServer::start();
    for (path, kind) in [
        ("/notifd.js", "text/javascript; charset=utf-8"),
        ("/inbox.js", "text/javascript; charset=utf-8"),
        ("/inbox-list.js", "text/javascript; charset=utf-8"),
        ("/inbox.css", "text/css; charset=utf-8"),
    ] {
        let asset = server.request("GET", path, &[], None);
        assert_eq!(asset.status, 200, "{path}");
        assert_eq!(asset.header("content-type"), Some(kind), "{path}");
        assert_eq!(
            asset.header("x-content-type-options"),
            Some("nosniff"),
            "{path}"
        );
        assert!(!asset.body.is_empty(), "{path}");
    }
    let head = server.request("HEAD", "/notifd.js", &[], None);
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty(), "HEAD has no body");
}

/// Runs scenario `name` of inbox.mjs against a fresh server, with `extra` in its
/// environment besides the addresses and tokens.
fn run_scenario(name: &str, extra: Vec<(&'static str, String)>) {
    run_scenario_on(TestServer::start(), name, extra);
}

fn run_scenario_on(server: TestServer, name: &str, extra: Vec<(&'static str, String)>) {
    let _one_at_a_time = one_browser_at_a_time();
    require_chromium();
    let user = new_user("page");
    let mut envs = scenario_env(&server, &user);
    envs.extend(extra);
    let output = support::node(&["inbox.mjs", name], &envs, SCENARIO_DEADLINE);
    let out = String::from_utf8_lossy(&output.stdout);
    assert!(out.contains(&format!("ok {name}")), "{out}");
}

#[test]
fn the_page_signs_in_receives_live_marks_read_and_refuses_a_bad_token() {
    // The page offers unread, archive and the Archived view where the server has
    // the routes; the scenario checks both that and the buttons.
    let archives = notifd::api::routes().any(|(_, path)| path == "/v1/notifications/archive");
    run_scenario(
        "signin",
        vec![
            ("NOTIFD_SCREENSHOT", screenshot_path().display().to_string()),
            (
                "NOTIFD_EXPECT_STATES",
                if archives { "1" } else { "0" }.into(),
            ),
        ],
    );
}

#[test]
fn the_page_applies_notifd_v1_events_from_a_peer_that_selects_the_protocol() {
    run_scenario("events", Vec::new());
}

#[test]
fn a_tab_replaced_by_another_says_so_and_reconnects_on_request() {
    let mut settings = settings();
    settings.connections_per_user = Some("1".into());
    run_scenario_on(TestServer::with(settings), "replaced", Vec::new());
}

#[test]
fn two_tabs_show_the_same_state_without_reloading() {
    run_scenario("two-tabs", Vec::new());
}

/// Regenerates the README's picture: `cargo test --test browser -- --ignored
/// readme_screenshot` (`NOTIFD_COLOR_SCHEME=dark` for the dark one, kept in target/).
#[test]
#[ignore = "a tool, not a check: rewrites src/face/screenshot.png"]
fn readme_screenshot() {
    let dark = std::env::var("NOTIFD_COLOR_SCHEME").is_ok_and(|v| v == "dark");
    let path = if dark {
        screenshot_path().with_file_name("inbox-dark.png")
    } else {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/face/screenshot.png")
    };
    run_scenario(
        "screenshot",
        vec![("NOTIFD_SCREENSHOT", path.display().to_string())],
    );
}

/// Server A serves the page; it stops and starts again on the same ports while B
/// (same database and Redis prefix) takes the creates in between.
#[test]
fn the_page_survives_a_server_restart_and_resumes_with_since() {
    let _one_at_a_time = one_browser_at_a_time();
    require_chromium();
    let mut first = TestServer::start();
    let mut again = first.config.clone();
    again.http_addr = first.http_addr();
    again.ws_addr = first.ws_addr();
    let other = TestServer::with_config({
        let mut config = first.config.clone();
        config.http_addr = "127.0.0.1:0".parse().expect("address");
        config.ws_addr = "127.0.0.1:0".parse().expect("address");
        config
    });
    let user = new_user("restart");
    let mut envs = scenario_env(&first, &user);
    envs.push(("NOTIFD_OTHER_HTTP", format!("http://{}", other.http_addr())));
    let mut restarted = None;
    converse("restart", envs, |line| match line {
        "stop" => {
            first.stop();
            Some("stopped")
        }
        "start" => {
            restarted = Some(TestServer::with_config(again.clone()));
            Some("started")
        }
        _ => None,
    });
    assert!(restarted.is_some(), "the server was restarted");
}

/// Runs scenario `name`, answering each line it prints with what `answer` returns
/// (if anything), until it prints `ok NAME` and exits 0; fails on anything else.
fn converse(
    name: &str,
    envs: Vec<(&'static str, String)>,
    mut answer: impl FnMut(&str) -> Option<&'static str>,
) {
    let mut child = Command::new("node")
        .args(["inbox.mjs", name])
        .current_dir(support::browser_dir())
        .envs(envs)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node runs");
    let mut stdin = child.stdin.take().expect("piped stdin");
    let lines = lines_of(child.stdout.take().expect("piped stdout"));
    let errors = lines_of(child.stderr.take().expect("piped stderr"));
    let (started, done) = (Instant::now(), format!("ok {name}"));
    let mut seen = Vec::new();
    while seen.last() != Some(&done) {
        let left = SCENARIO_DEADLINE.saturating_sub(started.elapsed());
        let Ok(line) = lines.recv_timeout(left) else {
            let _ = child.kill();
            let errors: Vec<String> = errors.try_iter().collect();
            panic!("scenario {name} ended or stalled; stdout {seen:?}, stderr {errors:?}");
        };
        if let Some(reply) = answer(&line) {
            writeln!(stdin, "{reply}").expect("tell node");
        }
        seen.push(line);
    }
    let status = child.wait().expect("node exits");
    assert!(status.success(), "node: {status}; stdout {seen:?}");
}

fn lines_of(pipe: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (send, receive) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            if send.send(line).is_err() {
                return;
            }
        }
    });
    receive
}
