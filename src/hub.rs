//! The hub: who is connected to this instance. Maps each user to their live
//! WebSocket connections and hands each notification to the right ones.
//!
//! The subscriber thread (before) calls `deliver`, which writes the frame straight to
//! the socket of a connection whose thread sleeps with nothing queued (`direct`) and
//! otherwise queues it for the connection thread (after), which drains its own
//! bounded queue. The hub never blocks on a client: a write is non-blocking, and a
//! full queue marks that connection for closing with 4006 and pokes it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crossbeam_channel::Sender;
use tungstenite::Utf8Bytes;
use uuid::Uuid;

use crate::websocket::direct;
use crate::websocket::link::Link;

/// Close codes the hub decides.
pub const CLOSE_REPLACED: u16 = 4005;
pub const CLOSE_TOO_SLOW: u16 = 4006;

/// One notification on its way to sockets: its id (for de-duplication and position)
/// and its JSON, serialized once and shared by every connection that gets it.
#[derive(Debug, Clone)]
pub struct Frame {
    pub id: Uuid,
    pub json: Utf8Bytes,
}

/// Orders connections of the same user and workspace: the newest wins (§3). Compared
/// across instances, so it holds the open time first and identities as tie-breaks.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ConnKey {
    pub opened_us: u64,
    pub instance: String,
    pub id: u64,
}

struct Member {
    key: ConnKey,
    workspace: String,
    link: Arc<Link>,
    queue: Sender<Frame>,
    /// Most frames `queue` may hold; the hub is its only sender, so checking the
    /// length before sending is exact.
    capacity: usize,
}

struct Inner {
    // A std Mutex held only to look up and `try_send`: never across I/O, never
    // blocking on a client.
    users: Mutex<HashMap<String, Vec<Member>>>,
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

    fn users(&self) -> MutexGuard<'_, HashMap<String, Vec<Member>>> {
        // A panic while holding the lock cannot leave the map half-updated (every
        // change is one push or retain), so a poisoned lock is still usable.
        self.inner.users.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a connection; it is removed when the returned guard drops.
    pub fn register(
        &self,
        user_id: &str,
        workspace: &str,
        link: Arc<Link>,
        queue: Sender<Frame>,
        capacity: usize,
    ) -> Registration {
        let key = ConnKey {
            opened_us: crate::notification::now().unix_timestamp_nanos() as u64 / 1_000,
            instance: self.inner.instance.clone(),
            id: self.inner.next_id.fetch_add(1, Ordering::Relaxed),
        };
        let member = Member {
            key: key.clone(),
            workspace: workspace.to_string(),
            link,
            queue,
            capacity,
        };
        self.users()
            .entry(user_id.to_string())
            .or_default()
            .push(member);
        Registration {
            hub: self.clone(),
            user_id: user_id.to_string(),
            key,
        }
    }

    /// Sends or queues a frame for every connection of `user_id` on `workspace` (or all
    /// of the user's connections when `workspace` is `None`). Returns how many got it.
    /// One thread (the subscriber) calls it, so a connection's frames keep their order.
    pub fn deliver(&self, user_id: &str, workspace: Option<&str>, frame: &Frame) -> usize {
        // Picked under the lock, written to after it: a socket write is I/O.
        let targets: Vec<(Arc<Link>, Sender<Frame>, usize)> = {
            let users = self.users();
            let Some(members) = users.get(user_id) else {
                return 0;
            };
            members
                .iter()
                .filter(|m| workspace.is_none_or(|w| w == m.workspace))
                .map(|m| (m.link.clone(), m.queue.clone(), m.capacity))
                .collect()
        };
        let mut delivered = 0;
        for (link, queue, capacity) in targets {
            // Straight to the socket when nothing is queued before it (only this
            // thread adds to the queue, so "empty" stays true meanwhile).
            if queue.is_empty() && direct::write(&link, frame) {
                delivered += 1;
            } else if queue.len() >= capacity {
                link.close(CLOSE_TOO_SLOW);
            } else if queue.try_send(frame.clone()).is_ok() {
                link.wake();
                delivered += 1;
            }
        }
        delivered
    }

    /// Closes with 4005 every connection of this user and workspace older than `newest`.
    pub fn replace_older(&self, user_id: &str, workspace: &str, newest: &ConnKey) {
        if let Some(members) = self.users().get(user_id) {
            for member in members
                .iter()
                .filter(|m| m.workspace == workspace && m.key < *newest)
            {
                member.link.close(CLOSE_REPLACED);
            }
        }
    }

    /// Asks every connection to catch up from PostgreSQL.
    pub fn catch_up_all(&self) {
        for member in self.users().values().flatten() {
            member.link.request_catch_up();
        }
    }

    /// Wakes every connection (shutdown: each then sees the signal and closes).
    pub fn wake_all(&self) {
        for member in self.users().values().flatten() {
            member.link.wake();
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
        if let Some(members) = users.get_mut(&self.user_id) {
            members.retain(|m| m.key != self.key);
            if members.is_empty() {
                users.remove(&self.user_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(
        hub: &Hub,
        user: &str,
        workspace: &str,
        capacity: usize,
    ) -> (Registration, Arc<Link>, crossbeam_channel::Receiver<Frame>) {
        let link = Arc::new(Link::new());
        let (queue, frames) = crossbeam_channel::unbounded();
        (
            hub.register(user, workspace, link.clone(), queue, capacity),
            link,
            frames,
        )
    }

    fn frame() -> Frame {
        Frame {
            id: Uuid::now_v7(),
            json: "{}".into(),
        }
    }

    #[test]
    fn delivers_by_user_and_workspace() {
        let hub = Hub::new("i".into());
        let (_a, _, a_frames) = member(&hub, "alice", "acme", 4);
        let (_b, _, b_frames) = member(&hub, "alice", "beta", 4);
        let (_c, _, c_frames) = member(&hub, "carol", "acme", 4);
        assert_eq!(hub.deliver("alice", Some("acme"), &frame()), 1);
        assert_eq!(hub.deliver("alice", None, &frame()), 2);
        assert_eq!((a_frames.len(), b_frames.len(), c_frames.len()), (2, 1, 0));
    }

    #[test]
    fn a_full_queue_asks_for_4006_and_drop_unregisters() {
        let hub = Hub::new("i".into());
        let (registration, link, _frames) = member(&hub, "alice", "acme", 1);
        hub.deliver("alice", None, &frame());
        assert_eq!(link.close_requested(), None);
        hub.deliver("alice", None, &frame());
        assert_eq!(link.close_requested(), Some(CLOSE_TOO_SLOW));
        drop(registration);
        assert!(hub.is_empty());
    }

    #[test]
    fn only_older_connections_are_replaced() {
        let hub = Hub::new("i".into());
        let (old, old_link, _) = member(&hub, "alice", "acme", 1);
        let (new, new_link, _) = member(&hub, "alice", "acme", 1);
        assert!(old.key() < new.key());
        hub.replace_older("alice", "acme", new.key());
        assert_eq!(old_link.close_requested(), Some(CLOSE_REPLACED));
        assert_eq!(new_link.close_requested(), None);
    }
}
