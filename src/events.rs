//! The notifd.v1 event protocol (contract §3.1): what a state change is, as the store
//! reports it, as instances pass it over Redis, and as a v1 WebSocket client receives
//! it (`updated` and `counts` frames).
//!
//! Comes after `store` (each mark and bulk returns a [`StateChange`] and the new
//! [`CounterRow`]s from its own transaction) and before `publisher::state` (which sends
//! a [`StateMessage`] to `{prefix}notifd:state:{user_id}`); the subscriber and
//! WebSocket side turn a message into the [`Event`]s of each connection's view.
//! Notification frames are the JSON of §1 (`notification`); this module owns only
//! what state changes add.

use serde::{Deserialize, Deserializer, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::notification::format_timestamp;

/// The state fields a change sets (RFC 3339 UTC millis) or clears (`null`, an undo).
/// An absent field did not change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Changes {
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub read_at: Option<Option<String>>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub seen_at: Option<Option<String>>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub archived_at: Option<Option<String>>,
}

/// A field that is there, even as `null`, is `Some`: absent and cleared differ.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

/// One of the state fields, as the marks name them (the value indexes the store's
/// bulk statements).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Read = 0,
    Seen = 1,
    Archived = 2,
}

impl Field {
    /// The column and JSON name.
    pub fn column(self) -> &'static str {
        match self {
            Field::Read => "read_at",
            Field::Seen => "seen_at",
            Field::Archived => "archived_at",
        }
    }
}

impl Changes {
    /// `field` set to `at`, or cleared with `None`.
    pub fn one(field: Field, at: Option<OffsetDateTime>) -> Changes {
        let value = Some(at.map(format_timestamp));
        let mut changes = Changes::default();
        match field {
            Field::Read => changes.read_at = value,
            Field::Seen => changes.seen_at = value,
            Field::Archived => changes.archived_at = value,
        }
        changes
    }
}

/// The filter of a bulk change: `null` = any. A workspace covers that workspace and
/// user-level notifications, as every workspace filter does.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BulkFilter {
    pub workspace: Option<String>,
    pub kind: Option<String>,
}

/// The body of an `updated` event: by ids, or a bulk change of every matching visible
/// notification with id ≤ `through`. A client applies a set value only where the
/// field is still null (the first `read_at` is kept, as the server keeps it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Updated {
    Ids {
        ids: Vec<Uuid>,
        changes: Changes,
    },
    Bulk {
        filter: BulkFilter,
        through: Uuid,
        changes: Changes,
    },
}

/// Unread and unseen: archived (and, with issue 13, expired) ones are not counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub unread: i64,
    pub unseen: i64,
}

/// A frame of the event protocol that a state change produces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "lowercase")]
pub enum Event {
    Updated(Updated),
    Counts(Counts),
}

/// One counter row of `notification_counts` as a change left it: a (user, workspace
/// or user-level) pair's counts and its version, which grows with every change of
/// the row, so a consumer keeps the highest version it has seen and drops older ones.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CounterRow {
    /// `None`: the user-level notifications.
    pub workspace: Option<String>,
    /// True: the row of `workspace`'s workspace-audience notifications, shared by
    /// every user granted it; a user's counts add it to their own row of that
    /// workspace (which the broadcasts they read or archived take away from,
    /// `sql/0004_workspace_audience.sql`). False: the user's own row.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub broadcasts: bool,
    pub unread: i64,
    pub unseen: i64,
    pub version: i64,
}

/// The counts of a view: the user-level row plus the rows `sees` accepts.
pub fn counts_of<'a>(
    rows: impl IntoIterator<Item = &'a CounterRow>,
    sees: impl Fn(&str) -> bool,
) -> Counts {
    rows.into_iter()
        .filter(|row| row.workspace.as_deref().is_none_or(&sees))
        .fold(Counts::default(), |sum, row| Counts {
            unread: sum.unread + row.unread,
            unseen: sum.unseen + row.unseen,
        })
}

/// A changed notification and its workspace, so each view gets only its own ids.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangedId {
    pub id: Uuid,
    pub workspace: Option<String>,
}

/// What one mark or bulk changed, as its transaction saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "by", rename_all = "lowercase")]
pub enum StateChange {
    /// The rows a mark by ids actually changed.
    Ids {
        ids: Vec<ChangedId>,
        changes: Changes,
    },
    /// A bulk: its filter, the highest id it changed, and the workspaces of the rows
    /// it changed (`None` = user-level).
    Bulk {
        filter: BulkFilter,
        through: Uuid,
        workspaces: Vec<Option<String>>,
        changes: Changes,
    },
}

impl StateChange {
    /// The `updated` event of a view (a connection on `workspace`, which also sees
    /// user-level notifications), or `None` when the change touched nothing it sees.
    pub fn updated_for(&self, workspace: &str) -> Option<Event> {
        let sees = |w: &Option<String>| w.as_deref().is_none_or(|w| w == workspace);
        let updated = match self {
            StateChange::Ids { ids, changes } => {
                let ids: Vec<Uuid> = ids
                    .iter()
                    .filter(|c| sees(&c.workspace))
                    .map(|c| c.id)
                    .collect();
                if ids.is_empty() {
                    return None;
                }
                Updated::Ids {
                    ids,
                    changes: changes.clone(),
                }
            }
            StateChange::Bulk {
                filter,
                through,
                workspaces,
                changes,
            } => {
                if !workspaces.iter().any(sees) {
                    return None;
                }
                Updated::Bulk {
                    filter: filter.clone(),
                    through: *through,
                    changes: changes.clone(),
                }
            }
        };
        Some(Event::Updated(updated))
    }
}

/// What a mark or bulk publishes for the other instances on
/// `{prefix}notifd:state:{user_id}`: the change (none when only counts moved) and the
/// counter rows it left, each with its version. Creates to a workspace audience send
/// one on `{prefix}notifd:state:workspace:{slug}`, with that workspace's row only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateMessage {
    /// Empty on a workspace's channel, whose messages carry its broadcasts' counter
    /// row for all its users (`channels::workspace_state`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub user_id: String,
    pub change: Option<StateChange>,
    pub counters: Vec<CounterRow>,
}

impl StateMessage {
    /// The JSON sent on Redis.
    pub fn to_json(&self) -> String {
        // Strings, numbers and UUIDs only: serializing cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn at() -> OffsetDateTime {
        time::macros::datetime!(2026-03-03 10:30:45.123456 UTC)
    }

    fn wire(event: &Event) -> Value {
        serde_json::to_value(event).expect("serializes")
    }

    #[test]
    fn updated_by_ids_is_the_contract_json() {
        let id = Uuid::now_v7();
        let event = Event::Updated(Updated::Ids {
            ids: vec![id],
            changes: Changes::one(Field::Read, Some(at())),
        });
        assert_eq!(
            wire(&event),
            json!({"event": "updated", "ids": [id], "changes": {"read_at": "2026-03-03T10:30:45.123Z"}})
        );
        let undo = Changes::one(Field::Read, None);
        assert_eq!(
            serde_json::to_value(&undo).expect("ok"),
            json!({"read_at": null})
        );
        let back: Event = serde_json::from_value(wire(&event)).expect("parses");
        assert_eq!(back, event);
    }

    #[test]
    fn bulk_and_counts_are_the_contract_json() {
        let through = Uuid::now_v7();
        let event = Event::Updated(Updated::Bulk {
            filter: BulkFilter {
                workspace: Some("acme".into()),
                kind: None,
            },
            through,
            changes: Changes::one(Field::Archived, Some(at())),
        });
        let expected = json!({"event": "updated", "filter": {"workspace": "acme", "kind": null},
            "through": through, "changes": {"archived_at": "2026-03-03T10:30:45.123Z"}});
        assert_eq!(wire(&event), expected);
        assert_eq!(
            serde_json::from_value::<Event>(expected).expect("parses"),
            event
        );
        let counts = Event::Counts(Counts {
            unread: 3,
            unseen: 5,
        });
        assert_eq!(
            wire(&counts),
            json!({"event": "counts", "unread": 3, "unseen": 5})
        );
    }

    #[test]
    fn each_view_gets_only_what_it_sees() {
        let (a, b, c) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let change = StateChange::Ids {
            ids: vec![
                ChangedId {
                    id: a,
                    workspace: None,
                },
                ChangedId {
                    id: b,
                    workspace: Some("acme".into()),
                },
                ChangedId {
                    id: c,
                    workspace: Some("beta".into()),
                },
            ],
            changes: Changes::one(Field::Seen, Some(at())),
        };
        let ids = |w: &str| match change.updated_for(w) {
            Some(Event::Updated(Updated::Ids { ids, .. })) => ids,
            other => panic!("{other:?}"),
        };
        assert_eq!(ids("acme"), vec![a, b]);
        assert_eq!(ids("gamma"), vec![a]);
        let only_beta = StateChange::Ids {
            ids: vec![ChangedId {
                id: c,
                workspace: Some("beta".into()),
            }],
            changes: Changes::one(Field::Seen, None),
        };
        assert_eq!(only_beta.updated_for("acme"), None);

        let rows = [
            CounterRow {
                workspace: None,
                broadcasts: false,
                unread: 1,
                unseen: 2,
                version: 4,
            },
            CounterRow {
                workspace: Some("acme".into()),
                broadcasts: false,
                unread: 10,
                unseen: 20,
                version: 1,
            },
            CounterRow {
                workspace: Some("beta".into()),
                broadcasts: false,
                unread: 100,
                unseen: 200,
                version: 9,
            },
        ];
        assert_eq!(
            counts_of(&rows, |w| w == "acme"),
            Counts {
                unread: 11,
                unseen: 22
            }
        );
        assert_eq!(
            counts_of(&rows, |_| true),
            Counts {
                unread: 111,
                unseen: 222
            }
        );

        let message = StateMessage {
            user_id: "u".into(),
            change: Some(change),
            counters: rows.to_vec(),
        };
        let back: StateMessage = serde_json::from_str(&message.to_json()).expect("parses");
        assert_eq!(back, message);
    }
}
