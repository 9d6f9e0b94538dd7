//! The `notifd` binary: parse the configuration, run the command, turn an error into
//! an exit code after printing its cause.

use std::process::ExitCode;
use std::time::Duration;

use notifd::auth::{self, Claims};
use notifd::cli::{Cli, Command, TokenArgs};
use notifd::config::{self, JwtKey};
use notifd::{check, logging, process, server, Config, Server};

fn main() -> ExitCode {
    process::raise_fd_limit();
    process::enlarge_futex_hash();
    notifd::cli::unset_blank_environment();
    let cli = Cli::parse_args();
    match cli.command {
        Command::Migrate => return migrate(&cli.settings),
        Command::CheckConfig => return check_config(&cli.settings),
        Command::Serve | Command::Token(_) => {}
    }
    let config = match Config::from_settings(&cli.settings) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("notifd: {err}");
            return ExitCode::from(2);
        }
    };
    logging::init(config.log_filter.clone(), config.log_format);
    let result = match &cli.command {
        Command::Serve => serve(&config),
        Command::Migrate | Command::CheckConfig => unreachable!("handled above"),
        Command::Token(args) => token(&config, args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("notifd: {err}");
            ExitCode::FAILURE
        }
    }
}

/// `notifd migrate`: needs only the database settings (no JWT secret).
fn migrate(settings: &notifd::cli::Settings) -> ExitCode {
    let config = match config::MigrateConfig::from_settings(settings) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("notifd: {err}");
            return ExitCode::from(2);
        }
    };
    logging::init(config.log_filter.clone(), config.log_format);
    match server::apply_migrations(&config.database_url) {
        Ok(n) => {
            eprintln!("notifd: {n} migration(s) applied");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("notifd: {err}");
            ExitCode::FAILURE
        }
    }
}

/// `notifd check-config`: the settings on stdout, one `NAME=value` line each
/// (secrets masked), then one line per dependency; exit 0 when both answer, 1 when
/// one does not (on stderr, with host:port and the cause), 2 for a bad setting.
fn check_config(settings: &notifd::cli::Settings) -> ExitCode {
    let config = match Config::from_settings(settings) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("notifd: {err}");
            return ExitCode::from(2);
        }
    };
    for (variable, value) in check::settings(&config, settings) {
        println!("{variable}={value}");
    }
    if let Some(lowered) = config.max_connections_lowered {
        println!(
            "# NOTIFD_MAX_CONNECTIONS asked for {}; {} allows no more",
            lowered.asked, lowered.limit
        );
    }
    let mut healthy = true;
    for (name, result) in [
        ("postgresql", check::postgresql(&config.database_url)),
        ("redis", check::redis(&config.redis_url)),
    ] {
        match result {
            Ok(answer) => println!("# {name} {answer}"),
            Err(cause) => {
                eprintln!("notifd: {name} unreachable: {cause}");
                healthy = false;
            }
        }
    }
    if healthy {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn serve(config: &Config) -> Result<(), String> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    // Register before starting so a signal during start-up is not lost.
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT])
        .map_err(|e| format!("cannot watch signals: {e}"))?;
    let server = Server::start(config).map_err(|e| e.to_string())?;
    if let Some(signal) = signals.forever().next() {
        log::info!(signal = signal; "shutting down");
    }
    server.shutdown();
    Ok(())
}

fn token(config: &Config, args: &TokenArgs) -> Result<(), String> {
    let JwtKey::Secret(secret) = &config.jwt.key else {
        return Err(
            "notifd token signs with an HS* secret; the configured algorithm uses a public key"
                .into(),
        );
    };
    let ttl: Duration = config::parse_duration(&args.ttl).map_err(|e| format!("--ttl: {e}"))?;
    let claims = Claims {
        sub: Some(args.sub.clone()),
        exp: auth::unix_now() + ttl.as_secs(),
        workspaces: (!args.workspaces.is_empty()).then(|| args.workspaces.clone()),
        workspace: None,
        scope: args.scope.clone(),
    };
    println!("{}", auth::mint(config.jwt.algorithm, secret, &claims)?);
    Ok(())
}
