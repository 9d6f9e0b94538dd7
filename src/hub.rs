//! The hub: who is connected to this instance. A registry of each user's live
//! connections, each reached through a `Member` handle the connection gives it, and
//! of each workspace's (workspace-audience notifications go to all of them).
//!
//! The subscriber thread (before) calls `deliver`, which picks the user's members
//! under the lock and, after it, hands each the frame; the member (the WebSocket side,
//! after) decides whether it goes straight to the socket, into its queue, or closes
//! the connection as too slow. The hub knows nothing of sockets and never blocks on a
//! client.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

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
    /// What the connection is owed from: notifications with a greater id.
    floor: Uuid,
    member: Arc<dyn Member>,
}

/// A connection registered since the subscriber last looked: what was published for
/// it between its floor and now (its registration, its channels' subscription) may
/// have reached no one here, so the subscriber reads it from PostgreSQL, for all of
/// them at once (`subscriber`'s catch-up of fresh connections).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fresh {
    pub user_id: String,
    pub workspace: String,
    pub floor: Uuid,
}

/// Most fresh connections remembered between two looks of the subscriber; beyond,
/// a connection is asked to catch up on its own (`Member::catch_up`).
const MAX_FRESH: usize = 50_000;

/// A connection as a workspace's list holds it.
struct OnWorkspace {
    key: ConnKey,
    floor: Uuid,
    member: Arc<dyn Member>,
}

/// The connections, by user and by workspace (each connection is in both).
#[derive(Default)]
struct Registry {
    users: HashMap<String, Vec<Entry>>,
    workspaces: HashMap<String, Vec<OnWorkspace>>,
    fresh: Vec<Fresh>,
}

struct Inner {
    // A std Mutex held only to look members up: never across a delivery, never
    // blocking on a client.
    registry: Mutex<Registry>,
    instance: String,
    next_id: AtomicU64,
    /// Bumped whenever a user or a workspace gains a first or loses a last
    /// connection here: the subscriber compares it to decide whether its
    /// subscriptions need a look.
    audience_changed: AtomicU64,
    /// The users and workspaces whose channels the subscriber has confirmed, and a
    /// wake-up for connections waiting on theirs (`wait_subscribed`).
    subscribed: Mutex<Subscribed>,
    subscribed_moved: Condvar,
}

/// What the subscriber's Redis connection is subscribed to now.
#[derive(Default)]
struct Subscribed {
    users: HashSet<String>,
    workspaces: HashSet<String>,
    /// The subscriber has no Redis connection: nothing will be subscribed soon, so
    /// a new connection does not wait for it (its catch-up comes with the reconnect).
    down: bool,
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
                registry: Mutex::new(Registry::default()),
                instance,
                next_id: AtomicU64::new(1),
                audience_changed: AtomicU64::new(0),
                subscribed: Mutex::new(Subscribed::default()),
                subscribed_moved: Condvar::new(),
            }),
        }
    }

    fn registry(&self) -> MutexGuard<'_, Registry> {
        // A panic while holding the lock cannot leave the maps half-updated (every
        // change is a push or retain on each), so a poisoned lock is still usable.
        self.inner
            .registry
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn changed(&self) {
        self.inner.audience_changed.fetch_add(1, Ordering::Release);
    }

    /// Adds a connection owed what is created after `floor`; it is removed when the
    /// returned guard drops.
    pub fn register(
        &self,
        user_id: &str,
        workspace: &str,
        floor: Uuid,
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
            floor,
            member: member.clone(),
        };
        let mut registry = self.registry();
        let entries = registry.users.entry(user_id.to_string()).or_default();
        let first_of_user = entries.is_empty();
        entries.push(entry);
        let on_workspace = registry
            .workspaces
            .entry(workspace.to_string())
            .or_default();
        let first_on_workspace = on_workspace.is_empty();
        on_workspace.push(OnWorkspace {
            key: key.clone(),
            floor,
            member: member.clone(),
        });
        // Bumped before the subscriber can take this connection as fresh: a look that
        // takes it also sees that its channels are wanted.
        if first_of_user || first_on_workspace {
            self.changed();
        }
        let remembered = registry.fresh.len() < MAX_FRESH;
        if remembered {
            registry.fresh.push(Fresh {
                user_id: user_id.to_string(),
                workspace: workspace.to_string(),
                floor,
            });
        }
        drop(registry);
        if !remembered {
            member.catch_up();
        }
        Registration {
            hub: self.clone(),
            user_id: user_id.to_string(),
            workspace: workspace.to_string(),
            key,
        }
    }

    /// Hands a frame to every connection of `user_id` on `workspace` (or all of the
    /// user's connections when `workspace` is `None`). Returns how many took it.
    pub fn deliver(&self, user_id: &str, workspace: Option<&str>, frame: &Frame) -> usize {
        let members = self.members(user_id, |e| workspace.is_none_or(|w| w == e.workspace));
        members.iter().filter(|m| m.deliver(frame)).count()
    }

    /// The connections registered since the last call (`Fresh`).
    pub fn take_fresh(&self) -> Vec<Fresh> {
        std::mem::take(&mut self.registry().fresh)
    }

    /// Hands a frame read by the catch-up of fresh connections to those owed it: the
    /// user's connections (on `workspace`, or all for a user-level one; for a
    /// workspace-audience one, every connection on `workspace`) whose floor is older.
    /// The ones that already have it skip it (`seen`).
    pub fn deliver_caught_up(&self, user_id: Option<&str>, workspace: Option<&str>, frame: &Frame) {
        let members: Vec<Arc<dyn Member>> = {
            let registry = self.registry();
            let owed = |e: &Entry| e.floor < frame.id;
            match (user_id, workspace) {
                (Some(user), workspace) => registry
                    .users
                    .get(user)
                    .into_iter()
                    .flatten()
                    .filter(|e| owed(e) && workspace.is_none_or(|w| w == e.workspace))
                    .map(|e| e.member.clone())
                    .collect(),
                (None, Some(slug)) => registry
                    .workspaces
                    .get(slug)
                    .into_iter()
                    .flatten()
                    .filter(|e| e.floor < frame.id)
                    .map(|e| e.member.clone())
                    .collect(),
                (None, None) => Vec::new(),
            }
        };
        for member in members {
            member.deliver(frame);
        }
    }

    /// Hands a workspace-audience frame to every connection on `workspace`. Returns
    /// how many took it.
    pub fn deliver_to_workspace(&self, workspace: &str, frame: &Frame) -> usize {
        let members = self.on_workspace(workspace);
        members.iter().filter(|m| m.deliver(frame)).count()
    }

    /// Hands a workspace's state message (its broadcasts row) to every connection on it.
    pub fn deliver_workspace_state(&self, workspace: &str, message: &Arc<StateMessage>) {
        for member in self.on_workspace(workspace) {
            member.state(message);
        }
    }

    fn on_workspace(&self, workspace: &str) -> Vec<Arc<dyn Member>> {
        let registry = self.registry();
        registry
            .workspaces
            .get(workspace)
            .map_or_else(Vec::new, |entries| {
                entries.iter().map(|e| e.member.clone()).collect()
            })
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
        self.registry().users.contains_key(user_id)
    }

    /// Whether `workspace` has a connection here.
    pub fn holds_workspace(&self, workspace: &str) -> bool {
        self.registry().workspaces.contains_key(workspace)
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
            let registry = self.registry();
            let Some(entries) = registry.users.get(user_id) else {
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
        let registry = self.registry();
        let Some(entries) = registry.users.get(user_id) else {
            return Vec::new();
        };
        entries
            .iter()
            .filter(|e| pick(e))
            .map(|e| e.member.clone())
            .collect()
    }

    /// A number that changes whenever the set of users or of workspaces with a
    /// connection here does.
    pub fn audience_changed(&self) -> u64 {
        self.inner.audience_changed.load(Ordering::Acquire)
    }

    /// The users and the workspaces with a connection here now (what the subscriber
    /// subscribes to).
    pub fn audience(&self) -> (HashSet<String>, HashSet<String>) {
        let registry = self.registry();
        (
            registry.users.keys().cloned().collect(),
            registry.workspaces.keys().cloned().collect(),
        )
    }

    /// The subscriber's confirmed subscriptions, after each change.
    pub fn set_subscribed(&self, users: &HashSet<String>, workspaces: &HashSet<String>) {
        let mut subscribed = self.subscribed();
        subscribed.users.clone_from(users);
        subscribed.workspaces.clone_from(workspaces);
        subscribed.down = false;
        drop(subscribed);
        self.inner.subscribed_moved.notify_all();
    }

    /// The subscriber lost its Redis connection: nothing is subscribed until it is
    /// back (`set_subscribed`), and nobody should wait for it meanwhile.
    pub fn set_subscriber_down(&self) {
        *self.subscribed() = Subscribed {
            down: true,
            ..Subscribed::default()
        };
        self.inner.subscribed_moved.notify_all();
    }

    /// Waits (at most `within`) until the channels of `user_id` and `workspace` are
    /// subscribed; true when they are. A connection waits for this before it takes
    /// its seat in the roster and reads its history: an eviction (4005) or a
    /// notification published before then would not reach this instance.
    pub fn wait_subscribed(&self, user_id: &str, workspace: &str, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        let mut subscribed = self.subscribed();
        loop {
            if subscribed.users.contains(user_id) && subscribed.workspaces.contains(workspace) {
                return true;
            }
            if subscribed.down {
                return false;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            subscribed = self
                .inner
                .subscribed_moved
                .wait_timeout(subscribed, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    fn subscribed(&self) -> MutexGuard<'_, Subscribed> {
        // Each change replaces both sets whole: a poisoned lock is still consistent.
        self.inner
            .subscribed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Asks every connection of `user_id` to catch up from PostgreSQL on its own (the
    /// catch-up of fresh connections could not cover them).
    pub fn catch_up_user(&self, user_id: &str) {
        for member in self.members(user_id, |_| true) {
            member.catch_up();
        }
    }

    /// Asks every connection to catch up from PostgreSQL.
    pub fn catch_up_all(&self) {
        for entry in self.registry().users.values().flatten() {
            entry.member.catch_up();
        }
    }

    /// Connections registered now.
    pub fn len(&self) -> usize {
        self.registry().users.values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A registered connection; unregisters on drop.
pub struct Registration {
    hub: Hub,
    user_id: String,
    workspace: String,
    key: ConnKey,
}

impl Registration {
    pub fn key(&self) -> &ConnKey {
        &self.key
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut registry = self.hub.registry();
        let mut last = false;
        if let Some(entries) = registry.users.get_mut(&self.user_id) {
            entries.retain(|e| e.key != self.key);
            if entries.is_empty() {
                registry.users.remove(&self.user_id);
                last = true;
            }
        }
        if let Some(entries) = registry.workspaces.get_mut(&self.workspace) {
            entries.retain(|e| e.key != self.key);
            if entries.is_empty() {
                registry.workspaces.remove(&self.workspace);
                last = true;
            }
        }
        drop(registry);
        if last {
            self.hub.changed();
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
        let floor = crate::notification::floor_id(0);
        (
            hub.register(user, workspace, floor, counter.clone()),
            counter,
        )
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

    #[test]
    fn fresh_connections_are_taken_once_and_get_only_what_is_after_their_floor() {
        let hub = Hub::new("i".into());
        let before = Uuid::now_v7();
        std::thread::sleep(Duration::from_millis(2));
        let floor = crate::notification::floor_id(crate::notification::id_millis(&Uuid::now_v7()));
        let counter = Arc::new(Counter {
            room: 10,
            ..Counter::default()
        });
        let _r = hub.register("alice", "acme", floor, counter.clone());
        let fresh = hub.take_fresh();
        assert_eq!(fresh.len(), 1);
        assert_eq!(
            (fresh[0].user_id.as_str(), fresh[0].floor),
            ("alice", floor)
        );
        assert!(hub.take_fresh().is_empty(), "taken once");
        let at = |id| Frame {
            id,
            json: "{}".into(),
            expires: None,
        };
        hub.deliver_caught_up(Some("alice"), None, &at(before));
        assert_eq!(count(&counter.frames), 0, "older than the floor");
        hub.deliver_caught_up(Some("alice"), Some("beta"), &at(Uuid::now_v7()));
        assert_eq!(count(&counter.frames), 0, "another workspace");
        hub.deliver_caught_up(None, Some("acme"), &at(Uuid::now_v7()));
        hub.deliver_caught_up(Some("alice"), Some("acme"), &at(Uuid::now_v7()));
        assert_eq!(count(&counter.frames), 2, "a broadcast and their own");
    }

    #[test]
    fn a_connection_waits_for_its_channels_unless_the_subscriber_is_down() {
        let hub = Hub::new("i".into());
        let set = |users: &[&str], workspaces: &[&str]| {
            let users: HashSet<String> = users.iter().map(|u| u.to_string()).collect();
            let workspaces: HashSet<String> = workspaces.iter().map(|w| w.to_string()).collect();
            (users, workspaces)
        };
        let later = hub.clone();
        let subscriber = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            let (users, workspaces) = set(&["alice"], &["acme"]);
            later.set_subscribed(&users, &workspaces);
        });
        assert!(hub.wait_subscribed("alice", "acme", Duration::from_secs(5)));
        subscriber.join().expect("subscriber");
        assert!(
            !hub.wait_subscribed("alice", "beta", Duration::from_millis(30)),
            "beta is not subscribed: the wait ends at its bound"
        );
        hub.set_subscriber_down();
        let started = Instant::now();
        assert!(!hub.wait_subscribed("alice", "acme", Duration::from_secs(5)));
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "no wait while down"
        );
    }

    #[test]
    fn a_workspace_frame_reaches_every_connection_on_it_and_the_set_follows() {
        let hub = Hub::new("i".into());
        let before = hub.audience_changed();
        let (a, alice) = member(&hub, "alice", "acme");
        let (b, bob) = member(&hub, "bob", "acme");
        let (_c, carol) = member(&hub, "carol", "beta");
        assert!(hub.audience_changed() > before);
        assert_eq!(hub.deliver_to_workspace("acme", &frame()), 2);
        assert_eq!(
            (
                count(&alice.frames),
                count(&bob.frames),
                count(&carol.frames)
            ),
            (1, 1, 0)
        );
        let (users, workspaces) = hub.audience();
        assert_eq!(users.len(), 3);
        assert!(workspaces.contains("acme") && workspaces.contains("beta"));
        drop(a);
        assert!(hub.holds_workspace("acme"), "bob is still on it");
        let settled = hub.audience_changed();
        drop(b);
        assert!(!hub.holds_workspace("acme"));
        assert!(hub.audience_changed() > settled, "acme lost its last");
    }
}
