//! Deployment files: the systemd unit passes `systemd-analyze verify` (where that
//! command exists), the env-file template names every setting, the scripts parse,
//! and the `.deb` of `scripts/package` holds what an install needs and its postinst
//! writes the env file once, never over an edited one.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

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
    // scripts/test installs systemd (for systemd-analyze): without it this fails.
    assert!(
        Command::new("systemd-analyze")
            .arg("--version")
            .output()
            .is_ok(),
        "systemd-analyze is not installed (scripts/test installs systemd)"
    );
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
    // Maintainer scripts and what they call run under /bin/sh (dash on Debian).
    let sh = [
        "scripts/notifd-write-env",
        "scripts/debian/postinst",
        "scripts/debian/prerm",
        "scripts/debian/postrm",
    ];
    let bash = [
        "scripts/run",
        "scripts/test",
        "scripts/services",
        "scripts/install",
        "scripts/uninstall",
        "scripts/bench",
        "scripts/package",
        ".ci/run",
    ];
    let scripts = sh
        .map(|s| ("sh", s))
        .into_iter()
        .chain(bash.map(|s| ("bash", s)));
    for (shell, script) in scripts {
        let status = Command::new(shell)
            .arg("-n")
            .arg(Path::new(ROOT).join(script))
            .status()
            .expect(shell);
        assert!(status.success(), "{script} does not parse ({shell} -n)");
    }
}

fn run(command: &mut Command) -> Output {
    let output = command.output().expect("runs");
    assert!(
        output.status.success(),
        "{command:?}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// A scratch directory of this test binary, emptied first. In cargo's per-target
/// temporary directory under one fixed name, so each run replaces the last one's
/// package (about 90 MB with the debug binary) instead of adding one.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("deploy-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// The .deb of the binary cargo built for these tests (a release build would take
/// minutes), built once per test binary, uncompressed for speed.
fn deb() -> &'static Path {
    static DEB: OnceLock<PathBuf> = OnceLock::new();
    DEB.get_or_init(|| {
        let out = scratch("out");
        let output = run(Command::new(Path::new(ROOT).join("scripts/package"))
            .args([
                "--binary",
                env!("CARGO_BIN_EXE_notifd"),
                "--compression",
                "none",
            ])
            .arg("--out")
            .arg(&out)
            .stdin(std::process::Stdio::null()));
        let path = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
        assert!(path.starts_with(&out) && path.is_file(), "{path:?}");
        path
    })
}

/// The package unpacked into a fresh directory, with its control files in DEBIAN/.
fn unpacked(name: &str) -> PathBuf {
    let root = scratch(name);
    run(Command::new("dpkg-deb").arg("-x").arg(deb()).arg(&root));
    run(Command::new("dpkg-deb")
        .arg("-e")
        .arg(deb())
        .arg(root.join("DEBIAN")));
    root
}

#[test]
fn the_deb_holds_the_binary_the_unit_the_template_and_the_man_page() {
    let name = deb().file_name().unwrap().to_string_lossy().into_owned();
    let version = env!("CARGO_PKG_VERSION");
    assert!(
        name.starts_with(&format!("notifd_{version}_")) && name.ends_with(".deb"),
        "{name}"
    );
    let info = String::from_utf8_lossy(&run(Command::new("dpkg-deb").arg("-I").arg(deb())).stdout)
        .into_owned();
    for field in [
        "Package: notifd".to_string(),
        format!("Version: {version}"),
        "Depends: libc6 (>= 2.".into(),
        "Suggests: postgresql, redis-server".into(),
    ] {
        assert!(info.contains(&field), "control lacks {field}: {info}");
    }
    for script in ["postinst", "prerm", "postrm"] {
        assert!(info.contains(script), "no {script}: {info}");
    }
    let contents =
        String::from_utf8_lossy(&run(Command::new("dpkg-deb").arg("-c").arg(deb())).stdout)
            .into_owned();
    for path in [
        "./usr/bin/notifd",
        "./lib/systemd/system/notifd.service",
        "./usr/share/notifd/notifd.env.template",
        "./usr/share/notifd/write-env",
        "./usr/share/man/man1/notifd.1.gz",
        "./usr/share/doc/notifd/copyright",
    ] {
        let line = contents
            .lines()
            .find(|l| l.ends_with(&format!(" {path}")))
            .unwrap_or_else(|| panic!("the .deb lacks {path}: {contents}"));
        assert!(line.contains("root/root"), "{line}");
    }

    let root = unpacked("contents");
    let binary = root.join("usr/bin/notifd");
    let version_line = run(Command::new(&binary).arg("--version")).stdout;
    assert!(String::from_utf8_lossy(&version_line).contains(version));
    let unit =
        std::fs::read_to_string(root.join("lib/systemd/system/notifd.service")).expect("unit");
    for line in [
        "ExecStart=/usr/bin/notifd serve",
        "EnvironmentFile=/etc/notifd/notifd.env",
        "DynamicUser=yes",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
    ] {
        assert!(
            unit.lines().any(|l| l == line),
            "packaged unit lacks {line}"
        );
    }
    assert_eq!(
        std::fs::read(root.join("usr/share/notifd/notifd.env.template")).unwrap(),
        std::fs::read(Path::new(ROOT).join("scripts/notifd.env.template")).unwrap()
    );
    let man = run(Command::new("gzip")
        .arg("-dc")
        .arg(root.join("usr/share/man/man1/notifd.1.gz")))
    .stdout;
    let man = String::from_utf8_lossy(&man);
    assert!(man.starts_with(".TH NOTIFD 1 "), "{man}");
    // Made from --help: every setting and subcommand is in it.
    for word in [
        "NOTIFD_DATABASE_URL",
        "NOTIFD_JWT_SECRET",
        "notifd token",
        "--sub",
    ] {
        assert!(man.contains(word), "man page lacks {word}");
    }
    let _ = std::fs::remove_dir_all(&root);
}

/// Runs a maintainer script of the unpacked package against `root` as dpkg does
/// with `--root` (DPKG_ROOT), so nothing outside `root` is touched.
fn maintainer_script(root: &Path, script: &str, args: &[&str]) -> Output {
    run(Command::new("sh")
        .arg(root.join("DEBIAN").join(script))
        .args(args)
        .env("DPKG_ROOT", root)
        .env_remove("NOTIFD_DATABASE_URL")
        .stdin(std::process::Stdio::null()))
}

fn env_value(env: &str, key: &str) -> String {
    env.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("env file lacks {key}"))
        .to_string()
}

#[test]
fn postinst_writes_a_fresh_env_file_once_and_never_over_an_edited_one() {
    use std::os::unix::fs::PermissionsExt;

    let root = unpacked("postinst");
    let env_path = root.join("etc/notifd/notifd.env");
    maintainer_script(&root, "postinst", &["configure", ""]);
    let env = std::fs::read_to_string(&env_path).expect("postinst wrote the env file");
    let mode = std::fs::metadata(&env_path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "it holds the secret");
    assert!(
        !env.contains("@JWT_SECRET@") && !env.contains("@DATABASE_URL@"),
        "placeholders left: {env}"
    );
    let secret = env_value(&env, "NOTIFD_JWT_SECRET");
    assert!(secret.len() >= 32, "{secret:?}");
    let database_url = env_value(&env, "NOTIFD_DATABASE_URL");
    assert!(
        database_url.starts_with("postgres://notifd:")
            && database_url.ends_with("@127.0.0.1:5432/notifd"),
        "{database_url}"
    );

    // The admin edits it; an upgrade (configure with the old version) keeps it.
    let edited = env.replace("NOTIFD_LOG=info", "NOTIFD_LOG=debug");
    assert_ne!(edited, env);
    std::fs::write(&env_path, &edited).unwrap();
    maintainer_script(&root, "postinst", &["configure", "0.0.1"]);
    assert_eq!(std::fs::read_to_string(&env_path).unwrap(), edited);

    // Another machine gets its own secret and database password.
    let other = unpacked("postinst-other");
    maintainer_script(&other, "postinst", &["configure", ""]);
    let other_env = std::fs::read_to_string(other.join("etc/notifd/notifd.env")).unwrap();
    assert_ne!(env_value(&other_env, "NOTIFD_JWT_SECRET"), secret);
    assert_ne!(env_value(&other_env, "NOTIFD_DATABASE_URL"), database_url);

    // Purge takes the generated file (dpkg does not know it) with it.
    maintainer_script(&root, "postrm", &["purge"]);
    assert!(!env_path.exists());
    let _ = std::fs::remove_dir_all(&root);
    let _ = std::fs::remove_dir_all(&other);
}
