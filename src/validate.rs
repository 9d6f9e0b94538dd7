//! Validation of a create request (`POST /v1/internal/notifications`): turns a JSON
//! body into a `Notification` or a 4xx naming the offending field.
//!
//! Comes after `api` has read and size-checked the body; the result goes to `store`.
//!
//! NUL (`\u0000`) is refused in every string of a create, object keys of the payload
//! included: PostgreSQL's `text` and `jsonb` cannot hold it, and storing it escaped
//! would hand clients a different string than they sent.

use std::time::Duration;

use serde_json::{Map, Value};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::Error;
use crate::notification::{self, Level, Notification, MAX_SERIALIZED_BYTES};

const FIELDS: &[&str] = &[
    "audience",
    "user_id",
    "workspace",
    "kind",
    "type",
    "title",
    "message",
    "payload",
    "metadata",
    "expires_at",
    // Taken out by `api` before validation (it is not a field of the notification);
    // listed so the unknown-field message names it.
    "idempotency_key",
];
const MAX_USER_ID: usize = 255;
const MAX_KIND: usize = 64;
const MAX_WORKSPACE: usize = 128;
const MAX_TITLE: usize = 1024;

/// True for 1..=max characters of `[A-Za-z0-9_.:-]` (kinds and workspace slugs).
pub fn is_name(text: &str, max: usize) -> bool {
    !text.is_empty()
        && text.len() <= max
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
}

/// What a kind may be, as 4xx messages say it.
pub const KIND_RULE: &str = "must be 1 to 64 characters of A-Z a-z 0-9 _ . : -";

/// True for a notification kind.
pub fn is_kind(text: &str) -> bool {
    is_name(text, MAX_KIND)
}

/// What a workspace slug may be, as 4xx messages say it.
pub const WORKSPACE_RULE: &str = "must be 1 to 128 characters of A-Z a-z 0-9 _ . : -";

/// True for a workspace slug as a token or a query may name one.
pub fn is_workspace(text: &str) -> bool {
    is_name(text, MAX_WORKSPACE)
}

/// Builds a new notification from a create body; returns it with its JSON (serialized
/// once here, for the size check, and reused for Redis and the reply). `longest_expiry`
/// (the retention period, when one is set) bounds how far ahead `expires_at` may be.
pub fn new_notification(
    body: Value,
    longest_expiry: Option<Duration>,
) -> Result<(Notification, String), Error> {
    let Value::Object(mut fields) = body else {
        return Err(Error::BadJson("the body must be a JSON object".into()));
    };
    if let Some(unknown) = fields.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(Error::invalid(
            unknown.clone(),
            format!("unknown field; allowed: {}", FIELDS.join(", ")),
        ));
    }
    let audience = optional_string(&mut fields, "audience")?;
    let to_workspace = match audience.as_deref() {
        None | Some("user") => false,
        Some("workspace") => true,
        Some(_) => return Err(Error::invalid("audience", "must be user or workspace")),
    };
    let user_id = if to_workspace {
        if optional_string(&mut fields, "user_id")?.is_some() {
            return Err(Error::invalid(
                "user_id",
                "must be absent with audience workspace (every user granted the workspace sees it)",
            ));
        }
        None
    } else {
        Some(user_id(&mut fields)?)
    };
    let kind = required_string(&mut fields, "kind")?;
    if !is_kind(&kind) {
        return Err(Error::invalid("kind", KIND_RULE));
    }
    let workspace = optional_string(&mut fields, "workspace")?;
    match &workspace {
        Some(slug) if !is_workspace(slug) => {
            return Err(Error::invalid(
                "workspace",
                format!("{WORKSPACE_RULE} (or null for user-level)"),
            ));
        }
        None if to_workspace => {
            return Err(Error::invalid(
                "workspace",
                "is required with audience workspace",
            ));
        }
        _ => {}
    }
    let level = match optional_string(&mut fields, "type")? {
        None => Level::Info,
        Some(text) => Level::parse(&text)
            .ok_or_else(|| Error::invalid("type", format!("must be one of {}", Level::NAMES)))?,
    };
    let title = optional_string(&mut fields, "title")?.unwrap_or_else(|| kind.clone());
    if title.chars().count() > MAX_TITLE {
        return Err(Error::invalid(
            "title",
            format!("must be at most {MAX_TITLE} characters"),
        ));
    }
    let message = optional_string(&mut fields, "message")?.unwrap_or_default();
    let payload = payload(&mut fields)?;
    let id = Uuid::now_v7();
    let created_at = notification::created_at_of(&id);
    let expires_at = expires_at(&mut fields, created_at, longest_expiry)?;
    let notification = Notification {
        id,
        user_id,
        workspace,
        kind,
        level,
        title,
        message,
        payload,
        read_at: None,
        seen_at: None,
        archived_at: None,
        expires_at,
        created_at,
        updated_at: created_at,
    };
    let json = notification.to_json();
    let size = json.len();
    if size > MAX_SERIALIZED_BYTES {
        return Err(Error::TooLarge(format!(
            "payload: the notification would be {size} bytes serialized; the limit is {MAX_SERIALIZED_BYTES} \
             (payload is sent twice, as payload and metadata)"
        )));
    }
    Ok((notification, json))
}

/// `user_id` of a user-audience create: 1..255 characters, not starting with
/// `workspace:` (`{prefix}notifications:workspace:{slug}` is a workspace's channel,
/// contract §5, so such a user's channel would be a workspace's).
fn user_id(fields: &mut Map<String, Value>) -> Result<String, Error> {
    let user_id = required_string(fields, "user_id")?;
    if user_id.is_empty() || user_id.chars().count() > MAX_USER_ID {
        return Err(Error::invalid(
            "user_id",
            format!("must be 1 to {MAX_USER_ID} characters"),
        ));
    }
    if user_id.starts_with(crate::channels::WORKSPACE_MARK) {
        return Err(Error::invalid(
            "user_id",
            format!(
                "must not start with {:?}: that names a workspace's channel",
                crate::channels::WORKSPACE_MARK
            ),
        ));
    }
    Ok(user_id)
}

/// `expires_at`: RFC 3339 with an offset, after `now` and, with a retention period,
/// no later than `now` plus that period (the sweep would delete it before then).
/// Kept to the microsecond PostgreSQL stores, so the reply and a list agree.
fn expires_at(
    fields: &mut Map<String, Value>,
    now: OffsetDateTime,
    longest: Option<Duration>,
) -> Result<Option<OffsetDateTime>, Error> {
    const RULE: &str = "must be an RFC 3339 timestamp with an offset, e.g. 2026-03-03T10:30:00Z";
    let Some(text) = optional_string(fields, "expires_at")? else {
        return Ok(None);
    };
    let at =
        notification::parse_timestamp(&text).ok_or_else(|| Error::invalid("expires_at", RULE))?;
    let at = at
        .replace_nanosecond(at.nanosecond() / 1_000 * 1_000)
        .unwrap_or(at);
    if at <= now {
        return Err(Error::invalid("expires_at", "must be in the future"));
    }
    if let Some(longest) = longest {
        if at - now > longest {
            return Err(Error::invalid(
                "expires_at",
                format!(
                    "must be at most the retention period ({} days) ahead",
                    longest.as_secs() / 86_400
                ),
            ));
        }
    }
    Ok(Some(at))
}

fn required_string(fields: &mut Map<String, Value>, name: &str) -> Result<String, Error> {
    optional_string(fields, name)?.ok_or_else(|| Error::invalid(name, "is required"))
}

fn optional_string(fields: &mut Map<String, Value>, name: &str) -> Result<Option<String>, Error> {
    match fields.remove(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) if text.contains('\0') => Err(Error::invalid(name, NUL_RULE)),
        Some(Value::String(text)) => Ok(Some(text)),
        Some(other) => Err(Error::invalid(
            name,
            format!("must be a string, got {}", type_name(&other)),
        )),
    }
}

/// `payload` (or its alias `metadata`): a JSON object, or a string holding one (the
/// source document's gRPC form, where payload is a JSON string).
fn payload(fields: &mut Map<String, Value>) -> Result<Map<String, Value>, Error> {
    let (name, value) = match (fields.remove("payload"), fields.remove("metadata")) {
        (Some(_), Some(_)) => {
            return Err(Error::invalid(
                "metadata",
                "is an alias of payload: give one of them, not both",
            ))
        }
        (Some(value), None) => ("payload", value),
        (None, Some(value)) => ("metadata", value),
        (None, None) => {
            return Err(Error::invalid(
                "payload",
                "is required (use {} for no data)",
            ))
        }
    };
    let object = as_object(name, value)?;
    match nul_path(&object) {
        Some(path) => Err(Error::invalid(format!("{name}{path}"), NUL_RULE)),
        None => Ok(object),
    }
}

/// A JSON object, or a string holding one.
fn as_object(name: &str, value: Value) -> Result<Map<String, Value>, Error> {
    match value {
        Value::Object(object) => Ok(object),
        Value::String(text) => match serde_json::from_str::<Value>(&text) {
            Ok(Value::Object(object)) => Ok(object),
            Ok(other) => Err(Error::invalid(
                name,
                format!(
                    "must be a JSON object; the string holds {}",
                    type_name(&other)
                ),
            )),
            Err(_) => Err(Error::invalid(
                name,
                "must be a JSON object (or a string holding one); got a string that is not JSON",
            )),
        },
        other => Err(Error::invalid(
            name,
            format!("must be a JSON object, got {}", type_name(&other)),
        )),
    }
}

/// What 4xx messages say about NUL.
const NUL_RULE: &str = "must not contain the NUL character (\\u0000): PostgreSQL cannot store it";

/// The path (`.key`, `[index]`) inside `object` to the first key or string that
/// holds NUL, if any. Recursion is bounded: serde_json refuses documents nested
/// deeper than 128 levels.
fn nul_path(object: &Map<String, Value>) -> Option<String> {
    object.iter().find_map(|(key, value)| {
        let below = if key.contains('\0') {
            String::new()
        } else {
            nul_path_below(value)?
        };
        Some(format!(".{}{below}", key.escape_debug()))
    })
}

/// `nul_path` for any value: `Some("")` when `value` is itself a string with NUL.
fn nul_path_below(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => text.contains('\0').then(String::new),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, item)| Some(format!("[{i}]{}", nul_path_below(item)?))),
        Value::Object(object) => nul_path(object),
        _ => None,
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn field_of(result: Result<(Notification, String), Error>) -> String {
        match result {
            Err(Error::Invalid { field, .. }) => field,
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    #[test]
    fn defaults_fill_title_message_and_type() {
        let n = new_notification(
            json!({"user_id": "u", "kind": "JOB_FAILED", "payload": {}}),
            None,
        )
        .expect("valid")
        .0;
        assert_eq!(n.title, "JOB_FAILED");
        assert_eq!(n.message, "");
        assert_eq!(n.level, Level::Info);
        assert_eq!(n.workspace, None);
        assert_eq!(n.id.get_version_num(), 7);
    }

    #[test]
    fn payload_string_holding_an_object_is_accepted() {
        let n = new_notification(
            json!({"user_id": "u", "kind": "k", "payload": "{\"a\":1}"}),
            None,
        )
        .expect("valid")
        .0;
        assert_eq!(n.payload["a"], 1);
        let n = new_notification(
            json!({"user_id": "u", "kind": "k", "metadata": {"b": 2}}),
            None,
        )
        .expect("valid")
        .0;
        assert_eq!(n.payload["b"], 2);
    }

    #[test]
    fn each_bad_field_is_named() {
        let base = |extra: Value| {
            let mut body = json!({"user_id": "u", "kind": "k", "payload": {}});
            for (k, v) in extra.as_object().into_iter().flatten() {
                body[k] = v.clone();
            }
            new_notification(body, None)
        };
        assert_eq!(field_of(base(json!({"user_id": ""}))), "user_id");
        assert_eq!(
            field_of(base(json!({"user_id": "workspace:acme"}))),
            "user_id"
        );
        assert_eq!(field_of(base(json!({"audience": "team"}))), "audience");
        assert_eq!(
            field_of(base(json!({"audience": "workspace", "workspace": "acme"}))),
            "user_id",
            "a user with audience workspace"
        );
        assert_eq!(
            field_of(base(json!({"audience": "workspace", "user_id": null}))),
            "workspace",
            "audience workspace without a workspace"
        );
        assert_eq!(
            field_of(base(json!({"user_id": "x".repeat(256)}))),
            "user_id"
        );
        assert_eq!(field_of(base(json!({"kind": "has space"}))), "kind");
        assert_eq!(field_of(base(json!({"type": "fatal"}))), "type");
        assert_eq!(
            field_of(base(json!({"payload": "just a string"}))),
            "payload"
        );
        assert_eq!(field_of(base(json!({"payload": null}))), "payload");
        assert_eq!(
            field_of(base(json!({"payload": ["item1", "item2"]}))),
            "payload"
        );
        assert_eq!(field_of(base(json!({"surprise": 1}))), "surprise");
        assert_eq!(field_of(base(json!({"metadata": {}}))), "metadata");
    }

    #[test]
    fn nul_is_refused_in_every_string_and_named_by_its_path() {
        let base = json!({"user_id": "u", "kind": "k", "payload": {}});
        let with = |name: &str, value: Value| {
            let mut body = base.clone();
            body[name] = value;
            field_of(new_notification(body, None))
        };
        for name in ["user_id", "kind", "workspace", "type", "title", "message"] {
            assert_eq!(with(name, json!("a\u{0}b")), name);
        }
        let payload = |value: Value| with("payload", value);
        assert_eq!(payload(json!({"a": {"b": "x\u{0}"}})), "payload.a.b");
        assert_eq!(
            payload(json!({"a": [1, {"c": ["ok", "\u{0}"]}]})),
            "payload.a[1].c[1]"
        );
        assert_eq!(payload(json!({"ok": 1, "k\u{0}ey": 1})), "payload.k\\0ey");
        assert_eq!(payload(json!("{\"s\":\"\\u0000\"}")), "payload.s");
        let metadata = json!({"user_id": "u", "kind": "k", "metadata": {"m": "\u{0}"}});
        assert_eq!(field_of(new_notification(metadata, None)), "metadata.m");
        // Other control characters are ordinary text.
        assert!(new_notification(
            json!({"user_id": "u", "kind": "k", "title": "a\u{1}b",
            "payload": {"t": "tab\there"}}),
            None
        )
        .is_ok());
    }

    #[test]
    fn oversized_notification_is_refused() {
        let big = "x".repeat(40 * 1024);
        let result = new_notification(
            json!({"user_id": "u", "kind": "k", "payload": {"big": big}}),
            None,
        );
        assert!(matches!(result, Err(Error::TooLarge(_))), "{result:?}");
    }
}
