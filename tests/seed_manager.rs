//! The first source document's JavaScript `NotificationManager`, verbatim under node
//! with the `ws` package, against a real notifd: it receives notifications and stops
//! on 4001; and two copies of it for one user and workspace (two browser tabs) both
//! stay connected and both receive everything (contract §3: several connections per
//! user), where the strict one-connection rule made them evict each other for ever.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{new_user, user_token, TestServer};
use serde_json::{json, Value};

/// The first source document's `NotificationManager`, verbatim except that
/// `WebSocket` comes from the `ws` package and the URL points at this test's server.
const NOTIFICATION_MANAGER_JS: &str = r#"
const WebSocket = require('ws');
const PORT = process.argv[2];
const TOKEN = process.argv[3];
const WORKSPACE = process.argv[4];

class NotificationManager {
  constructor(getToken, workspaceSlug) {
    this.getToken = getToken; // Function that returns a valid JWT token
    this.workspaceSlug = workspaceSlug;
    this.ws = null;
    this.reconnectAttempts = 0;
    this.maxReconnectAttempts = 5;
    this.reconnectDelay = 1000; // Start with 1 second
  }

  async connect() {
    const token = await this.getToken();
    const url = `ws://127.0.0.1:${PORT}/?token=${encodeURIComponent(token)}&workspaceSlug=${this.workspaceSlug}`;
    this.ws = new WebSocket(url);

    this.ws.onopen = () => {
      console.log('Connected to notifications');
      this.reconnectAttempts = 0;
      this.reconnectDelay = 1000;
    };

    this.ws.onmessage = (event) => {
      const notification = JSON.parse(event.data);
      this.handleNotification(notification);
    };

    this.ws.onclose = (event) => {
      console.log('Connection closed', event.code);
      if (event.code === 4001) {
        console.error('Authentication failed — check your token');
        return; // Don't reconnect on auth failure
      }
      // For 4003 (expired) or normal closes, reconnect with a fresh token
      this.attemptReconnect();
    };

    this.ws.onerror = (error) => {
      console.error('WebSocket error:', error);
    };
  }

  attemptReconnect() {
    if (this.reconnectAttempts >= this.maxReconnectAttempts) {
      console.error('Max reconnection attempts reached');
      return;
    }

    this.reconnectAttempts++;
    console.log(`Reconnecting... Attempt ${this.reconnectAttempts}`);

    setTimeout(() => {
      this.connect();
    }, this.reconnectDelay);

    // Exponential backoff
    this.reconnectDelay = Math.min(this.reconnectDelay * 2, 30000); // Max 30 seconds
  }

  handleNotification(notification) {
    // Your notification handling logic
    console.log('Notification received:', notification);
  }

  disconnect() {
    if (this.ws) {
      this.ws.close();
    }
  }
}

// The test's handler: one JSON line per notification.
const manager = new NotificationManager(() => TOKEN, WORKSPACE);
manager.handleNotification = (notification) => {
  console.log(JSON.stringify(notification));
};
manager.connect().then(() => {
  // A reconnect would start within reconnectDelay (1 s) of the first close.
  manager.ws.addEventListener('close', () => setTimeout(() => process.exit(0), 1500));
});
// How long the script lives (argv[5], ms; default 20 s).
setTimeout(() => process.exit(0), Number(process.argv[5] || 20000));
"#;

/// A scratch directory and the child processes using it; cleaned up on drop.
struct Scratch {
    dir: PathBuf,
    children: Vec<Child>,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs `command` to completion within `limit`; `None` on timeout (the process is
/// killed) or when it cannot start.
fn run_bounded(mut command: Command, limit: Duration) -> Option<std::process::Output> {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .ok()?;
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => return child.wait_with_output().ok(),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

/// Lines of a child's stream, delivered on a channel by a reader thread.
fn lines_of(stream: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Waits (bounded) for a line matching `wanted`; returns it, and the lines before it.
fn wait_for_line(
    lines: &mpsc::Receiver<String>,
    within: Duration,
    wanted: impl Fn(&str) -> bool,
) -> (Option<String>, Vec<String>) {
    let deadline = Instant::now() + within;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if wanted(&line) => return (Some(line), seen),
            Ok(line) => seen.push(line),
            Err(_) => return (None, seen),
        }
    }
}

#[test]
fn the_first_documents_notification_manager_receives_and_stops_on_4001() {
    // scripts/test installs Node.js and npm: without them this test fails, it never
    // passes by skipping.
    let mut scratch = scratch_with_manager("notifd_js");
    let (dir, script) = (scratch.dir.clone(), scratch.dir.join("manager.js"));
    let server = TestServer::start();
    let port = server.ws_addr().port().to_string();
    let user = new_user("js");

    // A valid token: the manager connects and hands each notification to its handler.
    let mut child = Command::new("node")
        .arg(&script)
        .args([&port, &user_token(&user, &["my-workspace"]), "my-workspace"])
        .current_dir(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node runs");
    let stdout = lines_of(child.stdout.take().expect("stdout"));
    let stderr = lines_of(child.stderr.take().expect("stderr"));
    scratch.children.push(child);
    let (open, early) = wait_for_line(&stdout, Duration::from_secs(15), |l| {
        l == "Connected to notifications"
    });
    let errors: Vec<String> = stderr.try_iter().collect();
    assert!(
        open.is_some(),
        "the manager connects; stdout {early:?}, stderr {errors:?}"
    );
    let created = server.create(&json!({
        "user_id": user,
        "workspace": "my-workspace",
        "kind": "record_created",
        "type": "success",
        "title": "New Order",
        "message": "Order #12345 has been placed",
        "metadata": {"orderId": 12345},
    }));
    let (line, before) = wait_for_line(&stdout, Duration::from_secs(10), |l| l.starts_with('{'));
    let line = line.unwrap_or_else(|| panic!("the manager printed a notification; got {before:?}"));
    let received: Value = serde_json::from_str(&line).expect("JSON line");
    assert_eq!(received, created, "what the manager's handler got");
    for field in [
        "id",
        "title",
        "message",
        "type",
        "read",
        "timestamp",
        "metadata",
    ] {
        assert!(
            !received[field].is_null(),
            "the document's field {field} is present"
        );
    }
    for mut child in scratch.children.drain(..) {
        let _ = child.kill();
        let _ = child.wait();
    }

    // A bad token: 4001, 'Authentication failed', and no reconnect.
    let mut command = Command::new("node");
    command
        .arg(&script)
        .args([&port, "not-a-jwt", "my-workspace"])
        .current_dir(&dir);
    let output = run_bounded(command, Duration::from_secs(15))
        .expect("the manager script exits after its close, within 15 s");
    let out = String::from_utf8_lossy(&output.stdout);
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(
        out.contains("Connection closed 4001"),
        "closed with 4001; stdout {out:?}"
    );
    assert!(
        err.contains("Authentication failed"),
        "the manager logs 'Authentication failed'; stderr {err:?}"
    );
    assert!(
        !out.contains("Reconnecting"),
        "the manager must not reconnect after 4001; stdout {out:?}"
    );
    assert_eq!(
        out.matches("Connection closed").count(),
        1,
        "one connection attempt only; stdout {out:?}"
    );
    drop(server);
}

/// Installs `ws` into a scratch directory and writes the manager script there.
fn scratch_with_manager(tag: &str) -> Scratch {
    assert!(
        Command::new("node").arg("--version").output().is_ok(),
        "node is not on PATH (scripts/test installs nodejs and npm)"
    );
    let dir = std::env::temp_dir().join(new_user(tag));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let scratch = Scratch {
        dir: dir.clone(),
        children: Vec::new(),
    };
    let mut npm = Command::new("npm");
    npm.args([
        "install",
        "--no-audit",
        "--no-fund",
        "--loglevel=error",
        "ws@8",
    ])
    .current_dir(&dir);
    match run_bounded(npm, Duration::from_secs(45)) {
        Some(out) if out.status.success() => {}
        Some(out) => panic!(
            "npm install ws failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ),
        None => panic!("npm install ws did not finish within 45 s (or npm is missing)"),
    }
    std::fs::write(dir.join("manager.js"), NOTIFICATION_MANAGER_JS).expect("write script");
    scratch
}

#[test]
fn two_tabs_of_one_user_both_stay_connected_for_30_s_and_both_receive_everything() {
    let mut scratch = scratch_with_manager("notifd_tabs");
    let server = TestServer::start();
    let port = server.ws_addr().port().to_string();
    let user = new_user("tabs");
    let token = user_token(&user, &["my-workspace"]);
    let mut tabs = Vec::new();
    for _ in 0..2 {
        let mut child = Command::new("node")
            .arg(scratch.dir.join("manager.js"))
            .args([&port, &token, "my-workspace", "40000"])
            .current_dir(&scratch.dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("node runs");
        let stdout = lines_of(child.stdout.take().expect("stdout"));
        scratch.children.push(child);
        let (open, early) = wait_for_line(&stdout, Duration::from_secs(15), |l| {
            l == "Connected to notifications"
        });
        assert!(open.is_some(), "a tab connects; stdout {early:?}");
        tabs.push(stdout);
    }

    // For 30 s, a notification every 1.5 s: each tab gets every one, and neither
    // closes or reconnects.
    let started = Instant::now();
    let mut n = 0;
    while started.elapsed() < Duration::from_secs(30) {
        n += 1;
        let created = server.create(&json!({
            "user_id": user, "workspace": "my-workspace", "kind": "tab.check",
            "title": format!("#{n}"), "payload": {"n": n},
        }));
        for (tab, lines) in tabs.iter().enumerate() {
            let (line, before) =
                wait_for_line(lines, Duration::from_secs(10), |l| l.starts_with('{'));
            let line = line.unwrap_or_else(|| panic!("tab {tab} got #{n}; saw {before:?}"));
            let got: Value = serde_json::from_str(&line).expect("JSON line");
            assert_eq!(got, created, "tab {tab}, notification #{n}");
            assert!(
                before.iter().all(|l| !l.starts_with("Connection closed")),
                "tab {tab} was closed: {before:?}"
            );
        }
        std::thread::sleep(Duration::from_millis(1500));
    }
    assert!(n >= 15, "a notification every 1.5 s for 30 s: {n}");
    for (tab, lines) in tabs.iter().enumerate() {
        let rest: Vec<String> = lines.try_iter().collect();
        assert!(
            rest.iter()
                .all(|l| !l.starts_with("Connection closed") && !l.starts_with("Reconnecting")),
            "tab {tab} stayed connected: {rest:?}"
        );
    }
    assert_eq!(server.ws_connections(), 2, "both tabs are still connected");
}
