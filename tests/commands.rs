//! The operator's commands: `notifd check-config` prints every setting with secrets
//! masked and exits 0 (PostgreSQL and Redis answer), 1 (one does not: named with
//! host:port and the cause) or 2 (a bad setting, one line naming it); `notifd token
//! --help` lists only token's options while `notifd --help` and `serve --help` list
//! every setting; the database and Redis URLs can come from `…_FILE` files.

mod common;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Output};

const PASSWORD: &str = "url-password-never-printed";

/// Every `NOTIFD_*` variable `src/cli.rs` declares.
fn variables() -> Vec<String> {
    let cli = include_str!("../src/cli.rs");
    let names: Vec<String> = cli
        .split("env = \"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .map(String::from)
        .collect();
    assert!(names.len() >= 20, "{names:?}");
    names
}

fn run(mut command: Command) -> (Output, String, String) {
    let output = command.output().expect("notifd runs");
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    (output, stdout, stderr)
}

fn check_config() -> Command {
    let mut command = common::notifd_command("commands");
    command.arg("check-config");
    command
}

/// A local port nobody listens on (bound, then released).
fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A file in the temporary directory, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn with(tag: &str, content: &str) -> TempFile {
        let path = std::env::temp_dir().join(common::new_user(tag));
        std::fs::write(&path, content).expect("write a temporary file");
        TempFile(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().expect("UTF-8 path")
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn check_config_prints_every_setting_masked_and_exits_0() {
    let (output, stdout, stderr) = run(check_config());
    assert_eq!(output.status.code(), Some(0), "{stdout}{stderr}");
    for variable in variables() {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(&format!("{variable}="))),
            "no {variable}:\n{stdout}"
        );
    }
    assert!(
        stdout.contains("NOTIFD_JWT_SECRET=*** (33 bytes)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("NOTIFD_HTTP_WORKERS=16"),
        "a default: {stdout}"
    );
    assert!(stdout.contains("# postgresql 127.0.0.1:"), "{stdout}");
    assert!(stdout.contains("# redis 127.0.0.1:"), "{stdout}");
    assert!(!stdout.contains(common::SECRET) && !stderr.contains(common::SECRET));
    let database: postgres::Config = common::database_url().parse().expect("URL");
    if let Some(password) = database.get_password() {
        let password = String::from_utf8_lossy(password);
        assert!(!stdout.contains(password.as_ref()), "{stdout}");
    }
}

#[test]
fn check_config_names_an_unreachable_dependency_and_exits_1() {
    let (pg, redis) = (closed_port(), closed_port());
    let mut command = check_config();
    command
        .env(
            "NOTIFD_DATABASE_URL",
            format!("postgres://notifd:{PASSWORD}@127.0.0.1:{pg}/notifd"),
        )
        .env(
            "NOTIFD_REDIS_URL",
            format!("redis://default:{PASSWORD}@127.0.0.1:{redis}"),
        );
    let (output, stdout, stderr) = run(command);
    assert_eq!(output.status.code(), Some(1), "{stdout}{stderr}");
    for (name, port) in [("postgresql", pg), ("redis", redis)] {
        let line = stderr
            .lines()
            .find(|l| l.contains(&format!("{name} unreachable")))
            .unwrap_or_else(|| panic!("{name} not named: {stderr}"));
        assert!(line.contains(&format!("127.0.0.1:{port}")), "{line}");
        assert!(line.contains("refused"), "says why: {line}");
    }
    assert!(
        stdout.contains(&format!(
            "NOTIFD_DATABASE_URL=postgres://notifd:***@127.0.0.1:{pg}/notifd"
        )),
        "{stdout}"
    );
    let all = format!("{stdout}{stderr}");
    assert!(!all.contains(PASSWORD), "a password is printed: {all}");
    assert!(
        !all.contains(common::SECRET),
        "the secret is printed: {all}"
    );
}

#[test]
fn check_config_exits_2_on_a_bad_setting_with_one_line() {
    let mut command = check_config();
    command.env("NOTIFD_PING_INTERVAL", "soon");
    let (output, stdout, stderr) = run(command);
    assert_eq!(output.status.code(), Some(2), "{stdout}{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("NOTIFD_PING_INTERVAL"), "{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
}

#[test]
fn token_help_lists_only_its_own_options() {
    let (_, help, _) = run({
        let mut command = Command::new(env!("CARGO_BIN_EXE_notifd"));
        command.args(["token", "--help"]);
        command
    });
    for option in ["--sub", "--workspace", "--scope", "--ttl"] {
        assert!(help.contains(option), "lacks {option}: {help}");
    }
    assert!(!help.contains("--database-url"), "{help}");
    assert!(help.lines().count() < 20, "{help}");
    for args in [&["--help"][..], &["serve", "--help"]] {
        let (_, help, _) = run({
            let mut command = Command::new(env!("CARGO_BIN_EXE_notifd"));
            command.args(args);
            command
        });
        for variable in variables() {
            assert!(help.contains(&variable), "{args:?} lacks {variable}");
        }
    }
    // The settings still work as token's flags.
    let mut command = common::notifd_command("commands");
    command.env_remove("NOTIFD_JWT_SECRET").args([
        "token",
        "--sub",
        "alice",
        "--jwt-secret",
        common::SECRET,
    ]);
    let (output, _, stderr) = run(command);
    assert!(output.status.success(), "{stderr}");
}

#[test]
fn urls_come_from_files() {
    let database = TempFile::with("dburl", &format!("{}\n", common::database_url()));
    let redis = TempFile::with("redisurl", &format!("{}\n", common::redis_url()));
    let mut command = check_config();
    command
        .env_remove("NOTIFD_DATABASE_URL")
        .env_remove("NOTIFD_REDIS_URL")
        .env("NOTIFD_DATABASE_URL_FILE", database.path())
        .env("NOTIFD_REDIS_URL_FILE", redis.path());
    let (output, stdout, stderr) = run(command);
    assert_eq!(output.status.code(), Some(0), "{stdout}{stderr}");
    let name = common::database_url().rsplit('/').next().map(String::from);
    let name = name.expect("a database name");
    assert!(stdout.contains(&format!("(database {name}, ")), "{stdout}");

    // migrate reads the file too.
    let mut command = common::notifd_command("commands");
    command
        .env_remove("NOTIFD_DATABASE_URL")
        .env("NOTIFD_DATABASE_URL_FILE", database.path())
        .arg("migrate");
    let (output, _, stderr) = run(command);
    assert!(output.status.success(), "{stderr}");

    // A Redis URL from its file is the one checked.
    let port = closed_port();
    let closed = TempFile::with("redisurl", &format!("redis://127.0.0.1:{port}\n"));
    let mut command = check_config();
    command
        .env_remove("NOTIFD_REDIS_URL")
        .env("NOTIFD_REDIS_URL_FILE", closed.path());
    let (output, _, stderr) = run(command);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("127.0.0.1:{port}")), "{stderr}");
}

#[test]
fn a_value_and_its_file_together_are_an_error_naming_both() {
    let file = TempFile::with("both", "whatever\n");
    for (variable, file_variable) in [
        ("NOTIFD_DATABASE_URL", "NOTIFD_DATABASE_URL_FILE"),
        ("NOTIFD_REDIS_URL", "NOTIFD_REDIS_URL_FILE"),
        ("NOTIFD_JWT_SECRET", "NOTIFD_JWT_SECRET_FILE"),
    ] {
        let mut command = check_config();
        command.env(file_variable, file.path());
        let (output, _, stderr) = run(command);
        assert_eq!(output.status.code(), Some(2), "{variable}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.contains(variable) && stderr.contains(file_variable),
            "{stderr}"
        );
    }
}

#[test]
fn an_unusable_file_names_the_variable_and_path_never_the_content() {
    let missing = std::env::temp_dir().join(common::new_user("missing"));
    let missing = missing.to_str().expect("UTF-8 path");
    let bad_url = TempFile::with("badurl", &format!("postgres://u:{PASSWORD}@h:port/db\n"));
    for (variable, value, cut) in [
        ("NOTIFD_DATABASE_URL_FILE", missing, "NOTIFD_DATABASE_URL"),
        ("NOTIFD_REDIS_URL_FILE", missing, "NOTIFD_REDIS_URL"),
        (
            "NOTIFD_DATABASE_URL_FILE",
            bad_url.path(),
            "NOTIFD_DATABASE_URL",
        ),
    ] {
        // migrate reads only the database settings.
        let subcommands: &[&str] = if cut == "NOTIFD_REDIS_URL" {
            &["check-config", "serve"]
        } else {
            &["check-config", "migrate", "serve"]
        };
        for subcommand in subcommands {
            let mut command = common::notifd_command("commands");
            command.env_remove(cut).env(variable, value).arg(subcommand);
            let (output, _, stderr) = run(command);
            assert_eq!(output.status.code(), Some(2), "{subcommand}: {stderr}");
            assert!(stderr.contains(&format!("{variable}:")), "{stderr}");
            if value == missing {
                assert!(stderr.contains(missing), "names the path: {stderr}");
            }
            assert!(!stderr.contains(PASSWORD), "prints the content: {stderr}");
        }
    }
}
