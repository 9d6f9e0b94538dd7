//! The roster: which WebSocket connections each (user, workspace) holds across all
//! instances, so that at most `NOTIFD_CONNECTIONS_PER_USER` stay open (contract §3).
//!
//! Comes after the handshake: a connection that passed authentication calls
//! [`Roster::admit`], which answers the connections a newer one pushed out, oldest
//! first. They may live on any instance, so the caller announces them on the
//! control channel as an [`Evict`] and every instance closes its own with 4005 (the
//! hub, after). A connection that ends calls [`Roster::leave`].
//!
//! One Redis sorted set per (user, workspace) ([`key`]): members are connections
//! (`{id}@{instance}`), scores their admission time in µs. One Lua script per admit
//! (`admit.lua`) adds the newcomer, pops everything beyond the newest N and refreshes
//! the key's TTL. Redis runs a script alone, so concurrent admits on any number of
//! instances agree: after each, the set holds at most N, and every evicted member is
//! reported to exactly one caller. It costs the handshake one round trip (0.06 ms
//! p50, 0.17 ms p99 against a local Redis, where a PING takes 0.02 ms). The score
//! is Redis's own clock, forced above the newest score, so that clock skew between
//! hosts can never make a newcomer rank older than the connections it replaces (with
//! instance clocks, a host 1 s behind would see its new connections evicted at once).
//!
//! A crashed instance never calls `leave`; its members stay, with scores older than
//! any connection opened after the crash (its clients' reconnections included), so
//! they are among the first evicted as the user's newer connections arrive, and each
//! goes once. Until then they take a slot: a live connection older than a stale one
//! may be evicted before it (one spurious 4005, after which the client reconnects as
//! the newest). The TTL (`KEY_TTL`, refreshed by every admit) removes the keys of
//! users who never come back; it also forgets connections of a key nobody admitted
//! to for that long, which then count no more (the limit errs on the side of
//! keeping connections open). Keys are only ever named, never scanned.
//!
//! Redis unreachable: a call never takes more than `BUDGET` (waiting for a pooled
//! connection included) and then answers [`Admission::Unavailable`]; for
//! `RETRY_AFTER` after that, calls answer at once without trying, and then one
//! caller tries again. The caller then applies the limit among its own instance's
//! connections only. Connections opened meanwhile are not in the roster; admitting
//! one again later is harmless (an admit of a member already there keeps its place
//! and only refreshes the TTL).
//!
//! The limit travels with each admit, so instances should share one
//! `NOTIFD_CONNECTIONS_PER_USER`: with different ones, each admit trims the roster to
//! its own instance's limit.

mod member;
mod pool;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use crossbeam_channel::{Receiver, Sender};
use std::time::{Duration, Instant};

pub use member::{key, Conn, Evict};

use crate::error::Error;

/// How long one roster call may take, from asking to the answer.
pub const BUDGET: Duration = Duration::from_millis(250);
/// After a failed call, how long calls answer `Unavailable` without trying Redis.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);
/// Expiry of a roster key, refreshed by every admit: only keys nobody admits to for
/// this long go, which leaves crashed instances' members no longer than that.
pub const KEY_TTL: Duration = Duration::from_secs(24 * 3600);
/// Redis connections of the roster. A call holds one for a round trip only (about
/// 0.1 ms), so four carry thousands of handshakes a second.
const POOL_SIZE: u32 = 4;

/// What `admit` decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// The connection is in the roster; these, oldest first, must close with 4005
    /// wherever they are (empty while the user is within the limit).
    Admitted { evicted: Vec<Conn> },
    /// Redis did not answer within `BUDGET` (or is known to be down): the caller
    /// decides among its own connections.
    Unavailable,
}

/// The cluster-wide roster; cheap to clone, safe to call from any thread.
#[derive(Clone)]
pub struct Roster {
    inner: Arc<Inner>,
}

struct Inner {
    pool: pool::Pool,
    prefix: String,
    limit: usize,
    health: Health,
    /// Leaves for the roster's own thread (`leave_later`); dropping the last roster
    /// drops this sender, which ends the thread.
    leaves: Sender<(String, String, Conn)>,
}

/// Leaves waiting for the roster thread. Past this (Redis very slow), a leave is
/// dropped: the member then stays and is evicted first later, as a crashed
/// instance's are.
const LEAVES_QUEUED: usize = 4096;

impl Roster {
    /// A roster allowing `limit` connections per (user, workspace). Connects lazily:
    /// a Redis that is down now only makes the first calls `Unavailable`.
    pub fn new(redis_url: &str, prefix: &str, limit: usize) -> Result<Roster, Error> {
        if limit == 0 {
            return Err(Error::Internal(
                "a roster needs a limit of at least 1".into(),
            ));
        }
        let redis = crate::redis_link::Redis::open(redis_url)
            .map_err(|e| Error::Internal(format!("bad Redis URL: {e}")))?;
        let server = redis.describe();
        let (leaves, queued) = crossbeam_channel::bounded(LEAVES_QUEUED);
        let roster = Roster {
            inner: Arc::new(Inner {
                pool: pool::Pool::new(redis, POOL_SIZE, BUDGET),
                prefix: prefix.to_string(),
                limit,
                health: Health::new(server),
                leaves,
            }),
        };
        let weak = Arc::downgrade(&roster.inner);
        std::thread::Builder::new()
            .name("notifd-roster".into())
            .spawn(move || leave_queued(&weak, &queued))
            .map_err(|e| Error::Startup(format!("cannot start the roster thread: {e}")))?;
        Ok(roster)
    }

    /// `leave`, on the roster's own thread: for a connection thread, which must not
    /// wait on Redis (nor grow its stack into the Redis client).
    pub fn leave_later(&self, user_id: &str, workspace: &str, conn: &Conn) {
        let leave = (user_id.to_string(), workspace.to_string(), conn.clone());
        let _ = self.inner.leaves.try_send(leave);
    }

    /// Most connections per (user, workspace).
    pub fn limit(&self) -> usize {
        self.inner.limit
    }

    /// Adds `conn` to the roster of `user_id` on `workspace`; answers the ones it
    /// pushed beyond the limit. Call it once `conn` can be found by an `Evict` (it is
    /// in the hub): the admit of a newer connection may evict it the next moment.
    pub fn admit(&self, user_id: &str, workspace: &str, conn: &Conn) -> Admission {
        let key = key(&self.inner.prefix, user_id, workspace);
        let member = conn.member();
        let limit = self.inner.limit;
        match self.call(|c| c.admit(&key, &member, limit, KEY_TTL)) {
            Some(members) => Admission::Admitted {
                evicted: members.iter().filter_map(|m| Conn::parse(m)).collect(),
            },
            None => Admission::Unavailable,
        }
    }

    /// Removes `conn` (it closed). Best effort: while Redis is unreachable the member
    /// stays, to be evicted in its turn, as a crashed instance's are.
    pub fn leave(&self, user_id: &str, workspace: &str, conn: &Conn) {
        let key = key(&self.inner.prefix, user_id, workspace);
        let member = conn.member();
        self.call(|c| c.leave(&key, &member));
    }

    fn call<T>(&self, call: impl Fn(&mut pool::Conn) -> redis::RedisResult<T>) -> Option<T> {
        let health = &self.inner.health;
        if !health.may_try() {
            return None;
        }
        match self.inner.pool.run(BUDGET, call) {
            Ok(value) => {
                health.answered();
                Some(value)
            }
            Err(cause) => {
                health.failed(&cause);
                None
            }
        }
    }
}

/// The roster thread: leaves one by one until every roster is gone.
fn leave_queued(roster: &Weak<Inner>, queued: &Receiver<(String, String, Conn)>) {
    while let Ok((user_id, workspace, conn)) = queued.recv() {
        let Some(inner) = roster.upgrade() else {
            return;
        };
        Roster { inner }.leave(&user_id, &workspace, &conn);
    }
}

/// Whether Redis is worth asking: after a failure, nobody asks for `RETRY_AFTER`,
/// then one caller does. Lock-free, since every handshake passes here.
struct Health {
    /// Milliseconds since `epoch` when Redis may be tried again; 0 while it answers.
    retry_at: AtomicU64,
    epoch: Instant,
    /// `host:port`, for the log (never the URL: it may hold a password).
    server: String,
}

impl Health {
    fn new(server: String) -> Health {
        Health {
            retry_at: AtomicU64::new(0),
            epoch: Instant::now(),
            server,
        }
    }

    fn now_ms(&self) -> u64 {
        // Plus one: 0 means "up", and the first millisecond must not read as that.
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    fn may_try(&self) -> bool {
        let at = self.retry_at.load(Ordering::Acquire);
        if at == 0 {
            return true;
        }
        let now = self.now_ms();
        // The first caller past `retry_at` moves it on and tries; the rest decide
        // locally meanwhile instead of all waiting on a Redis that may still be down.
        let next = now + RETRY_AFTER.as_millis() as u64;
        now >= at
            && self
                .retry_at
                .compare_exchange(at, next, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
    }

    fn answered(&self) {
        if self.retry_at.swap(0, Ordering::AcqRel) != 0 {
            log::info!(server = self.server.as_str(); "roster: redis answers again");
        }
    }

    fn failed(&self, cause: &str) {
        let next = self.now_ms() + RETRY_AFTER.as_millis() as u64;
        if self.retry_at.swap(next, Ordering::AcqRel) == 0 {
            log::warn!(
                server = self.server.as_str(),
                error = cause,
                retry_ms = RETRY_AFTER.as_millis() as u64;
                "roster: redis unreachable; connection limits apply per instance meanwhile"
            );
        }
    }
}
