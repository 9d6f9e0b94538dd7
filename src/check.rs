//! `notifd check-config`: the settings notifd would run with, secrets masked, and
//! whether PostgreSQL and Redis answer, so an operator can check an edited env file
//! before restarting the service. It reads `Config` (already validated by
//! `config`) and changes nothing: no database is created, no migration applied.

use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use crate::cli::Settings;
use crate::config::{Config, JwtKey, LogFormat};

/// How long one dependency may take to connect and answer.
pub const DEPENDENCY_TIMEOUT: Duration = Duration::from_secs(5);

/// What replaces a password or a secret in the output.
const MASK: &str = "***";

/// Every setting as `(variable, effective value)`, defaults filled in and secrets
/// masked: the JWT secret by its length, passwords inside URLs by `***`.
pub fn settings(config: &Config, s: &Settings) -> Vec<(&'static str, String)> {
    let path = |p: &Option<String>| p.clone().unwrap_or_default();
    let or_empty = |v: Option<String>| v.unwrap_or_default();
    vec![
        (
            "NOTIFD_DATABASE_URL",
            mask_postgres_url(&config.database_url),
        ),
        ("NOTIFD_DATABASE_URL_FILE", path(&s.database_url_file)),
        ("NOTIFD_REDIS_URL", mask_redis_url(&config.redis_url)),
        ("NOTIFD_REDIS_URL_FILE", path(&s.redis_url_file)),
        ("NOTIFD_REDIS_PREFIX", config.redis_prefix.clone()),
        ("NOTIFD_HTTP_ADDR", config.http_addr.to_string()),
        ("NOTIFD_WS_ADDR", config.ws_addr.to_string()),
        (
            "NOTIFD_JWT_ALGORITHM",
            format!("{:?}", config.jwt.algorithm),
        ),
        ("NOTIFD_JWT_SECRET", masked_secret(&config.jwt.key)),
        ("NOTIFD_JWT_SECRET_FILE", path(&s.jwt_secret_file)),
        ("NOTIFD_JWT_PUBLIC_KEY_FILE", path(&s.jwt_public_key_file)),
        ("NOTIFD_JWT_ISSUER", or_empty(config.jwt.issuer.clone())),
        ("NOTIFD_JWT_AUDIENCE", or_empty(config.jwt.audience.clone())),
        ("NOTIFD_JWT_LEEWAY", duration(config.jwt.leeway)),
        ("NOTIFD_LOG", config.log_filter.to_string()),
        ("NOTIFD_LOG_FORMAT", log_format(config.log_format).into()),
        ("NOTIFD_PING_INTERVAL", duration(config.ping_interval)),
        ("NOTIFD_IDLE_TIMEOUT", duration(config.idle_timeout)),
        ("NOTIFD_MAX_CONNECTIONS", config.max_connections.to_string()),
        ("NOTIFD_CORS_ORIGINS", config.cors_origins.join(",")),
        (
            "NOTIFD_RETENTION_DAYS",
            or_empty(config.retention_days.map(|d| d.to_string())),
        ),
        (
            "NOTIFD_METRICS_ADDR",
            or_empty(config.metrics_addr.map(|a| a.to_string())),
        ),
        ("NOTIFD_HTTP_WORKERS", config.http_workers.to_string()),
        ("NOTIFD_HTTP_TIMEOUT", duration(config.http_timeout)),
        (
            "NOTIFD_HTTP_MAX_CONNECTIONS",
            config.http_max_connections.to_string(),
        ),
        ("NOTIFD_WS_QUEUE", config.ws_queue.to_string()),
        (
            "NOTIFD_CONNECTIONS_PER_USER",
            config.connections_per_user.to_string(),
        ),
        ("NOTIFD_DB_POOL_SIZE", config.db_pool_size.to_string()),
        (
            "NOTIFD_IDEMPOTENCY_WINDOW",
            duration(config.idempotency_window),
        ),
    ]
}

fn masked_secret(key: &JwtKey) -> String {
    match key {
        JwtKey::Secret(secret) => format!("{MASK} ({} bytes)", secret.len()),
        JwtKey::PublicKeyPem(_) => String::new(),
    }
}

fn log_format(format: LogFormat) -> &'static str {
    match format {
        LogFormat::Text => "text",
        LogFormat::Json => "json",
    }
}

/// A duration as a setting takes it: `250ms`, `30s`, `5m`, `1h`.
fn duration(d: Duration) -> String {
    let secs = d.as_secs();
    match secs {
        _ if d.subsec_millis() != 0 => format!("{}ms", d.as_millis()),
        0 => "0s".into(),
        _ if secs.is_multiple_of(3600) => format!("{}h", secs / 3600),
        _ if secs.is_multiple_of(60) => format!("{}m", secs / 60),
        _ => format!("{secs}s"),
    }
}

/// A PostgreSQL URL (or `key=value` string) without its password.
pub fn mask_postgres_url(url: &str) -> String {
    let masked = if url.contains("://") {
        mask_url(url)
    } else {
        mask_key_value(url)
    };
    // Whatever form the password took, its parsed value must not survive.
    let password = url.parse::<postgres::Config>().ok().and_then(|c| {
        c.get_password()
            .map(|p| String::from_utf8_lossy(p).to_string())
    });
    scrub(masked, password.as_deref())
}

/// A Redis URL without its password.
pub fn mask_redis_url(url: &str) -> String {
    let password = crate::redis_link::Redis::open(url)
        .ok()
        .and_then(|redis| redis.password().map(String::from));
    scrub(mask_url(url), password.as_deref())
}

fn scrub(text: String, password: Option<&str>) -> String {
    match password {
        Some(p) if !p.is_empty() && text.contains(p) => text.replace(p, MASK),
        _ => text,
    }
}

/// `scheme://user:PASSWORD@host…?password=…` with both passwords masked. The
/// authority ends at the first `/`, `?` or `#` (RFC 3986); the user part at its
/// last `@`.
fn mask_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let mut out = url[..scheme_end].to_string();
    match rest[..authority_end].rfind('@') {
        Some(at) => {
            // `user:password`; a lone `user` has no password to hide.
            match rest[..at].split_once(':') {
                Some((user, _)) => out.push_str(&format!("{user}:{MASK}")),
                None => out.push_str(&rest[..at]),
            }
            out.push_str(&rest[at..authority_end]);
        }
        None => out.push_str(&rest[..authority_end]),
    }
    out.push_str(&mask_query(&rest[authority_end..]));
    out
}

/// `?a=1&password=x` → `?a=1&password=***` (also `pass=`, as Redis's Unix URLs take).
fn mask_query(tail: &str) -> String {
    let Some((path, query)) = tail.split_once('?') else {
        return tail.to_string();
    };
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if matches!(key, "password" | "pass") => format!("{key}={MASK}"),
            _ => pair.to_string(),
        })
        .collect();
    format!("{path}?{}", pairs.join("&"))
}

/// `host=h password=x user=u` → `host=h password=*** user=u`.
fn mask_key_value(text: &str) -> String {
    text.split_whitespace()
        .map(|item| match item.split_once('=') {
            Some(("password", _)) => format!("password={MASK}"),
            _ => item.to_string(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Connects to PostgreSQL and runs `SELECT 1`. Ok holds what answered; a missing
/// database is fine when the server answers (`serve` and `migrate` create it).
pub fn postgresql(url: &str) -> Result<String, String> {
    bounded("postgresql", {
        let url = url.to_string();
        move || crate::store::check(&url, DEPENDENCY_TIMEOUT)
    })
}

/// Connects to Redis and sends PING.
pub fn redis(url: &str) -> Result<String, String> {
    bounded("redis", {
        let url = url.to_string();
        move || crate::publisher::check(&url, DEPENDENCY_TIMEOUT)
    })
}

/// Runs `check` on a thread of its own and gives up after twice the timeout: a
/// server that accepts the connection and then says nothing would otherwise hang.
fn bounded(
    name: &str,
    check: impl FnOnce() -> Result<String, String> + Send + 'static,
) -> Result<String, String> {
    let (send, receive) = mpsc::channel();
    thread::Builder::new()
        .name(format!("check-{name}"))
        .spawn(move || {
            let _ = send.send(check());
        })
        .map_err(|e| format!("cannot start the {name} check: {e}"))?;
    receive
        .recv_timeout(DEPENDENCY_TIMEOUT * 2)
        .unwrap_or_else(|_| Err(format!("no answer within {:?}", DEPENDENCY_TIMEOUT * 2)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_passwords_are_masked() {
        for (url, want) in [
            (
                "postgres://notifd:s3cret@db:5432/notifd",
                "postgres://notifd:***@db:5432/notifd",
            ),
            (
                "postgres://u:p%40ss@h/db?password=x&sslmode=disable",
                "postgres://u:***@h/db?password=***&sslmode=disable",
            ),
            (
                "postgres://postgres@127.0.0.1/db",
                "postgres://postgres@127.0.0.1/db",
            ),
            (
                "host=h password=s3cret user=u",
                "host=h password=*** user=u",
            ),
        ] {
            assert_eq!(mask_postgres_url(url), want);
        }
        for (url, want) in [
            (
                "redis://:s3cret@127.0.0.1:6379/0",
                "redis://:***@127.0.0.1:6379/0",
            ),
            (
                "redis://default:s3cret@h:6379",
                "redis://default:***@h:6379",
            ),
            ("redis://127.0.0.1:6379", "redis://127.0.0.1:6379"),
        ] {
            assert_eq!(mask_redis_url(url), want);
        }
    }

    #[test]
    fn durations_print_as_settings_take_them() {
        assert_eq!(duration(Duration::from_secs(30)), "30s");
        assert_eq!(duration(Duration::from_secs(300)), "5m");
        assert_eq!(duration(Duration::from_secs(86_400)), "24h");
        assert_eq!(duration(Duration::from_millis(250)), "250ms");
    }
}
