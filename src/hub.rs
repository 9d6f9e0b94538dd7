//! The hub: who is connected to this instance. A registry of each user's live
//! connections, each reached through a `Member` handle the connection gives it.
//!
//! The subscriber thread (before) calls `deliver`, which picks the user's members
//! under the lock and, after it, hands each the frame; the member (the WebSocket side,
//! after) decides whether it goes straight to the socket, into its queue, or closes
//! the connection as too slow. The hub knows nothing of sockets and never blocks on a
//! client.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use time::OffsetDateTime;
use tungstenite::Utf8Bytes;
use uuid::Uuid;

use crate::events::StateMessage;

/// One notification on its way to sockets: its id (for de-duplication and position),
/// its JSON, serialized once and shared by every connection that gets it, and when
/// it expires (a frame still queued then is dropped, never sent).
#[derive(Debug, Clone)]
pub struct Frame {
    pub id: Uuid,
    pub json: Utf8Bytes,
    pub expires: Option<OffsetDateTime>,
}

impl Frame {
    pub fn is_expired(&self) -> bool {
        self.expires
            .is_some_and(|at| at <= OffsetDateTime::now_utc())
    }
}

/// What the hub asks of a registered connection. Called on the subscriber thread
/// (one caller, so a connection's frames keep their order); none may block.
pub trait Member: Send + Sync {
    /// Takes `frame` for the client; false when it did not (its queue is full, and it
    /// closes as too slow, or it is going).
    fn deliver(&self, frame: &Frame) -> bool;
    /// A newer connection of the same user and workspace replaces this one (4005).
    fn replace(&self);
    /// A user's state changed (a mark, a bulk, or counters a create moved); a
    /// connection that speaks the event protocol takes it, others ignore it.
    fn state(&self, message: &Arc<StateMessage>);
    /// Whatever was published while Redis was away must be read from PostgreSQL.
    fn catch_up(&self);
}

/// Orders connections of the same user and workspace: the newest wins (§3). Compared
/// across instances, so it holds the open time first and identities as tie-breaks.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ConnKey {
    pub opened_us: u64,
    pub instance: String,
    pub id: u64,
}

struct Entry {
    key: ConnKey,
    workspace: String,
    member: Arc<dyn Member>,
}

struct Inner {
    // A std Mutex held only to look members up: never across a delivery, never
    // blocking on a client.
    users: Mutex<HashMap<String, Vec<Entry>>>,
    instance: String,
    next_id: AtomicU64,
}

/// The connection registry of this instance; cheap to clone.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

impl Hub {
    pub fn new(instance: String) -> Hub {
        Hub {
            inner: Arc::new(Inner {
                users: Mutex::new(HashMap::new()),
                instance,
                next_id: AtomicU64::new(1),
            }),
        }
    }

    fn users(&self) -> MutexGuard<'_, HashMap<String, Vec<Entry>>> {
        // A panic while holding the lock cannot leave the map half-updated (every
        // change is one push or retain), so a poisoned lock is still usable.
        self.inner.users.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a connection; it is removed when the returned guard drops.
    pub fn register(
        &self,
        user_id: &str,
        workspace: &str,
        member: Arc<dyn Member>,
    ) -> Registration {
        let key = ConnKey {
            opened_us: crate::notification::now().unix_timestamp_nanos() as u64 / 1_000,
            instance: self.inner.instance.clone(),
            id: self.inner.next_id.fetch_add(1, Ordering::Relaxed),
        };
        let entry = Entry {
            key: key.clone(),
            workspace: workspace.to_string(),
            member,
        };
        self.users()
            .entry(user_id.to_string())
            .or_default()
            .push(entry);
        Registration {
            hub: self.clone(),
            user_id: user_id.to_string(),
            key,
        }
    }

    /// Hands a frame to every connection of `user_id` on `workspace` (or all of the
    /// user's connections when `workspace` is `None`). Returns how many took it.
    pub fn deliver(&self, user_id: &str, workspace: Option<&str>, frame: &Frame) -> usize {
        let members = self.members(user_id, |e| workspace.is_none_or(|w| w == e.workspace));
        members.iter().filter(|m| m.deliver(frame)).count()
    }

    /// Hands a user's state message to each of their connections (every workspace:
    /// each decides what of it its view sees).
    pub fn deliver_state(&self, user_id: &str, message: &Arc<StateMessage>) {
        for member in self.members(user_id, |_| true) {
            member.state(message);
        }
    }

    /// Whether `user_id` has a connection here (a message for nobody is not parsed).
    pub fn holds(&self, user_id: &str) -> bool {
        self.users().contains_key(user_id)
    }

    /// This instance's id, as connection keys carry it.
    pub fn instance(&self) -> &str {
        &self.inner.instance
    }

    /// Replaces (4005) the connections of `user_id` on `workspace` with these ids (a
    /// newer connection took their place, on any instance).
    pub fn replace(&self, user_id: &str, workspace: &str, ids: &[u64]) {
        for member in self.members(user_id, |e| {
            e.workspace == workspace && ids.contains(&e.key.id)
        }) {
            member.replace();
        }
    }

    /// Replaces (4005) all but the newest `keep` connections of `user_id` on
    /// `workspace` here: the limit applied by this instance alone, while the
    /// cluster-wide roster cannot be asked.
    pub fn keep_newest(&self, user_id: &str, workspace: &str, keep: usize) {
        let older: Vec<Arc<dyn Member>> = {
            let users = self.users();
            let Some(entries) = users.get(user_id) else {
                return;
            };
            let mut same: Vec<&Entry> = entries
                .iter()
                .filter(|e| e.workspace == workspace)
                .collect();
            same.sort_by(|a, b| b.key.cmp(&a.key));
            same.iter().skip(keep).map(|e| e.member.clone()).collect()
        };
        for member in older {
            member.replace();
        }
    }

    /// The members of `user_id` that `pick` accepts, cloned under the lock so they are
    /// called after it (a member may write to a socket).
    fn members(&self, user_id: &str, pick: impl Fn(&Entry) -> bool) -> Vec<Arc<dyn Member>> {
        let users = self.users();
        let Some(entries) = users.get(user_id) else {
            return Vec::new();
        };
        entries
            .iter()
            .filter(|e| pick(e))
            .map(|e| e.member.clone())
            .collect()
    }

    /// Asks every connection to catch up from PostgreSQL.
    pub fn catch_up_all(&self) {
        for entry in self.users().values().flatten() {
            entry.member.catch_up();
        }
    }

    /// Connections registered now.
    pub fn len(&self) -> usize {
        self.users().values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A registered connection; unregisters on drop.
pub struct Registration {
    hub: Hub,
    user_id: String,
    key: ConnKey,
}

impl Registration {
    pub fn key(&self) -> &ConnKey {
        &self.key
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut users = self.hub.users();
        if let Some(entries) = users.get_mut(&self.user_id) {
            entries.retain(|e| e.key != self.key);
            if entries.is_empty() {
                users.remove(&self.user_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// A member that takes up to `room` frames and counts what it is asked.
    #[derive(Default)]
    struct Counter {
        room: usize,
        frames: AtomicUsize,
        replaced: AtomicUsize,
        caught_up: AtomicUsize,
    }

    impl Member for Counter {
        fn deliver(&self, _: &Frame) -> bool {
            self.frames.fetch_add(1, Ordering::Relaxed) < self.room
        }
        fn replace(&self) {
            self.replaced.fetch_add(1, Ordering::Relaxed);
        }
        fn state(&self, _: &Arc<StateMessage>) {}
        fn catch_up(&self) {
            self.caught_up.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn member(hub: &Hub, user: &str, workspace: &str) -> (Registration, Arc<Counter>) {
        let counter = Arc::new(Counter {
            room: 2,
            ..Counter::default()
        });
        (hub.register(user, workspace, counter.clone()), counter)
    }

    fn frame() -> Frame {
        Frame {
            id: Uuid::now_v7(),
            json: "{}".into(),
            expires: None,
        }
    }

    fn count(counter: &AtomicUsize) -> usize {
        counter.load(Ordering::Relaxed)
    }

    #[test]
    fn delivers_by_user_and_workspace_and_counts_who_took_it() {
        let hub = Hub::new("i".into());
        let (_a, a) = member(&hub, "alice", "acme");
        let (_b, b) = member(&hub, "alice", "beta");
        let (_c, c) = member(&hub, "carol", "acme");
        assert_eq!(hub.deliver("alice", Some("acme"), &frame()), 1);
        assert_eq!(hub.deliver("alice", None, &frame()), 2);
        assert_eq!(
            (count(&a.frames), count(&b.frames), count(&c.frames)),
            (2, 1, 0)
        );
        assert_eq!(hub.deliver("alice", Some("acme"), &frame()), 0, "a is full");
        hub.catch_up_all();
        assert_eq!(count(&c.caught_up), 1);
    }

    #[test]
    fn replacing_picks_by_id_or_keeps_the_newest_and_drop_unregisters() {
        let hub = Hub::new("i".into());
        let (old, old_counter) = member(&hub, "alice", "acme");
        let (mid, mid_counter) = member(&hub, "alice", "acme");
        let (new, new_counter) = member(&hub, "alice", "acme");
        let (_other, other_counter) = member(&hub, "alice", "beta");
        assert!(old.key() < mid.key() && mid.key() < new.key());
        hub.replace("alice", "acme", &[mid.key().id]);
        assert_eq!(count(&mid_counter.replaced), 1);
        hub.keep_newest("alice", "acme", 2);
        assert_eq!(
            count(&old_counter.replaced),
            1,
            "the oldest of three, keeping two"
        );
        assert_eq!(count(&new_counter.replaced), 0);
        assert_eq!(
            count(&other_counter.replaced),
            0,
            "another workspace is untouched"
        );
        drop((old, mid, new));
        assert!(hub.holds("alice"));
        drop(_other);
        assert!(hub.is_empty() && !hub.holds("alice"));
    }
}
