//! The event protocol `notifd.v1` (contract §3.1) as the generator's clients see it:
//! which protocol a run's clients ask for (`BENCH_PROTOCOL`), the options of the
//! event-protocol scenarios, one v1 frame as far as the generator reads it, and the
//! per-kind counts of the frames received. `ws.rs` asks for the subprotocol in the
//! handshake and hands each frame's text to its reader, which parses it here;
//! `scenarios::run` puts the counts into the result JSON.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Deserialize;
use serde_json::{json, Value};

/// The subprotocol a v1 client offers and the server must select.
pub const SUBPROTOCOL: &str = "notifd.v1";

/// What the WebSocket clients of a run speak.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Protocol {
    /// No subprotocol: each text frame is one notification (§3).
    Plain,
    /// `notifd.v1`: each text frame is one event (§3.1).
    V1,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Plain => "plain",
            Protocol::V1 => "v1",
        }
    }

    /// The `Sec-WebSocket-Protocol` to offer, if any.
    pub fn subprotocol(self) -> Option<&'static str> {
        match self {
            Protocol::Plain => None,
            Protocol::V1 => Some(SUBPROTOCOL),
        }
    }
}

/// Options of the event protocol (issue 12): the clients' protocol, and the
/// state-fanout scenario's users, rate and second notifd.
#[derive(clap::Args, Clone)]
pub struct EventArgs {
    /// plain or v1: what the WebSocket clients of connections, latency and throughput
    /// ask for (state-fanout always speaks v1).
    #[arg(long, env = "BENCH_PROTOCOL", value_enum, default_value_t = Protocol::Plain)]
    pub protocol: Protocol,
    /// Users of the state-fanout scenario, one v1 client each.
    #[arg(long, env = "BENCH_FANOUT_USERS", default_value_t = 200)]
    pub fanout_users: usize,
    /// Marks (read, unread alternately) per second of the state-fanout scenario.
    #[arg(long, env = "BENCH_FANOUT_RATE", default_value_t = 200)]
    pub fanout_rate: u64,
    /// state-fanout: the second notifd's process id (it holds the clients).
    #[arg(long)]
    pub peer_pid: Option<u32>,
    /// state-fanout: the second notifd's REST address (for /readyz).
    #[arg(long)]
    pub peer_http: Option<SocketAddr>,
    /// state-fanout: the second notifd's WebSocket address.
    #[arg(long)]
    pub peer_ws: Option<SocketAddr>,
}

/// One v1 frame: its kind, and the fields the scenarios read. `N` is what the
/// scenario needs of a `notification` event's notification.
#[derive(Deserialize)]
pub struct Event<N> {
    pub event: String,
    pub notification: Option<N>,
    #[serde(default)]
    pub ids: Vec<String>,
    #[serde(default)]
    pub changes: Option<Value>,
}

impl<N> Event<N> {
    /// For an `updated` event that changes `read_at`: true when it marks read, false
    /// when it marks unread (null). None for any other change.
    pub fn read_change(&self) -> Option<bool> {
        match self.changes.as_ref()?.get("read_at")? {
            Value::Null => Some(false),
            Value::String(_) => Some(true),
            _ => None,
        }
    }
}

/// Event frames received, by kind.
#[derive(Default)]
pub struct EventCounts {
    notification: AtomicU64,
    synced: AtomicU64,
    counts: AtomicU64,
    updated: AtomicU64,
    /// Another kind, or a frame that is not a v1 event at all.
    other: AtomicU64,
}

impl EventCounts {
    pub fn count(&self, kind: &str) {
        let counter = match kind {
            "notification" => &self.notification,
            "synced" => &self.synced,
            "counts" => &self.counts,
            "updated" => &self.updated,
            _ => &self.other,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn to_json(&self) -> Value {
        let get = |c: &AtomicU64| c.load(Ordering::Acquire);
        json!({
            "notification": get(&self.notification),
            "synced": get(&self.synced),
            "counts": get(&self.counts),
            "updated": get(&self.updated),
            "other": get(&self.other),
        })
    }
}
