//! The idempotency key of a create: where it comes from (the `Idempotency-Key`
//! header, or `idempotency_key` in the body and in each batch item), what it may be,
//! and the hash of the request it keys, which tells a retry from another create
//! reusing the key.
//!
//! Comes before `validate` (the key is taken out of the body first); the keys go
//! with the notifications to `committer` and `store::insert_keyed`.

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::auth::Identity;
use crate::error::Error;
use crate::http::Request;
use crate::notification::Notification;
use crate::store::IdempotencyKey;

pub const HEADER: &str = "Idempotency-Key";
/// The header of an answer that replays an earlier create.
pub const REPLAYED: &str = "Idempotent-Replayed";
/// The body field (single create and batch items).
pub const FIELD: &str = "idempotency_key";
/// Longest key, in bytes (printable ASCII: one byte a character).
pub const MAX_KEY: usize = 255;

/// The header's key, if the request has the header (checked).
pub fn from_header(request: &Request) -> Result<Option<String>, Error> {
    let Some((_, raw)) = request
        .head
        .headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(HEADER))
    else {
        return Ok(None);
    };
    let text = std::str::from_utf8(raw)
        .map_err(|_| Error::InvalidIdempotencyKey(RULE.into()))?
        .trim_matches([' ', '\t']);
    check(text)?;
    Ok(Some(text.to_string()))
}

/// Takes `idempotency_key` out of a create body (null counts as absent).
pub fn take_from_body(body: &mut Value) -> Result<Option<String>, Error> {
    let Some(fields) = body.as_object_mut() else {
        return Ok(None);
    };
    match fields.remove(FIELD) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => {
            check(&text)?;
            Ok(Some(text))
        }
        Some(_) => Err(Error::InvalidIdempotencyKey(format!(
            "{FIELD} must be a string"
        ))),
    }
}

/// The key of a single create: the header's or the body's; both, only if equal.
pub fn either(header: Option<String>, body: Option<String>) -> Result<Option<String>, Error> {
    match (header, body) {
        (Some(header), Some(body)) if header != body => Err(Error::InvalidIdempotencyKey(format!(
            "the header and {FIELD} in the body differ; send one, or the same key in both"
        ))),
        (header, body) => Ok(header.or(body)),
    }
}

const RULE: &str = "must be 1 to 255 printable ASCII characters (space to ~)";

fn check(key: &str) -> Result<(), Error> {
    if key.is_empty() || key.len() > MAX_KEY || !key.bytes().all(|b| (b' '..=b'~').contains(&b)) {
        return Err(Error::InvalidIdempotencyKey(RULE.into()));
    }
    Ok(())
}

/// The key as the store keeps it: scoped to the service (`sub`), with the hash of
/// the request.
pub fn scoped(service: &Identity, key: String, notification: &Notification) -> IdempotencyKey {
    IdempotencyKey {
        service: service.user_id.clone(),
        key,
        hash: request_hash(notification),
    }
}

/// SHA-256 of the canonical request: the validated fields a client sets, after
/// defaults and aliases (an omitted title is the kind; `metadata` is `payload`; a
/// payload string is the object it holds), object keys sorted (serde_json's maps are
/// ordered), and `expires_at` as an instant (any offset). Server-made fields (id,
/// times, state) are not part of it, so a retry hashes the same.
pub fn request_hash(n: &Notification) -> [u8; 32] {
    let canonical = serde_json::json!([
        n.user_id,
        n.workspace,
        n.kind,
        n.level.as_str(),
        n.title,
        n.message,
        n.payload,
        n.expires_at.map(|at| at.unix_timestamp_nanos().to_string()),
    ]);
    Sha256::digest(canonical.to_string().as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_1_to_255_printable_ascii() {
        for good in ["a", "order-42/retry 1", &"k".repeat(255), "~!"] {
            assert!(check(good).is_ok(), "{good:?}");
        }
        for bad in ["", &"k".repeat(256), "tab\there", "nul\0", "é", "line\n"] {
            assert!(check(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_hash_ignores_spelling_but_not_content() {
        let build = |body: Value| {
            crate::validate::new_notification(body, None)
                .expect("valid")
                .0
        };
        let a =
            build(serde_json::json!({"user_id": "u", "kind": "k", "payload": {"x": 1, "y": 2}}));
        let b = build(
            serde_json::json!({"user_id": "u", "kind": "k", "title": "k",
            "metadata": "{\"y\":2,\"x\":1}"}),
        );
        let c =
            build(serde_json::json!({"user_id": "u", "kind": "k", "payload": {"x": 2, "y": 2}}));
        assert_eq!(request_hash(&a), request_hash(&b));
        assert_ne!(request_hash(&a), request_hash(&c));
    }
}
