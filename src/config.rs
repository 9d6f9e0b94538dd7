//! `Config`: every setting, parsed and validated once at start-up.
//!
//! `cli::Settings` holds the raw strings from flags and `NOTIFD_*` variables; this
//! module turns them into typed values and fails with one line naming the variable
//! and the problem. Tests build `Settings` directly (`tests/common::settings`) and call
//! `Config::from_settings` instead of going through the environment.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use crate::cli::Settings;

pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/notifd";
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";
pub const DEFAULT_HTTP_ADDR: &str = "0.0.0.0:8080";
pub const DEFAULT_WS_ADDR: &str = "0.0.0.0:8081";
pub const DEFAULT_JWT_ALGORITHM: &str = "HS256";
pub const DEFAULT_JWT_LEEWAY: Duration = Duration::from_secs(30);
pub const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(30);
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
pub const DEFAULT_HTTP_WORKERS: usize = 16;
pub const DEFAULT_HTTP_TIMEOUT: Duration = Duration::from_secs(15);
pub const DEFAULT_DB_POOL_SIZE: u32 = 8;
pub const DEFAULT_WS_QUEUE: usize = 256;
pub const DEFAULT_CONNECTIONS_PER_USER: usize = 5;
pub const DEFAULT_IDEMPOTENCY_WINDOW: Duration = Duration::from_secs(24 * 3600);
/// Most connections per (user, workspace) a setting may ask for: past this the
/// limit protects nothing, and each admit moves more of the roster.
pub const MAX_CONNECTIONS_PER_USER: usize = 1000;
/// Longest retention period: PostgreSQL's interval arithmetic (and common sense)
/// stop well before `u32::MAX` days.
pub const MAX_RETENTION_DAYS: u32 = 36_500;

/// A setting that could not be used; `Display` is the one line printed at start-up.
#[derive(Debug)]
pub struct ConfigError {
    pub variable: &'static str,
    pub problem: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.variable, self.problem)
    }
}

impl std::error::Error for ConfigError {}

fn bad(variable: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        variable,
        problem: problem.into(),
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Where the JWT verifying key comes from.
#[derive(Clone)]
pub enum JwtKey {
    /// HS*: the shared secret.
    Secret(Vec<u8>),
    /// RS*/PS*/ES*/EdDSA: a PEM public key.
    PublicKeyPem(Vec<u8>),
}

impl std::fmt::Debug for JwtKey {
    // Never print key material, not even in a debug dump of the config.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JwtKey::Secret(_) => f.write_str("Secret(<redacted>)"),
            JwtKey::PublicKeyPem(_) => f.write_str("PublicKeyPem(..)"),
        }
    }
}

/// Token verification settings.
#[derive(Debug, Clone)]
pub struct JwtConfig {
    /// The only algorithm accepted. Defaults to HS256.
    pub algorithm: jsonwebtoken::Algorithm,
    pub key: JwtKey,
    /// Required `iss`, if any. Defaults to none (not checked).
    pub issuer: Option<String>,
    /// Required `aud`, if any. Defaults to none (not checked).
    pub audience: Option<String>,
    /// Clock leeway for `exp`. Defaults to 30 s.
    pub leeway: Duration,
}

/// A connection cap set above what the process's limits allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CapLowered {
    /// What the setting asked for.
    pub asked: usize,
    /// The limit that allows less (`RLIMIT_NOFILE`, `vm.max_map_count`, …).
    pub limit: &'static str,
}

/// The whole configuration of one notifd process.
#[derive(Debug, Clone)]
pub struct Config {
    /// Defaults to `postgres://postgres@127.0.0.1:5432/notifd`.
    pub database_url: String,
    /// Defaults to `redis://127.0.0.1:6379`.
    pub redis_url: String,
    /// Prefix of Redis channel names. Defaults to empty.
    pub redis_prefix: String,
    /// Defaults to `0.0.0.0:8080`.
    pub http_addr: SocketAddr,
    /// Defaults to `0.0.0.0:8081`.
    pub ws_addr: SocketAddr,
    /// Where `/metrics` is served instead of the REST port. Defaults to none (the
    /// REST port serves it).
    pub metrics_addr: Option<SocketAddr>,
    pub jwt: JwtConfig,
    /// The default level and per-module levels (`info,notifd::store=debug`).
    /// Defaults to info.
    pub log_filter: crate::logging::Filter,
    /// Defaults to text.
    pub log_format: LogFormat,
    /// Defaults to 30 s.
    pub ping_interval: Duration,
    /// Defaults to 5 min.
    pub idle_timeout: Duration,
    /// WebSocket connections held at once. Defaults to what the process's limits
    /// allow (descriptors, threads, memory maps) less a reserve
    /// (`websocket::capacity`); a larger setting is lowered to that.
    pub max_connections: usize,
    /// Set when `NOTIFD_MAX_CONNECTIONS` asked for more than the limits allow and
    /// `max_connections` was lowered. Warned about at start.
    pub max_connections_lowered: Option<CapLowered>,
    /// Defaults to none.
    pub cors_origins: Vec<String>,
    /// Defaults to none (keep forever).
    pub retention_days: Option<u32>,
    /// Defaults to 16.
    pub http_workers: usize,
    /// Defaults to 15 s.
    pub http_timeout: Duration,
    /// Defaults to what the descriptor limit leaves after `max_connections` and
    /// `OTHER_DESCRIPTORS`, at least `MIN_HTTP_CONNECTIONS`.
    pub http_max_connections: usize,
    /// Adds a route that panics, for the tests of panic containment. Set only by
    /// code (tests); no setting or flag reaches it.
    pub test_faults: bool,
    /// Defaults to 8.
    pub db_pool_size: u32,
    /// Notifications queued per WebSocket connection. Defaults to 256.
    pub ws_queue: usize,
    /// WebSocket connections per (user, workspace) across all instances (`roster`);
    /// a newer one beyond it closes the oldest with 4005, 1 to 1,000. Defaults to 5.
    pub connections_per_user: usize,
    /// How long a create's idempotency key is honoured: a repeat within it answers
    /// the original; after it, the key is forgotten (and purged by the sweep).
    /// Defaults to 24 h.
    pub idempotency_window: Duration,
}

impl Config {
    /// Parses and validates every setting.
    pub fn from_settings(s: &Settings) -> Result<Config, ConfigError> {
        let database_url = database_url(s)?;
        let redis_url = redis_url(s)?;
        let (max_connections, max_connections_lowered) = max_connections(s)?;
        Ok(Config {
            database_url,
            redis_url,
            redis_prefix: s.redis_prefix.clone().unwrap_or_default(),
            http_addr: parse_addr(
                "NOTIFD_HTTP_ADDR",
                s.http_addr.as_deref(),
                DEFAULT_HTTP_ADDR,
            )?,
            ws_addr: parse_addr("NOTIFD_WS_ADDR", s.ws_addr.as_deref(), DEFAULT_WS_ADDR)?,
            metrics_addr: match &s.metrics_addr {
                Some(v) if !v.trim().is_empty() => {
                    Some(parse_addr("NOTIFD_METRICS_ADDR", Some(v.trim()), "")?)
                }
                _ => None,
            },
            jwt: parse_jwt(s)?,
            log_filter: parse_log_filter(s.log.as_deref())?,
            log_format: parse_log_format(s.log_format.as_deref())?,
            ping_interval: duration_or(
                "NOTIFD_PING_INTERVAL",
                &s.ping_interval,
                DEFAULT_PING_INTERVAL,
            )?,
            idle_timeout: duration_or(
                "NOTIFD_IDLE_TIMEOUT",
                &s.idle_timeout,
                DEFAULT_IDLE_TIMEOUT,
            )?,
            max_connections,
            max_connections_lowered,
            cors_origins: parse_list(s.cors_origins.as_deref()),
            retention_days: match &s.retention_days {
                Some(v) if !v.trim().is_empty() => {
                    let days = parse_number("NOTIFD_RETENTION_DAYS", v, 1)?;
                    if days > MAX_RETENTION_DAYS {
                        return Err(bad(
                            "NOTIFD_RETENTION_DAYS",
                            format!("at most {MAX_RETENTION_DAYS} (100 years); leave it empty to keep forever"),
                        ));
                    }
                    Some(days)
                }
                _ => None,
            },
            http_workers: match &s.http_workers {
                Some(v) => parse_number("NOTIFD_HTTP_WORKERS", v, 1)?,
                None => DEFAULT_HTTP_WORKERS,
            },
            http_timeout: duration_or(
                "NOTIFD_HTTP_TIMEOUT",
                &s.http_timeout,
                DEFAULT_HTTP_TIMEOUT,
            )?,
            http_max_connections: match &s.http_max_connections {
                // One descriptor each: more than the limit could never be open.
                Some(v) => parse_number("NOTIFD_HTTP_MAX_CONNECTIONS", v, 1)?
                    .min(crate::process::fd_limit() as usize),
                None => default_http_max_connections(max_connections),
            },
            test_faults: false,
            db_pool_size: match &s.db_pool_size {
                Some(v) => parse_number("NOTIFD_DB_POOL_SIZE", v, 1)?,
                None => DEFAULT_DB_POOL_SIZE,
            },
            ws_queue: match &s.ws_queue {
                Some(v) => parse_number("NOTIFD_WS_QUEUE", v, 1)?,
                None => DEFAULT_WS_QUEUE,
            },
            connections_per_user: connections_per_user(s)?,
            idempotency_window: duration_or(
                "NOTIFD_IDEMPOTENCY_WINDOW",
                &s.idempotency_window,
                DEFAULT_IDEMPOTENCY_WINDOW,
            )?,
        })
    }
}

/// What `notifd migrate` needs, and nothing else: the database and how to log.
pub struct MigrateConfig {
    pub database_url: String,
    pub log_filter: crate::logging::Filter,
    pub log_format: LogFormat,
}

impl MigrateConfig {
    /// Parses only the settings a migration uses, so that `notifd migrate` runs
    /// without a JWT secret or anything else `serve` needs.
    pub fn from_settings(s: &Settings) -> Result<MigrateConfig, ConfigError> {
        Ok(MigrateConfig {
            database_url: database_url(s)?,
            log_filter: parse_log_filter(s.log.as_deref())?,
            log_format: parse_log_format(s.log_format.as_deref())?,
        })
    }
}

/// `NOTIFD_DATABASE_URL` (or the file `NOTIFD_DATABASE_URL_FILE` names), checked
/// to be a PostgreSQL URL.
fn database_url(s: &Settings) -> Result<String, ConfigError> {
    let (url, variable) = value_or_file(
        ("NOTIFD_DATABASE_URL", &s.database_url),
        ("NOTIFD_DATABASE_URL_FILE", &s.database_url_file),
    )?
    .unwrap_or_else(|| (DEFAULT_DATABASE_URL.into(), "NOTIFD_DATABASE_URL"));
    // The parser's message names the part that is wrong, never the password.
    url.parse::<postgres::Config>()
        .map_err(|e| bad(variable, format!("not a PostgreSQL URL: {e}")))?;
    Ok(url)
}

/// `NOTIFD_REDIS_URL` (or the file `NOTIFD_REDIS_URL_FILE` names), checked to be a
/// Redis URL.
fn redis_url(s: &Settings) -> Result<String, ConfigError> {
    let (url, variable) = value_or_file(
        ("NOTIFD_REDIS_URL", &s.redis_url),
        ("NOTIFD_REDIS_URL_FILE", &s.redis_url_file),
    )?
    .unwrap_or_else(|| (DEFAULT_REDIS_URL.into(), "NOTIFD_REDIS_URL"));
    redis::Client::open(url.as_str())
        .map_err(|e| bad(variable, format!("not a Redis URL: {e}")))?;
    Ok(url)
}

/// A value given directly or in a file (`…_FILE`, for values that hold a password:
/// systemd credentials, Docker and Kubernetes secrets are files). Returns the value
/// and the variable it came from, for later messages; `None` when neither is set.
/// Setting both is an error rather than a silent choice. A message names the file's
/// path, never its content.
fn value_or_file(
    (variable, value): (&'static str, &Option<String>),
    (file_variable, path): (&'static str, &Option<String>),
) -> Result<Option<(String, &'static str)>, ConfigError> {
    let value = value.as_ref().filter(|v| !v.is_empty());
    let path = path.as_ref().filter(|p| !p.is_empty());
    match (value, path) {
        (Some(_), Some(_)) => Err(bad(
            variable,
            format!("set either {variable} or {file_variable}, not both"),
        )),
        (Some(value), None) => Ok(Some((value.clone(), variable))),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| bad(file_variable, format!("cannot read {path}: {e}")))?;
            let text = text.trim_end_matches(['\r', '\n']);
            if text.is_empty() {
                return Err(bad(file_variable, format!("{path} is empty")));
            }
            Ok(Some((text.to_string(), file_variable)))
        }
        (None, None) => Ok(None),
    }
}

/// Descriptors kept for what is not a connection (the PostgreSQL and Redis pools,
/// listeners, epoll, logs) when the REST default is worked out.
pub const OTHER_DESCRIPTORS: usize = 512;

/// Fewest REST connections the default allows, however the WebSocket cap is set.
pub const MIN_HTTP_CONNECTIONS: usize = 256;

/// The default REST connection cap: the descriptors the WebSocket cap and the
/// reserve leave (one descriptor per REST connection), and never less than
/// `MIN_HTTP_CONNECTIONS` or a quarter of the limit, whichever is smaller.
pub fn default_http_max_connections(ws_max_connections: usize) -> usize {
    let limit = crate::process::fd_limit() as usize;
    limit
        .saturating_sub(ws_max_connections + OTHER_DESCRIPTORS)
        .max(MIN_HTTP_CONNECTIONS.min(limit / 4))
}

/// The WebSocket connection cap: `NOTIFD_MAX_CONNECTIONS` if the process's limits
/// allow that many, else (and by default) what they allow; with what was asked, when
/// that was lowered.
fn max_connections(s: &Settings) -> Result<(usize, Option<CapLowered>), ConfigError> {
    let allowed = crate::websocket::capacity::allowed(&crate::process::limits());
    match &s.max_connections {
        None => Ok((allowed.connections, None)),
        Some(v) => {
            let asked = parse_number("NOTIFD_MAX_CONNECTIONS", v, 1)?;
            Ok(if asked > allowed.connections {
                let limit = allowed.limit;
                (allowed.connections, Some(CapLowered { asked, limit }))
            } else {
                (asked, None)
            })
        }
    }
}

/// `NOTIFD_CONNECTIONS_PER_USER`: 1 to `MAX_CONNECTIONS_PER_USER`.
fn connections_per_user(s: &Settings) -> Result<usize, ConfigError> {
    const VARIABLE: &str = "NOTIFD_CONNECTIONS_PER_USER";
    let Some(text) = &s.connections_per_user else {
        return Ok(DEFAULT_CONNECTIONS_PER_USER);
    };
    let n = parse_number(VARIABLE, text, 1)?;
    if n > MAX_CONNECTIONS_PER_USER {
        return Err(bad(VARIABLE, format!("at most {MAX_CONNECTIONS_PER_USER}")));
    }
    Ok(n)
}

fn parse_addr(
    variable: &'static str,
    value: Option<&str>,
    default: &str,
) -> Result<SocketAddr, ConfigError> {
    let text = value.unwrap_or(default);
    text.to_socket_addrs()
        .map_err(|e| bad(variable, format!("not a listen address {text:?}: {e}")))?
        .next()
        .ok_or_else(|| bad(variable, format!("{text:?} resolves to no address")))
}

/// Parses `30s`, `5m`, `1h`, `250ms` or plain seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("not a duration {text:?} (use 30s, 5m, 1h or seconds)"))?;
    let duration = match unit {
        "" | "s" => Duration::from_secs(number),
        "ms" => Duration::from_millis(number),
        "m" => Duration::from_secs(number.saturating_mul(60)),
        "h" => Duration::from_secs(number.saturating_mul(3600)),
        _ => return Err(format!("unknown unit in {text:?} (use ms, s, m or h)")),
    };
    // Deadlines are `Instant + duration`: past this they would overflow.
    if duration > MAX_DURATION {
        return Err(format!(
            "{text:?} is longer than {} days",
            MAX_DURATION.as_secs() / 86_400
        ));
    }
    Ok(duration)
}

/// Longest duration any setting takes (ten years).
const MAX_DURATION: Duration = Duration::from_secs(10 * 365 * 86_400);

fn duration_or(
    variable: &'static str,
    value: &Option<String>,
    default: Duration,
) -> Result<Duration, ConfigError> {
    match value {
        None => Ok(default),
        Some(text) => match parse_duration(text) {
            Ok(d) if d.is_zero() => Err(bad(variable, "must be greater than zero")),
            Ok(d) => Ok(d),
            Err(problem) => Err(bad(variable, problem)),
        },
    }
}

fn parse_number<T: std::str::FromStr + PartialOrd + Copy + std::fmt::Display>(
    variable: &'static str,
    text: &str,
    min: T,
) -> Result<T, ConfigError> {
    let n: T = text
        .trim()
        .parse()
        .map_err(|_| bad(variable, format!("not a whole number: {text:?}")))?;
    if n < min {
        return Err(bad(variable, format!("must be at least {min}")));
    }
    Ok(n)
}

fn parse_list(text: Option<&str>) -> Vec<String> {
    text.unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

fn parse_log_filter(text: Option<&str>) -> Result<crate::logging::Filter, ConfigError> {
    crate::logging::Filter::parse(text.unwrap_or("info"))
        .map_err(|problem| bad("NOTIFD_LOG", problem))
}

fn parse_log_format(text: Option<&str>) -> Result<LogFormat, ConfigError> {
    match text.unwrap_or("text") {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        other => Err(bad(
            "NOTIFD_LOG_FORMAT",
            format!("{other:?} is neither text nor json"),
        )),
    }
}

fn parse_jwt(s: &Settings) -> Result<JwtConfig, ConfigError> {
    use jsonwebtoken::Algorithm::*;
    let name = s.jwt_algorithm.as_deref().unwrap_or(DEFAULT_JWT_ALGORITHM);
    let algorithm: jsonwebtoken::Algorithm = name.parse().map_err(|_| {
        bad(
            "NOTIFD_JWT_ALGORITHM",
            format!("unknown algorithm {name:?}"),
        )
    })?;
    let key = match algorithm {
        HS256 | HS384 | HS512 => JwtKey::Secret(read_secret(s)?),
        _ => {
            let path = s
                .jwt_public_key_file
                .as_deref()
                .ok_or_else(|| bad("NOTIFD_JWT_PUBLIC_KEY_FILE", format!("required for {name}")))?;
            let pem = std::fs::read(path).map_err(|e| {
                bad(
                    "NOTIFD_JWT_PUBLIC_KEY_FILE",
                    format!("cannot read {path}: {e}"),
                )
            })?;
            JwtKey::PublicKeyPem(pem)
        }
    };
    let config = JwtConfig {
        algorithm,
        key,
        issuer: s.jwt_issuer.clone().filter(|v| !v.is_empty()),
        audience: s.jwt_audience.clone().filter(|v| !v.is_empty()),
        leeway: match &s.jwt_leeway {
            Some(text) => parse_duration(text).map_err(|p| bad("NOTIFD_JWT_LEEWAY", p))?,
            None => DEFAULT_JWT_LEEWAY,
        },
    };
    // Build the verifier once now so a key that does not parse stops start-up here.
    crate::auth::Verifier::new(&config).map_err(|problem| {
        let variable = match config.key {
            JwtKey::Secret(_) => "NOTIFD_JWT_SECRET",
            JwtKey::PublicKeyPem(_) => "NOTIFD_JWT_PUBLIC_KEY_FILE",
        };
        bad(variable, problem)
    })?;
    Ok(config)
}

fn read_secret(s: &Settings) -> Result<Vec<u8>, ConfigError> {
    let (secret, variable) = value_or_file(
        ("NOTIFD_JWT_SECRET", &s.jwt_secret),
        ("NOTIFD_JWT_SECRET_FILE", &s.jwt_secret_file),
    )?
    .ok_or_else(|| {
        bad(
            "NOTIFD_JWT_SECRET",
            "required for HS* algorithms (or set NOTIFD_JWT_SECRET_FILE)",
        )
    })?;
    if secret.len() < 16 {
        return Err(bad(variable, "too short: use at least 16 bytes"));
    }
    Ok(secret.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_units_and_plain_seconds() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("5 minutes").is_err());
        assert!(
            parse_duration("99999999999999h").is_err(),
            "would overflow a deadline"
        );
        assert!(parse_duration("").is_err());
    }

    fn settings() -> Settings {
        Settings {
            jwt_secret: Some("0123456789abcdef0123".into()),
            ..Settings::default()
        }
    }

    #[test]
    fn defaults_apply() {
        let config = Config::from_settings(&settings()).expect("defaults are valid");
        assert_eq!(config.http_addr.port(), 8080);
        assert_eq!(config.ws_addr.port(), 8081);
        assert_eq!(config.ping_interval, DEFAULT_PING_INTERVAL);
        assert_eq!(config.retention_days, None);
        assert_eq!(config.idempotency_window, Duration::from_secs(86_400));
    }

    #[test]
    fn errors_name_the_variable() {
        let mut s = settings();
        s.http_addr = Some("not-an-address".into());
        let err = Config::from_settings(&s).unwrap_err();
        assert_eq!(err.variable, "NOTIFD_HTTP_ADDR");

        let mut s = settings();
        s.jwt_secret = None;
        assert_eq!(
            Config::from_settings(&s).unwrap_err().variable,
            "NOTIFD_JWT_SECRET"
        );

        let mut s = settings();
        s.jwt_algorithm = Some("RS256".into());
        s.jwt_public_key_file = Some("/nonexistent/key.pem".into());
        let err = Config::from_settings(&s).unwrap_err();
        assert_eq!(err.variable, "NOTIFD_JWT_PUBLIC_KEY_FILE");
        assert!(err.to_string().contains("cannot read"), "{err}");

        let mut s = settings();
        s.idle_timeout = Some("5 minutes".into());
        assert_eq!(
            Config::from_settings(&s).unwrap_err().variable,
            "NOTIFD_IDLE_TIMEOUT"
        );

        let mut s = settings();
        s.retention_days = Some("4294967295".into());
        let err = Config::from_settings(&s).unwrap_err();
        assert_eq!(err.variable, "NOTIFD_RETENTION_DAYS");
        assert!(err.to_string().contains("at most 36500"), "{err}");

        let mut s = settings();
        s.idempotency_window = Some("0".into());
        assert_eq!(
            Config::from_settings(&s).unwrap_err().variable,
            "NOTIFD_IDEMPOTENCY_WINDOW"
        );

        let mut s = settings();
        s.metrics_addr = Some("private:metrics".into());
        assert_eq!(
            Config::from_settings(&s).unwrap_err().variable,
            "NOTIFD_METRICS_ADDR"
        );
    }

    #[test]
    fn a_connection_cap_over_the_limits_is_lowered_and_says_which() {
        let allowed = crate::websocket::capacity::allowed(&crate::process::limits());
        let config = Config::from_settings(&settings()).expect("valid");
        assert!(
            config.max_connections <= allowed.connections + 64,
            "{config:?}"
        );
        assert_eq!(config.max_connections_lowered, None);
        let mut s = settings();
        s.max_connections = Some("100000000".into());
        let config = Config::from_settings(&s).expect("valid");
        assert!(config.max_connections < 100_000_000);
        let lowered = config.max_connections_lowered.expect("lowered");
        assert_eq!(lowered.asked, 100_000_000);
        assert!(!lowered.limit.is_empty());
        s.max_connections = Some("7".into());
        let config = Config::from_settings(&s).expect("valid");
        assert_eq!(config.max_connections, 7);
        assert_eq!(config.max_connections_lowered, None);
    }

    #[test]
    fn connections_per_user_defaults_to_5_and_takes_1_to_1000() {
        let mut s = settings();
        let config = Config::from_settings(&s).expect("valid");
        assert_eq!(config.connections_per_user, DEFAULT_CONNECTIONS_PER_USER);
        assert_eq!(DEFAULT_CONNECTIONS_PER_USER, 5);
        for (text, n) in [("1", 1), (" 7 ", 7), ("1000", 1000)] {
            s.connections_per_user = Some(text.into());
            let config = Config::from_settings(&s).expect(text);
            assert_eq!(config.connections_per_user, n, "{text:?}");
        }
        for (text, problem) in [
            ("0", "must be at least 1"),
            ("1001", "at most 1000"),
            ("five", "not a whole number"),
            ("-1", "not a whole number"),
        ] {
            s.connections_per_user = Some(text.into());
            let err = Config::from_settings(&s).unwrap_err();
            assert_eq!(err.variable, "NOTIFD_CONNECTIONS_PER_USER", "{text:?}");
            assert!(err.problem.contains(problem), "{text:?}: {err}");
        }
    }

    #[test]
    fn a_metrics_address_is_optional() {
        let mut s = settings();
        assert_eq!(Config::from_settings(&s).expect("valid").metrics_addr, None);
        s.metrics_addr = Some(" ".into());
        assert_eq!(Config::from_settings(&s).expect("valid").metrics_addr, None);
        s.metrics_addr = Some("127.0.0.1:9100".into());
        let addr = Config::from_settings(&s).expect("valid").metrics_addr;
        assert_eq!(addr.map(|a| a.port()), Some(9100));
    }
}
