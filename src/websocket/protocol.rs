//! What a connection speaks: plain (each notification as the bare JSON of §1, nothing
//! else) or the event protocol `notifd.v1` (contract §3.1), chosen in the handshake by
//! `Sec-WebSocket-Protocol`, and how each frame is spelled in it.
//!
//! The handshake (before) asks [`offered`]; the session and the handle (after) frame
//! notifications with [`Protocol::notification`]. The state events themselves
//! (`updated`, `counts`) are `events::Event`s; a session's `view` decides which it gets.

use tungstenite::Utf8Bytes;
use uuid::Uuid;

/// The subprotocol's registered name.
pub const NAME: &str = "notifd.v1";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    #[default]
    Plain,
    V1,
}

impl Protocol {
    /// A notification's frame: `json` itself on a plain connection, wrapped in a
    /// `notification` event on a v1 one.
    pub fn notification(self, json: &Utf8Bytes) -> Utf8Bytes {
        match self {
            Protocol::Plain => json.clone(),
            Protocol::V1 => {
                format!("{{\"event\":\"notification\",\"notification\":{json}}}").into()
            }
        }
    }
}

/// Whether the client offered `notifd.v1` among its subprotocols (one header or
/// several, each a comma-separated list; names compare exactly, as RFC 6455 says).
pub fn offered<'a>(headers: impl IntoIterator<Item = &'a str>) -> bool {
    headers
        .into_iter()
        .flat_map(|value| value.split(','))
        .any(|name| name.trim() == NAME)
}

/// The `synced` event: history is complete up to `through` (the newest notification
/// this connection has, or null when it has none).
pub fn synced(through: Option<Uuid>) -> Utf8Bytes {
    serde_json::json!({"event": "synced", "through": through})
        .to_string()
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_name_in_any_list_selects_the_protocol() {
        assert!(offered(["notifd.v1"]));
        assert!(offered(["graphql-ws, notifd.v1"]));
        assert!(offered(["graphql-ws", " notifd.v1 "]));
        assert!(!offered(["notifd.v2", "NOTIFD.V1"]));
        assert!(!offered([]));
    }

    #[test]
    fn a_v1_notification_wraps_the_json_unchanged() {
        let json: Utf8Bytes = r#"{"id":"x"}"#.into();
        assert_eq!(Protocol::Plain.notification(&json), json);
        let wrapped = Protocol::V1.notification(&json);
        let value: serde_json::Value = serde_json::from_str(wrapped.as_str()).expect("JSON");
        assert_eq!(
            value,
            serde_json::json!({"event": "notification", "notification": {"id": "x"}})
        );
        assert_eq!(
            synced(None).as_str(),
            r#"{"event":"synced","through":null}"#
        );
    }
}
