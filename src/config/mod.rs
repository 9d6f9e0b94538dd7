//! `Config`: every setting, parsed and validated once at start-up.
//!
//! `cli::Settings` holds the raw strings from flags and `NOTIFD_*` variables; this
//! module turns them into typed values and fails with one line naming the variable
//! and the problem. Tests build `Settings` directly (`tests/common::settings`) and call
//! `Config::from_settings` instead of going through the environment.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use crate::cli::Settings;

mod jwt;
#[cfg(test)]
mod tests;
mod values;

use jwt::parse_jwt;
use values::*;
pub use values::{
    default_http_max_connections, parse_duration, MIN_HTTP_CONNECTIONS, OTHER_DESCRIPTORS,
};

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
