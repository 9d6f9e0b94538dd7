//! The notification: the one JSON shape of the contract (§1), used by REST responses,
//! Redis messages and WebSocket frames alike.
//!
//! This module owns the value and its wire form (aliases included). Validation of a
//! create request lives in `validate`; persistence in `store`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::OffsetDateTime;
use uuid::Uuid;

/// Largest serialized notification, in bytes (contract §1).
pub const MAX_SERIALIZED_BYTES: usize = 64 * 1024;

/// The level shown to people (`type` on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Info,
    Success,
    Warning,
    Error,
    Alert,
}

impl Level {
    pub const NAMES: &'static str = "info, success, warning, error, alert";

    pub fn parse(text: &str) -> Option<Level> {
        Some(match text {
            "info" => Level::Info,
            "success" => Level::Success,
            "warning" => Level::Warning,
            "error" => Level::Error,
            "alert" => Level::Alert,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Level::Info => "info",
            Level::Success => "success",
            Level::Warning => "warning",
            Level::Error => "error",
            Level::Alert => "alert",
        }
    }
}

/// One stored notification.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    /// UUIDv7: unique and time-ordered.
    pub id: Uuid,
    /// The recipient; `None`: the workspace audience (every user granted `workspace`,
    /// which is then set; contract §1 `audience`).
    pub user_id: Option<String>,
    /// `None`: user-level, delivered to every connection of the user.
    pub workspace: Option<String>,
    pub kind: String,
    pub level: Level,
    pub title: String,
    pub message: String,
    /// Always a JSON object.
    pub payload: Map<String, Value>,
    pub read_at: Option<OffsetDateTime>,
    /// First marked seen (the badge was opened).
    pub seen_at: Option<OffsetDateTime>,
    /// Archived: out of the default list and the counts.
    pub archived_at: Option<OffsetDateTime>,
    /// From this instant the notification is gone from every read path.
    pub expires_at: Option<OffsetDateTime>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

/// The wire form, borrowing from a `Notification` so serializing copies nothing twice.
#[derive(Serialize)]
struct Wire<'a> {
    id: &'a Uuid,
    user_id: Option<&'a str>,
    workspace: &'a Option<String>,
    audience: &'static str,
    kind: &'a str,
    #[serde(rename = "type")]
    level: Level,
    title: &'a str,
    message: &'a str,
    payload: &'a Map<String, Value>,
    metadata: &'a Map<String, Value>,
    read: bool,
    read_at: Option<String>,
    created_at: String,
    timestamp: String,
    updated_at: String,
    seen: bool,
    seen_at: Option<String>,
    archived_at: Option<String>,
    expires_at: Option<String>,
}

impl Serialize for Notification {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let created_at = format_timestamp(self.created_at);
        Wire {
            id: &self.id,
            user_id: self.user_id.as_deref(),
            workspace: &self.workspace,
            audience: match self.user_id {
                Some(_) => "user",
                None => "workspace",
            },
            kind: &self.kind,
            level: self.level,
            title: &self.title,
            message: &self.message,
            payload: &self.payload,
            metadata: &self.payload,
            read: self.read_at.is_some(),
            read_at: self.read_at.map(format_timestamp),
            timestamp: created_at.clone(),
            created_at,
            updated_at: format_timestamp(self.updated_at),
            seen: self.seen_at.is_some(),
            seen_at: self.seen_at.map(format_timestamp),
            archived_at: self.archived_at.map(format_timestamp),
            expires_at: self.expires_at.map(format_timestamp),
        }
        .serialize(serializer)
    }
}

impl Notification {
    /// True once `expires_at` has passed: what a delivery path asks before it sends
    /// a notification it queued earlier (one comparison, no clock read without expiry).
    pub fn is_expired(&self) -> bool {
        self.expires_at
            .is_some_and(|at| at <= OffsetDateTime::now_utc())
    }

    /// The JSON text of §1.
    pub fn to_json(&self) -> String {
        // Serializing plain strings, maps and numbers cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// The fields of a wire notification that routing needs: who gets it, and where it
/// sits in time order. Parsed from Redis messages without touching the rest.
#[derive(Debug, Clone, Deserialize)]
pub struct Envelope {
    pub id: Uuid,
    /// `None`: the workspace audience.
    pub user_id: Option<String>,
    pub workspace: Option<String>,
    /// When it expires (RFC 3339), if it does: a frame queued for delivery is dropped
    /// from this instant (`Envelope::expires`).
    #[serde(default)]
    pub expires_at: Option<String>,
}

impl Envelope {
    /// When it expires, if it does. A wire timestamp that does not parse (not
    /// notifd's) counts as none: delivery errs on the side of delivering.
    pub fn expires(&self) -> Option<OffsetDateTime> {
        self.expires_at.as_deref().and_then(parse_timestamp)
    }
}

/// Milliseconds since the epoch encoded in a UUIDv7 (its first 48 bits).
pub fn id_millis(id: &Uuid) -> u64 {
    (id.as_u128() >> 80) as u64
}

/// The creation time of a notification: the millisecond its UUIDv7 id carries.
///
/// Deriving `created_at` from the id makes `(created_at, id)` order and id order the
/// same thing, so an id alone is an exact position (`since=`, catch-up after a Redis
/// outage) and a Redis message needs nothing beyond the JSON of §1.
pub fn created_at_of(id: &Uuid) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(id_millis(id)) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// The smallest possible id at millisecond `millis`: a lower bound for positions.
pub fn floor_id(millis: u64) -> Uuid {
    Uuid::from_u128(u128::from(millis) << 80)
}

/// Now, truncated to the microsecond PostgreSQL keeps, so a `read_at`/`updated_at`
/// written from it reads back exactly as written.
pub fn now() -> OffsetDateTime {
    let now = OffsetDateTime::now_utc();
    let micros = now.nanosecond() / 1_000 * 1_000;
    now.replace_nanosecond(micros).unwrap_or(now)
}

/// RFC 3339 UTC with milliseconds: `2026-03-03T10:30:45.123Z`.
pub fn format_timestamp(at: OffsetDateTime) -> String {
    const FORMAT: &[time::format_description::BorrowedFormatItem<'static>] = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    at.to_offset(time::UtcOffset::UTC)
        .format(FORMAT)
        .unwrap_or_default()
}

/// An RFC 3339 timestamp with its offset (`2026-03-03T10:30:45Z`,
/// `2026-03-03T12:30:45.5+02:00`).
pub fn parse_timestamp(text: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Notification {
        let at = time::macros::datetime!(2026-03-03 10:30:45.123456 UTC);
        Notification {
            id: Uuid::now_v7(),
            user_id: Some("alice".into()),
            workspace: Some("acme".into()),
            kind: "JOB_FAILED".into(),
            level: Level::Error,
            title: "Job failed".into(),
            message: String::new(),
            payload: serde_json::json!({"job_id": "42"})
                .as_object()
                .cloned()
                .unwrap_or_default(),
            read_at: None,
            seen_at: None,
            archived_at: Some(at),
            expires_at: None,
            created_at: at,
            updated_at: at,
        }
    }

    #[test]
    fn wire_form_has_every_field_and_alias() {
        let value: Value = serde_json::from_str(&sample().to_json()).expect("valid JSON");
        assert_eq!(value["type"], "error");
        assert_eq!(value["payload"], value["metadata"]);
        assert_eq!(value["read"], false);
        assert_eq!(value["read_at"], Value::Null);
        assert_eq!(value["created_at"], "2026-03-03T10:30:45.123Z");
        assert_eq!(value["timestamp"], value["created_at"]);
        assert_eq!(value["workspace"], "acme");
        assert_eq!(value["seen"], false);
        assert_eq!(value["seen_at"], Value::Null);
        assert_eq!(value["archived_at"], "2026-03-03T10:30:45.123Z");
        assert_eq!(value["expires_at"], Value::Null);
        assert_eq!(value["audience"], "user");
    }

    #[test]
    fn a_workspace_audience_has_no_user() {
        let mut n = sample();
        n.user_id = None;
        let value: Value = serde_json::from_str(&n.to_json()).expect("valid JSON");
        assert_eq!(value["audience"], "workspace");
        assert_eq!(value["user_id"], Value::Null);
        let envelope: Envelope = serde_json::from_str(&n.to_json()).expect("parses");
        assert_eq!(envelope.user_id, None);
    }

    #[test]
    fn expiry_is_on_the_wire_and_checked_cheaply() {
        let mut n = sample();
        n.expires_at = Some(OffsetDateTime::now_utc() - time::Duration::seconds(1));
        assert!(n.is_expired());
        let envelope: Envelope = serde_json::from_str(&n.to_json()).expect("parses");
        assert!(envelope
            .expires()
            .is_some_and(|at| at <= OffsetDateTime::now_utc()));
        n.expires_at = Some(OffsetDateTime::now_utc() + time::Duration::hours(1));
        assert!(!n.is_expired());
        let envelope: Envelope = serde_json::from_str(&n.to_json()).expect("parses");
        assert!(envelope
            .expires()
            .is_none_or(|at| at > OffsetDateTime::now_utc()));
    }

    #[test]
    fn envelope_reads_the_routing_fields() {
        let n = sample();
        let envelope: Envelope = serde_json::from_str(&n.to_json()).expect("parses");
        assert_eq!(envelope.id, n.id);
        assert_eq!(envelope.user_id.as_deref(), Some("alice"));
        assert_eq!(envelope.workspace.as_deref(), Some("acme"));
    }
}
