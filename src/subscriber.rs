//! The subscriber: one thread per instance holding a Redis Pub/Sub connection,
//! turning published notifications into hub deliveries (contract §5).
//!
//! Comes after `publisher` (on any instance) and before `hub`. One pattern
//! subscription, `{prefix}notifications:*`, receives every user's channel and is
//! filtered locally by the hub: fine for one Redis; past that, sharded Pub/Sub is the
//! way. A second pattern, `{prefix}notifd:state:*`, carries each user's state changes
//! and counters (the event protocol), parsed only for users connected here; and the
//! channel `{prefix}notifd:control` carries the roster's evictions (4005) between
//! instances. One connection carries all three, so a state change arrives after
//! the notifications published before it. The thread survives Redis restarts: it reconnects with
//! doubling backoff, subscribes again and asks every connection to catch up from
//! PostgreSQL, since whatever was published meanwhile never reached this instance.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use crate::events::StateMessage;
use crate::hub::{Frame, Hub};
use crate::notification::Envelope;
use crate::roster::Evict;
use crate::shutdown::Shutdown;

/// How often the thread looks up from a blocking read to check for shutdown.
const READ_TIMEOUT: Duration = Duration::from_millis(500);
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
    shutdown: Shutdown,
) -> std::io::Result<(JoinHandle<()>, Receiver<()>)> {
    let client = redis::Client::open(redis_url).map_err(std::io::Error::other)?;
    let prefix = prefix.to_string();
    let (ready, subscribed) = crossbeam_channel::bounded(1);
    let stopping = shutdown.clone();
    // Essential: without it no notification reaches a client of this instance.
    let thread = crate::supervise::spawn_essential(
        THREAD_NAME,
        256 * 1024,
        move || stopping.is_fired(),
        move || run(&client, &prefix, &hub, &shutdown, &ready),
    )?;
    Ok((thread, subscribed))
}

fn run(client: &redis::Client, prefix: &str, hub: &Hub, shutdown: &Shutdown, ready: &Sender<()>) {
    let mut backoff = MIN_BACKOFF;
    let mut sessions = 0u64;
    while !shutdown.is_fired() {
        let mut subscribed = false;
        match session(
            client,
            prefix,
            hub,
            shutdown,
            sessions,
            &mut subscribed,
            ready,
        ) {
            Ok(()) => return,
            Err(err) => {
                log::warn!(
                    server = crate::publisher::redis_server(client).as_str(),
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

/// One connection's life: subscribe, catch clients up, then dispatch until an error
/// (returned, to reconnect) or shutdown (`Ok`).
fn session(
    client: &redis::Client,
    prefix: &str,
    hub: &Hub,
    shutdown: &Shutdown,
    sessions: u64,
    subscribed: &mut bool,
    ready: &Sender<()>,
) -> redis::RedisResult<()> {
    let mut conn = client.get_connection_with_timeout(Duration::from_secs(2))?;
    conn.set_write_timeout(Some(Duration::from_secs(2)))?;
    let mut pubsub = conn.as_pubsub();
    pubsub.set_read_timeout(Some(Duration::from_secs(2)))?;
    // Every user's channel: the channel name with `*` for the user.
    let pattern = crate::channels::all_user_notifications(prefix);
    let control = crate::channels::control(prefix);
    pubsub.psubscribe(&pattern)?;
    pubsub.psubscribe(crate::channels::all_user_states(prefix))?;
    pubsub.subscribe(&control)?;
    pubsub.set_read_timeout(Some(READ_TIMEOUT))?;
    *subscribed = true;
    let _ = ready.try_send(());
    if sessions == 0 {
        log::info!(pattern = pattern.as_str(); "redis subscriber ready");
    } else {
        crate::metrics::inc(&crate::metrics::METRICS.redis_reconnects);
        log::info!(connections = hub.len(); "redis subscriber reconnected; catching clients up");
    }
    // Anything published while we were not subscribed is in PostgreSQL only.
    hub.catch_up_all();
    dispatch(&mut pubsub, prefix, hub, shutdown)
}

/// Hands every message to the hub until an error (returned, to reconnect) or
/// shutdown (`Ok`); pings Redis after a silence, to notice a dead connection.
fn dispatch(
    pubsub: &mut redis::PubSub<'_>,
    prefix: &str,
    hub: &Hub,
    shutdown: &Shutdown,
) -> redis::RedisResult<()> {
    let control = crate::channels::control(prefix);
    let mut last_heard = Instant::now();
    while !shutdown.is_fired() {
        crate::supervise::fault_point(THREAD_NAME);
        match pubsub.get_message() {
            Ok(message) => {
                last_heard = Instant::now();
                let payload: String = message.get_payload()?;
                let channel = message.get_channel_name();
                if channel == control {
                    on_control(hub, &payload);
                } else if let Some(user_id) = crate::channels::state_user(prefix, channel) {
                    on_state(hub, user_id, &payload);
                } else {
                    on_notification(hub, payload);
                }
            }
            Err(err) if err.is_timeout() => {
                if last_heard.elapsed() >= PING_AFTER {
                    // In subscribed mode Redis answers PING with ["pong", ""], not "PONG".
                    pubsub.ping::<redis::Value>()?;
                    last_heard = Instant::now();
                }
            }
            Err(err) => return Err(err),
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
    hub.deliver(&envelope.user_id, envelope.workspace.as_deref(), &frame);
}

/// A user's state message: parsed only when that user has a connection here.
fn on_state(hub: &Hub, user_id: &str, payload: &str) {
    if !hub.holds(user_id) {
        return;
    }
    match serde_json::from_str::<StateMessage>(payload) {
        Ok(message) => hub.deliver_state(user_id, &Arc::new(message)),
        Err(err) => {
            log::warn!(error = err.to_string().as_str(); "ignoring a state message that does not parse")
        }
    }
}

/// Connections a newer one replaced (the roster's evictions): this instance closes
/// its own with 4005.
fn on_control(hub: &Hub, payload: &str) {
    match serde_json::from_str::<Evict>(payload) {
        Ok(evict) => {
            let ids: Vec<u64> = evict.ids_on(hub.instance()).collect();
            if !ids.is_empty() {
                hub.replace(&evict.user_id, &evict.workspace, &ids);
            }
        }
        Err(err) => {
            log::warn!(error = err.to_string().as_str(); "ignoring an unknown control message")
        }
    }
}
