//! Node.js for the face's tests (`tests/client_policy.rs`, `tests/browser.rs`): the
//! npm packages of `tests/browser` (installed from the committed lock file with
//! `npm ci` when missing, as `scripts/test` does), and node runs bounded in time
//! whose output a failure shows. Without node or npm these tests fail, never skip.

#![allow(dead_code)] // each test binary that includes this uses a part of it

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// A token of `user` for `workspace` that expired an hour ago.
pub fn expired_token(user: &str, workspace: &str) -> String {
    crate::common::mint(&notifd::auth::Claims {
        sub: Some(user.to_string()),
        exp: notifd::auth::unix_now() - 3600,
        workspaces: Some(vec![workspace.to_string()]),
        workspace: None,
        scope: None,
    })
}

/// `tests/browser`: the package.json, lock file and JS test files.
pub fn browser_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// Makes sure `playwright-core` and `ws` are installed (once per test binary).
pub fn ensure_packages() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let modules = browser_dir().join("node_modules");
        if modules.join("ws").is_dir() && modules.join("playwright-core").is_dir() {
            return;
        }
        let mut npm = Command::new("npm");
        npm.args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(browser_dir());
        let output = run_bounded(npm, Duration::from_secs(180), "npm ci in tests/browser");
        assert!(
            output.status.success(),
            "npm ci in tests/browser failed (scripts/test installs nodejs and npm): {}",
            String::from_utf8_lossy(&output.stderr)
        );
    });
}

/// `node ARGS` in `tests/browser` with `envs` added; fails the test unless it exits 0
/// within `deadline`. Returns its output.
pub fn node(args: &[&str], envs: &[(&str, String)], deadline: Duration) -> Output {
    let mut command = Command::new("node");
    command.args(args).current_dir(browser_dir());
    for (name, value) in envs {
        command.env(name, value);
    }
    let what = format!("node {}", args.join(" "));
    let output = run_bounded(command, deadline, &what);
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Runs `command` (stdin closed) and collects its output; kills it and fails the
/// test at `deadline`, showing what it printed so far.
pub fn run_bounded(mut command: Command, deadline: Duration, what: &str) -> Output {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: cannot start ({e}); scripts/test installs it"));
    let collect = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            bytes
        })
    };
    let stdout = collect(Box::new(child.stdout.take().expect("piped stdout")));
    let stderr = collect(Box::new(child.stderr.take().expect("piped stderr")));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the child") {
            break status;
        }
        if started.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let out = stdout.join().unwrap_or_default();
            let err = stderr.join().unwrap_or_default();
            panic!(
                "{what}: did not finish within {deadline:?}:\n{}\n{}",
                String::from_utf8_lossy(&out),
                String::from_utf8_lossy(&err)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }
}
