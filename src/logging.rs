//! The logger: one line per event on stderr (journald), as `key=value` text or JSON.
//!
//! Call sites pass structured fields through `log`'s key-value syntax
//! (`info!(user = id; "ws opened")`). No call site passes a token, a secret or payload
//! content; `tests/smoke.rs` checks that in both formats.

use std::io::Write;

use log::kv::{Key, Value, VisitSource};
use log::{Log, Metadata, Record};

use crate::config::LogFormat;

struct Logger {
    format: LogFormat,
}

/// Installs the process logger. Later calls are ignored (tests start many servers).
pub fn init(level: log::LevelFilter, format: LogFormat) {
    if log::set_boxed_logger(Box::new(Logger { format })).is_ok() {
        log::set_max_level(level);
    }
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let line = match self.format {
            LogFormat::Text => text_line(record),
            LogFormat::Json => json_line(record),
        };
        // One write per line so concurrent threads never interleave within a line.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {}
}

fn text_line(record: &Record) -> String {
    struct Fields(String);
    impl<'kvs> VisitSource<'kvs> for Fields {
        fn visit_pair(&mut self, key: Key<'kvs>, value: Value<'kvs>) -> Result<(), log::kv::Error> {
            let value = value.to_string();
            if value.is_empty() || value.contains([' ', '"', '=']) {
                self.0.push_str(&format!(" {key}={value:?}"));
            } else {
                self.0.push_str(&format!(" {key}={value}"));
            }
            Ok(())
        }
    }
    let mut fields = Fields(String::new());
    let _ = record.key_values().visit(&mut fields);
    format!(
        "{} {:<5} {}{}\n",
        crate::notification::format_timestamp(time::OffsetDateTime::now_utc()),
        record.level(),
        record.args(),
        fields.0
    )
}

fn json_line(record: &Record) -> String {
    struct Fields(serde_json::Map<String, serde_json::Value>);
    impl<'kvs> VisitSource<'kvs> for Fields {
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
            self.0.insert(key.to_string(), json);
            Ok(())
        }
    }
    let mut fields = Fields(serde_json::Map::new());
    fields.0.insert(
        "ts".into(),
        crate::notification::format_timestamp(time::OffsetDateTime::now_utc()).into(),
    );
    fields.0.insert(
        "level".into(),
        record.level().as_str().to_lowercase().into(),
    );
    fields
        .0
        .insert("msg".into(), record.args().to_string().into());
    let _ = record.key_values().visit(&mut fields);
    let mut line = serde_json::Value::Object(fields.0).to_string();
    line.push('\n');
    line
}
