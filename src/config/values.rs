//! The value parsers of `Config`: URLs (or the files naming them), addresses,
//! durations, numbers with bounds, lists, the log settings and the connection caps.
//! Each fails with one `ConfigError` naming its variable.

use super::*;

/// `NOTIFD_DATABASE_URL` (or the file `NOTIFD_DATABASE_URL_FILE` names), checked
/// to be a PostgreSQL URL.
pub(super) fn database_url(s: &Settings) -> Result<String, ConfigError> {
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
pub(super) fn redis_url(s: &Settings) -> Result<String, ConfigError> {
    let (url, variable) = value_or_file(
        ("NOTIFD_REDIS_URL", &s.redis_url),
        ("NOTIFD_REDIS_URL_FILE", &s.redis_url_file),
    )?
    .unwrap_or_else(|| (DEFAULT_REDIS_URL.into(), "NOTIFD_REDIS_URL"));
    crate::redis_link::Redis::open(url.as_str())
        .map_err(|e| bad(variable, format!("not a Redis URL: {e}")))?;
    Ok(url)
}

/// A value given directly or in a file (`…_FILE`, for values that hold a password:
/// systemd credentials, Docker and Kubernetes secrets are files). Returns the value
/// and the variable it came from, for later messages; `None` when neither is set.
/// Setting both is an error rather than a silent choice. A message names the file's
/// path, never its content.
pub(super) fn value_or_file(
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
pub(super) fn max_connections(s: &Settings) -> Result<(usize, Option<CapLowered>), ConfigError> {
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
pub(super) fn connections_per_user(s: &Settings) -> Result<usize, ConfigError> {
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

pub(super) fn parse_addr(
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
pub(super) const MAX_DURATION: Duration = Duration::from_secs(10 * 365 * 86_400);

pub(super) fn duration_or(
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

pub(super) fn parse_number<T: std::str::FromStr + PartialOrd + Copy + std::fmt::Display>(
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

pub(super) fn parse_list(text: Option<&str>) -> Vec<String> {
    text.unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

pub(super) fn parse_log_filter(text: Option<&str>) -> Result<crate::logging::Filter, ConfigError> {
    crate::logging::Filter::parse(text.unwrap_or("info"))
        .map_err(|problem| bad("NOTIFD_LOG", problem))
}

pub(super) fn parse_log_format(text: Option<&str>) -> Result<LogFormat, ConfigError> {
    match text.unwrap_or("text") {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        other => Err(bad(
            "NOTIFD_LOG_FORMAT",
            format!("{other:?} is neither text nor json"),
        )),
    }
}
