//! Deployment files: the systemd unit passes `systemd-analyze verify` (where that
//! command exists), the env-file template names every setting, and the scripts parse.

use std::path::Path;
use std::process::Command;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(ROOT).join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn the_unit_is_hardened_and_sized() {
    let unit = read("scripts/notifd.service");
    for line in [
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "Restart=on-failure",
        "EnvironmentFile=/etc/notifd/notifd.env",
        "DynamicUser=yes",
    ] {
        assert!(unit.lines().any(|l| l == line), "unit lacks {line}");
    }
    let value = |key: &str| -> u64 {
        unit.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim_end_matches('s').parse().ok())
            .unwrap_or_else(|| panic!("unit lacks {key}"))
    };
    assert!(
        value("LimitNOFILE=") >= 20_000,
        "room for one descriptor per connection"
    );
    assert!(
        value("TasksMax=") >= value("LimitNOFILE="),
        "a thread per connection"
    );
    assert!(
        value("TimeoutStopSec=") > 10,
        "above the 10 s graceful-shutdown bound"
    );
    assert!(value("RestartSec=") >= 1);
}

#[test]
fn systemd_analyze_verify_accepts_the_unit() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("systemd-analyze not installed: skipped");
        return;
    }
    // Point the unit at files that exist here: the built binary and a scratch env file.
    let dir = std::env::temp_dir().join(format!("notifd-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let env_file = dir.join("notifd.env");
    std::fs::write(&env_file, "NOTIFD_LOG=info\n").expect("env file");
    let unit = read("scripts/notifd.service")
        .replace("/usr/local/bin/notifd", env!("CARGO_BIN_EXE_notifd"))
        .replace("/etc/notifd/notifd.env", &env_file.to_string_lossy());
    let path = dir.join("notifd.service");
    std::fs::write(&path, unit).expect("unit copy");
    let output = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    // Complaints about the host (no running systemd, other units) are not ours.
    let ours: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("notifd.service"))
        .collect();
    assert!(ours.is_empty(), "systemd-analyze verify: {stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_env_template_names_every_setting() {
    let template = read("scripts/notifd.env.template");
    let cli = read("src/cli.rs");
    let variables: Vec<&str> = cli
        .split("env = \"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .collect();
    assert!(variables.len() >= 15, "{variables:?}");
    for variable in variables {
        assert!(
            template.contains(&format!("{variable}=")),
            "template lacks {variable}"
        );
    }
}

#[test]
fn the_scripts_parse() {
    for script in [
        "scripts/run",
        "scripts/test",
        "scripts/services",
        "scripts/install",
        "scripts/uninstall",
        "scripts/bench",
        "scripts/ws-capacity",
        ".ci/run",
    ] {
        let status = Command::new("bash")
            .arg("-n")
            .arg(Path::new(ROOT).join(script))
            .status()
            .expect("bash");
        assert!(status.success(), "{script} does not parse");
    }
    // Parsed, not compiled: nothing written next to the script.
    let status = Command::new("python3")
        .args(["-c", "import ast, sys; ast.parse(open(sys.argv[1]).read())"])
        .arg(Path::new(ROOT).join("scripts/ws_capacity.py"))
        .status()
        .expect("python3");
    assert!(status.success(), "scripts/ws_capacity.py does not compile");
}
