//! The logger: one line per event on stderr (journald), as `key=value` text or JSON.
//!
//! Each line names its source module (the `log` record's target). Under systemd
//! (`JOURNAL_STREAM` set) each line starts with its syslog priority (`<3>` … `<7>`),
//! which journald strips and stores, so `journalctl -p warning` works. Levels are
//! per module ([`Filter`]: `NOTIFD_LOG=info,notifd::store=debug`).
//!
//! Call sites pass structured fields through `log`'s key-value syntax
//! (`info!(user = id; "ws opened")`). No call site passes a token, a secret or payload
//! content; `tests/smoke.rs` checks that in both formats.

use std::io::Write;

use log::kv::{Key, Value, VisitSource};
use log::{Level, LevelFilter, Log, Metadata, Record};

use crate::config::LogFormat;

/// Crates whose debug lines carry request data; see `Filter::level_for`.
const QUIET_UNLESS_NAMED: [&str; 2] = ["tokio_postgres", "postgres"];

/// A default level and per-module levels; the longest matching module prefix wins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    default: LevelFilter,
    /// `(module, level)`, longest module first, so the first match is the longest.
    modules: Vec<(String, LevelFilter)>,
}

impl Filter {
    /// Parses `LEVEL` and `module=LEVEL` items separated by commas, e.g.
    /// `info,notifd::store=debug`. Without a bare level the default is info.
    pub fn parse(text: &str) -> Result<Filter, String> {
        let mut default = None;
        let mut modules: Vec<(String, LevelFilter)> = Vec::new();
        for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            match item.split_once('=') {
                None if default.is_some() => return Err(format!("two default levels in {text:?}")),
                None => default = Some(level(item)?),
                Some((module, value)) => {
                    let module = module.trim();
                    if module.is_empty()
                        || !module
                            .chars()
                            .all(|c| c.is_alphanumeric() || c == '_' || c == ':')
                    {
                        return Err(format!(
                            "{module:?} is not a module path (like notifd::store)"
                        ));
                    }
                    modules.push((module.to_string(), level(value.trim())?));
                }
            }
        }
        modules.sort_by_key(|(module, _)| std::cmp::Reverse(module.len()));
        Ok(Filter {
            default: default.unwrap_or(LevelFilter::Info),
            modules,
        })
    }

    /// The level for records of `target` (a module path such as `notifd::store::pool`).
    pub fn level_for(&self, target: &str) -> LevelFilter {
        let within = |module: &str| {
            target == module
                || target
                    .strip_prefix(module)
                    .is_some_and(|rest| rest.starts_with("::"))
        };
        if let Some((_, level)) = self.modules.iter().find(|(module, _)| within(module)) {
            return *level;
        }
        // The PostgreSQL client logs each statement with its parameters at debug
        // (notification payloads, user ids): those stay out of the log unless the
        // operator names the client's module.
        if QUIET_UNLESS_NAMED.iter().any(|module| within(module)) {
            return self.default.min(LevelFilter::Info);
        }
        self.default
    }

    /// The most verbose level any module gets: `log`'s global cut-off.
    fn max(&self) -> LevelFilter {
        self.modules
            .iter()
            .map(|(_, level)| *level)
            .fold(self.default, Ord::max)
    }
}

impl Default for Filter {
    fn default() -> Filter {
        Filter::from(LevelFilter::Info)
    }
}

/// One level for every module.
impl From<LevelFilter> for Filter {
    fn from(default: LevelFilter) -> Filter {
        Filter {
            default,
            modules: Vec::new(),
        }
    }
}

/// As it would be written in `NOTIFD_LOG` (for `notifd check-config`).
impl std::fmt::Display for Filter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.default.as_str().to_lowercase())?;
        for (module, level) in &self.modules {
            write!(f, ",{module}={}", level.as_str().to_lowercase())?;
        }
        Ok(())
    }
}

fn level(text: &str) -> Result<LevelFilter, String> {
    text.parse()
        .map_err(|_| format!("{text:?} is not a level: use error, warn, info, debug, trace or off"))
}

struct Logger {
    format: LogFormat,
    filter: Filter,
    /// Prefix lines with their syslog priority: stderr goes to journald.
    journald: bool,
}

/// Installs the process logger. Later calls are ignored (tests start many servers).
pub fn init(filter: impl Into<Filter>, format: LogFormat) {
    let filter = filter.into();
    // systemd sets JOURNAL_STREAM when it connects stderr to the journal.
    let journald = std::env::var_os("JOURNAL_STREAM").is_some_and(|v| !v.is_empty());
    let max = filter.max();
    let logger = Logger {
        format,
        filter,
        journald,
    };
    if log::set_boxed_logger(Box::new(logger)).is_ok() {
        log::set_max_level(max);
    }
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= self.filter.level_for(metadata.target())
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let mut line = if self.journald {
            priority(record.level()).to_string()
        } else {
            String::new()
        };
        match self.format {
            LogFormat::Text => text_line(&mut line, record),
            LogFormat::Json => json_line(&mut line, record),
        }
        line.push('\n');
        // One write per line so concurrent threads never interleave within a line.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {}
}

/// The syslog priority prefix journald understands (sd-daemon(3)).
fn priority(level: Level) -> &'static str {
    match level {
        Level::Error => "<3>",
        Level::Warn => "<4>",
        Level::Info => "<6>",
        Level::Debug | Level::Trace => "<7>",
    }
}

fn now() -> String {
    crate::notification::format_timestamp(time::OffsetDateTime::now_utc())
}

/// `ts LEVEL msg module=… key=value…`
fn text_line(line: &mut String, record: &Record) {
    struct Fields<'a>(&'a mut String);
    impl<'kvs> VisitSource<'kvs> for Fields<'_> {
        fn visit_pair(&mut self, key: Key<'kvs>, value: Value<'kvs>) -> Result<(), log::kv::Error> {
            let value = value.to_string();
            if value.is_empty() || value.contains([' ', '"', '=', '\n', '\r']) {
                self.0.push_str(&format!(" {key}={value:?}"));
            } else {
                self.0.push_str(&format!(" {key}={value}"));
            }
            Ok(())
        }
    }
    // A message with a line break (the postgres crate logs SQL at debug) would
    // become several lines, each with its own priority for journald: escape it.
    let message = record.args().to_string();
    let message = if message.contains(['\n', '\r']) {
        message.replace('\r', "\\r").replace('\n', "\\n")
    } else {
        message
    };
    line.push_str(&format!(
        "{} {:<5} {message} module={}",
        now(),
        record.level(),
        record.target()
    ));
    let _ = record.key_values().visit(&mut Fields(line));
}

/// `{"ts":…,"level":…,"msg":…,"module":…, then the fields}`: written by hand because
/// a `serde_json::Map` sorts its keys, and readers scan for the first three.
fn json_line(line: &mut String, record: &Record) {
    struct Fields<'a>(&'a mut String);
    impl<'kvs> VisitSource<'kvs> for Fields<'_> {
        fn visit_pair(&mut self, key: Key<'kvs>, value: Value<'kvs>) -> Result<(), log::kv::Error> {
            let json = if let Some(n) = value.to_i64() {
                serde_json::Value::from(n)
            } else if let Some(n) = value.to_u64() {
                serde_json::Value::from(n)
            } else if let Some(f) = value.to_f64() {
                serde_json::Value::from(f)
            } else {
                serde_json::Value::from(value.to_string())
            };
            push_pair(self.0, key.as_str(), &json);
            Ok(())
        }
    }
    line.push('{');
    push_pair(line, "ts", &now().into());
    push_pair(
        line,
        "level",
        &record.level().as_str().to_lowercase().into(),
    );
    push_pair(line, "msg", &record.args().to_string().into());
    push_pair(line, "module", &record.target().into());
    let _ = record.key_values().visit(&mut Fields(line));
    line.push('}');
}

/// Appends `"key":value`, with a comma unless it is the object's first pair.
fn push_pair(line: &mut String, key: &str, value: &serde_json::Value) {
    if !line.ends_with('{') {
        line.push(',');
    }
    line.push_str(&serde_json::Value::from(key).to_string());
    line.push(':');
    line.push_str(&value.to_string());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_longer_module_prefix_wins() {
        let filter = Filter::parse("info,notifd=debug,notifd::http=warn").expect("valid");
        assert_eq!(filter.level_for("notifd::store"), LevelFilter::Debug);
        assert_eq!(
            filter.level_for("notifd::http::connection"),
            LevelFilter::Warn
        );
        assert_eq!(filter.level_for("notifd::http"), LevelFilter::Warn);
        assert_eq!(filter.level_for("notifd_other"), LevelFilter::Info);
        assert_eq!(
            filter.level_for("tokio_postgres::connection"),
            LevelFilter::Info
        );
        assert_eq!(filter.max(), LevelFilter::Debug);
        assert_eq!(filter.to_string(), "info,notifd::http=warn,notifd=debug");
    }

    #[test]
    fn the_postgresql_client_stays_at_info_unless_named() {
        let debug = Filter::parse("debug").expect("valid");
        assert_eq!(debug.level_for("tokio_postgres::query"), LevelFilter::Info);
        assert_eq!(debug.level_for("notifd::store"), LevelFilter::Debug);
        let warn = Filter::parse("warn").expect("valid");
        assert_eq!(warn.level_for("tokio_postgres::query"), LevelFilter::Warn);
        let named = Filter::parse("debug,tokio_postgres=trace").expect("valid");
        assert_eq!(named.level_for("tokio_postgres::query"), LevelFilter::Trace);
    }

    #[test]
    fn a_bare_level_is_the_default() {
        assert_eq!(
            Filter::parse("warn").expect("valid").level_for("x"),
            LevelFilter::Warn
        );
        assert_eq!(
            Filter::parse("notifd=off").expect("valid").level_for("x"),
            LevelFilter::Info
        );
        assert_eq!(Filter::parse("").expect("valid"), Filter::default());
    }

    #[test]
    fn bad_filters_say_why() {
        for bad in [
            "loud",
            "info,debug",
            "notifd::store=loud",
            "=debug",
            "no spaces=info",
        ] {
            assert!(Filter::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
