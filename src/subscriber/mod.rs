//! The subscriber: one thread per instance holding a Redis Pub/Sub connection,
//! turning published notifications into hub deliveries (contract §5).
//!
//! Comes after `publisher` (on any instance) and before `hub`. Targeted: it
//! subscribes to the channels of the users connected here, and only those, so an
//! instance receives the traffic of its own users, not the deployment's. Each such
//! user has two channels: `{prefix}notifications:{user}` (the JSON of §1) and
//! `{prefix}notifd:state:{user}` (state changes and counters for the event protocol,
//! and the roster's evictions, 4005). One connection carries both, so a state change
//! arrives after the notifications published before it. Each workspace with a
//! connection here has two as well: `{prefix}notifications:workspace:{slug}` (its
//! workspace-audience notifications) and `{prefix}notifd:state:workspace:{slug}` (their
//! counter row).
//!
//! The set follows the hub: whenever a user or a workspace gains a first or loses a
//! last connection here, the thread subscribes or unsubscribes at its next look up
//! from the socket (at most `READ_TIMEOUT` later), many at a time under churn. A
//! notification published after a connection registered but before its channel was
//! subscribed reached no one here, so the connections of each newly subscribed user
//! or workspace catch up from PostgreSQL once the subscription is confirmed.
//!
//! The thread survives Redis restarts: it reconnects with doubling backoff,
//! subscribes again and asks every connection to catch up from PostgreSQL, since
//! whatever was published meanwhile never reached this instance.

use std::collections::HashSet;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

mod feed;
mod fresh;
mod resp;
mod shards;

use feed::{Feed, Single, READ_TIMEOUT};

use crate::channels::Channel;
use crate::events::StateMessage;
use crate::hub::{Frame, Hub};
use crate::notification::Envelope;
use crate::redis_link::Redis;
use crate::roster::Evict;
use crate::shutdown::Shutdown;
use crate::store::Store;

/// How long connecting to Redis may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Silence after which a PING checks that the connection is still alive.
const PING_AFTER: Duration = Duration::from_secs(10);
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// The subscriber thread's name (in logs, and for `supervise`).
pub const THREAD_NAME: &str = "notifd-subscriber";

/// Starts the subscriber thread. The receiver gets a message once the first
/// subscription is in place (so a server can wait for it before taking connections).
pub fn spawn(
    redis_url: &str,
    prefix: &str,
    hub: Hub,
    store: Store,
    shutdown: Shutdown,
) -> std::io::Result<(JoinHandle<()>, Receiver<()>)> {
    let redis = Redis::open(redis_url).map_err(std::io::Error::other)?;
    let prefix = prefix.to_string();
    let (ready, subscribed) = crossbeam_channel::bounded(1);
    let stopping = shutdown.clone();
    // Essential: without it no notification reaches a client of this instance.
    let thread = crate::supervise::spawn_essential(
        THREAD_NAME,
        256 * 1024,
        move || stopping.is_fired(),
        move || run(&redis, &prefix, &hub, &store, &shutdown, &ready),
    )?;
    Ok((thread, subscribed))
}

fn run(
    redis: &Redis,
    prefix: &str,
    hub: &Hub,
    store: &Store,
    shutdown: &Shutdown,
    ready: &Sender<()>,
) {
    let mut backoff = MIN_BACKOFF;
    let mut sessions = 0u64;
    while !shutdown.is_fired() {
        let mut subscribed = false;
        let start = Start {
            prefix,
            hub,
            store,
            shutdown,
            sessions,
            ready,
        };
        match session(redis, &start, &mut subscribed) {
            Ok(()) => return,
            Err(err) => {
                // Nothing is subscribed any more: new connections go on without
                // waiting, and are caught up when the next session starts.
                hub.set_subscriber_down();
                log::warn!(
                    server = redis.describe().as_str(),
                    error = err.to_string().as_str(),
                    retry_ms = backoff.as_millis() as u64;
                    "redis subscriber disconnected"
                );
            }
        }
        if subscribed {
            // A session that got going resets the backoff: the next outage starts short.
            sessions += 1;
            backoff = MIN_BACKOFF;
        }
        if shutdown.wait(backoff) {
            return;
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// One connection's life (one server's, or one per cluster primary): subscribe,
/// catch clients up, then dispatch until an error (returned, to reconnect) or
/// shutdown (`Ok`).
fn session(redis: &Redis, start: &Start<'_>, subscribed: &mut bool) -> redis::RedisResult<()> {
    match redis {
        Redis::Single(client) => match client.get_connection_info().addr() {
            redis::ConnectionAddr::Tcp(host, port) => {
                let addr = format!("{host}:{port}");
                let mut feed = shards::Shards::single(client, &addr, CONNECT_TIMEOUT)?;
                serve(&mut feed, start, subscribed)
            }
            _ => {
                let mut conn = client.get_connection_with_timeout(CONNECT_TIMEOUT)?;
                conn.set_write_timeout(Some(CONNECT_TIMEOUT))?;
                let mut feed = Single::new(conn.as_pubsub())?;
                serve(&mut feed, start, subscribed)
            }
        },
        Redis::Cluster(seeds) => {
            let mut feed = shards::Shards::connect(seeds, CONNECT_TIMEOUT)?;
            log::debug!(primaries = feed.len(); "redis cluster subscriber connected");
            serve(&mut feed, start, subscribed)
        }
    }
}

/// What a session starts from.
struct Start<'a> {
    prefix: &'a str,
    hub: &'a Hub,
    store: &'a Store,
    shutdown: &'a Shutdown,
    sessions: u64,
    ready: &'a Sender<()>,
}

fn serve(feed: &mut impl Feed, start: &Start<'_>, subscribed: &mut bool) -> redis::RedisResult<()> {
    let Start {
        prefix,
        hub,
        store,
        sessions,
        ready,
        ..
    } = *start;
    let mut subscriptions = Subscriptions::default();
    subscriptions.follow(feed, prefix, hub, store)?;
    *subscribed = true;
    let _ = ready.try_send(());
    if sessions == 0 {
        log::info!(users = subscriptions.users.len(), workspaces = subscriptions.workspaces.len(); "redis subscriber ready");
    } else {
        crate::metrics::inc(&crate::metrics::METRICS.redis_reconnects);
        log::info!(connections = hub.len(); "redis subscriber reconnected; catching clients up");
    }
    // Anything published while we were not subscribed is in PostgreSQL only.
    hub.catch_up_all();
    dispatch(feed, start, &mut subscriptions)
}

/// The users and workspaces whose channels this connection is subscribed to.
#[derive(Default)]
struct Subscriptions {
    users: HashSet<String>,
    workspaces: HashSet<String>,
    /// The hub's `audience_changed` when the sets were last brought in line with it.
    seen: Option<u64>,
}

impl Subscriptions {
    /// Subscribes to the channels of users and workspaces newly connected here and
    /// unsubscribes from those gone, if the hub's sets changed since the last look;
    /// then catches up the connections registered since (`fresh`): their channels
    /// are live now.
    fn follow(
        &mut self,
        feed: &mut impl Feed,
        prefix: &str,
        hub: &Hub,
        store: &Store,
    ) -> redis::RedisResult<()> {
        // Taken first: every connection taken here is in the sets read below (a
        // registration bumps `audience_changed` before it counts as fresh).
        let fresh = hub.take_fresh();
        let changed = hub.audience_changed();
        if self.seen != Some(changed) {
            let (users, workspaces) = hub.audience();
            sync(feed, &mut self.users, users, |user| {
                user_channels(prefix, user)
            })?;
            sync(feed, &mut self.workspaces, workspaces, |slug| {
                workspace_channels(prefix, slug)
            })?;
            self.seen = Some(changed);
            hub.set_subscribed(&self.users, &self.workspaces);
        }
        if !fresh.is_empty() {
            fresh::catch_up(store, hub, &fresh);
        }
        Ok(())
    }
}

/// Brings the subscribed set `have` in line with `wanted`: unsubscribes the channels
/// of the ones gone and subscribes those of the new ones.
fn sync(
    feed: &mut impl Feed,
    have: &mut HashSet<String>,
    wanted: HashSet<String>,
    channels: impl Fn(&str) -> [String; 2],
) -> redis::RedisResult<()> {
    let gone: Vec<String> = have.difference(&wanted).cloned().collect();
    let new: Vec<String> = wanted.difference(have).cloned().collect();
    let of = |names: &[String]| -> Vec<String> { names.iter().flat_map(|n| channels(n)).collect() };
    feed.unsubscribe_all(&of(&gone))?;
    for name in &gone {
        have.remove(name);
    }
    feed.subscribe_all(&of(&new))?;
    have.extend(new);
    Ok(())
}

/// A user's two channels.
fn user_channels(prefix: &str, user_id: &str) -> [String; 2] {
    [
        crate::channels::user_notifications(prefix, user_id),
        crate::channels::user_state(prefix, user_id),
    ]
}

/// A workspace's two channels.
fn workspace_channels(prefix: &str, slug: &str) -> [String; 2] {
    [
        crate::channels::workspace_notifications(prefix, slug),
        crate::channels::workspace_state(prefix, slug),
    ]
}

/// Hands every message to the hub until an error (returned, to reconnect) or
/// shutdown (`Ok`); follows the hub's users between reads; pings Redis after a
/// silence, to notice a dead connection.
fn dispatch(
    feed: &mut impl Feed,
    start: &Start<'_>,
    subscriptions: &mut Subscriptions,
) -> redis::RedisResult<()> {
    let Start {
        prefix,
        hub,
        store,
        shutdown,
        ..
    } = *start;
    let mut last_heard = Instant::now();
    let mut last_look = Instant::now();
    while !shutdown.is_fired() {
        crate::supervise::fault_point(THREAD_NAME);
        // On a clock as well as in a silence: under steady traffic a read never times
        // out, and new connections must not wait for a pause to be subscribed.
        if last_look.elapsed() >= READ_TIMEOUT {
            subscriptions.follow(feed, prefix, hub, store)?;
            last_look = Instant::now();
        }
        match feed.next()? {
            Some(message) => {
                last_heard = Instant::now();
                crate::metrics::inc(&crate::metrics::METRICS.redis_messages_received);
                let payload = message.payload;
                match crate::channels::parse(prefix, &message.channel) {
                    Some(Channel::UserState(user_id)) => on_user_message(hub, user_id, &payload),
                    Some(Channel::WorkspaceState(slug)) => on_workspace_state(hub, slug, &payload),
                    Some(Channel::UserNotifications | Channel::WorkspaceNotifications(_)) => {
                        on_notification(hub, payload)
                    }
                    None => {}
                }
            }
            None => {
                subscriptions.follow(feed, prefix, hub, store)?;
                last_look = Instant::now();
                if last_heard.elapsed() >= PING_AFTER {
                    feed.ping()?;
                    last_heard = Instant::now();
                }
            }
        }
    }
    Ok(())
}

fn on_notification(hub: &Hub, payload: String) {
    let envelope: Envelope = match serde_json::from_str(&payload) {
        Ok(envelope) => envelope,
        Err(err) => {
            log::warn!(error = err.to_string().as_str(); "ignoring a message that is not a notification");
            return;
        }
    };
    let frame = Frame {
        id: envelope.id,
        json: payload.into(),
        // Checked where a frame is written (queued or straight to the socket), the one
        // place that also sees frames that expire while they wait.
        expires: envelope.expires(),
    };
    match (&envelope.user_id, &envelope.workspace) {
        (Some(user_id), workspace) => {
            hub.deliver(user_id, workspace.as_deref(), &frame);
        }
        (None, Some(slug)) => {
            hub.deliver_to_workspace(slug, &frame);
        }
        (None, None) => {
            log::warn!(id = envelope.id.to_string().as_str(); "ignoring a notification with neither user nor workspace")
        }
    }
}

/// A workspace's broadcasts counter row: for every connection on it, when it has any
/// here.
fn on_workspace_state(hub: &Hub, slug: &str, payload: &str) {
    if !hub.holds_workspace(slug) {
        return;
    }
    match serde_json::from_str::<StateMessage>(payload) {
        Ok(message) => hub.deliver_workspace_state(slug, &Arc::new(message)),
        Err(err) => {
            log::warn!(error = err.to_string().as_str(); "ignoring a workspace state message that does not parse")
        }
    }
}

/// What a user's state channel carries.
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum UserMessage {
    /// A state change and the counters it left (the event protocol).
    State(StateMessage),
    /// Connections a newer one replaced (the roster's evictions).
    Evict(Evict),
}

/// A message on a user's state channel: parsed only when that user has a connection
/// here (an unsubscribe may still be on its way).
fn on_user_message(hub: &Hub, user_id: &str, payload: &str) {
    if !hub.holds(user_id) {
        return;
    }
    match serde_json::from_str::<UserMessage>(payload) {
        Ok(UserMessage::State(message)) => hub.deliver_state(user_id, &Arc::new(message)),
        Ok(UserMessage::Evict(evict)) => {
            // This instance closes its own with 4005.
            let ids: Vec<u64> = evict.ids_on(hub.instance()).collect();
            if !ids.is_empty() {
                hub.replace(&evict.user_id, &evict.workspace, &ids);
            }
        }
        Err(err) => {
            log::warn!(error = err.to_string().as_str(); "ignoring a state message that does not parse")
        }
    }
}
