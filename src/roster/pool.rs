//! The roster's Redis connections: a small r2d2 pool of connections that each hold
//! the admit script loaded (`SCRIPT LOAD` once per connection, then `EVALSHA` with
//! its 40-byte digest), and one call under one deadline.
//!
//! `roster` (before) decides what to ask; this module only runs it within the
//! budget, so a handshake thread never waits on Redis longer than that.

use std::time::{Duration, Instant};

use redis::{ErrorKind, ServerErrorKind};

use crate::error::with_causes;
use crate::redis_link::{Link, Redis};

/// The script `admit` runs (see the file for what it does and why).
const ADMIT: &str = include_str!("admit.lua");

/// Shortest socket timeout set (std refuses a zero one).
const MIN_TIMEOUT: Duration = Duration::from_millis(1);

pub struct Pool {
    pool: r2d2::Pool<Manager>,
    manager: Manager,
}

impl Pool {
    pub fn new(redis: Redis, size: u32, connect_timeout: Duration) -> Pool {
        let manager = Manager {
            redis,
            connect_timeout,
        };
        let pool = r2d2::Pool::builder()
            .max_size(size)
            .min_idle(Some(0))
            .test_on_check_out(false)
            .connection_timeout(connect_timeout)
            .error_handler(Box::new(r2d2::NopErrorHandler))
            .build_unchecked(manager.clone());
        Pool { pool, manager }
    }

    /// Runs `call` on a connection; all of it (waiting for the connection, and a
    /// second try on a fresh one) within `budget`. The error says why, for the log.
    pub fn run<T>(
        &self,
        budget: Duration,
        call: impl Fn(&mut Conn) -> redis::RedisResult<T>,
    ) -> Result<T, String> {
        let deadline = Instant::now() + budget;
        let mut pooled = self.pool.get_timeout(budget).map_err(|e| with_causes(&e))?;
        let err = match until(&pooled.conn, deadline).and_then(|()| pooled.call(&call)) {
            Ok(value) => return Ok(value),
            Err(err) => err,
        };
        drop(pooled);
        // A pooled connection goes stale when Redis restarts and only a command
        // finds out (it is now marked broken and the pool drops it): one more try on
        // a fresh connection, if time is left, so a restart does not look like an
        // outage. The same for a script flushed from Redis (`SCRIPT FLUSH`): a fresh
        // connection loads it again. (Should the first try have run and only its
        // reply been lost, the second is harmless: an admit of a member already there
        // keeps its place; what the first evicted goes unreported, those connections
        // staying open uncounted until they close.)
        let stale = err.is_io_error() || err.kind() == ErrorKind::Server(ServerErrorKind::NoScript);
        if !stale || deadline.saturating_duration_since(Instant::now()) < MIN_TIMEOUT {
            return Err(with_causes(&err));
        }
        let mut fresh = self.manager.open(deadline).map_err(|e| with_causes(&e))?;
        until(&fresh.conn, deadline)
            .and_then(|()| fresh.call(&call))
            .map_err(|e| with_causes(&e))
    }
}

/// A roster connection: the script's digest, and whether a command failed on it.
pub struct Conn {
    conn: Link,
    admit_sha: String,
    broken: bool,
}

impl Conn {
    /// Runs the admit script: `(member, limit, ttl)` on `key`; the evicted members.
    pub fn admit(
        &mut self,
        key: &str,
        member: &str,
        limit: usize,
        ttl: Duration,
    ) -> redis::RedisResult<Vec<String>> {
        redis::cmd("EVALSHA")
            .arg(&self.admit_sha)
            .arg(1)
            .arg(key)
            .arg(member)
            .arg(limit)
            .arg(ttl.as_secs().max(1))
            .query(&mut self.conn)
    }

    pub fn leave(&mut self, key: &str, member: &str) -> redis::RedisResult<()> {
        redis::cmd("ZREM")
            .arg(key)
            .arg(member)
            .query::<i64>(&mut self.conn)
            .map(drop)
    }

    fn call<T>(
        &mut self,
        call: &impl Fn(&mut Conn) -> redis::RedisResult<T>,
    ) -> redis::RedisResult<T> {
        let result = call(self);
        // After a timeout the reply may still arrive and would answer the next
        // command: any failure retires the connection.
        self.broken |= result.is_err();
        result
    }
}

/// Sets `conn`'s read and write timeouts to end at `deadline`.
fn until(conn: &Link, deadline: Instant) -> redis::RedisResult<()> {
    conn.set_timeouts(left(deadline))
}

/// Time left until `deadline`, at least `MIN_TIMEOUT`.
fn left(deadline: Instant) -> Duration {
    deadline
        .saturating_duration_since(Instant::now())
        .max(MIN_TIMEOUT)
}

#[derive(Clone)]
struct Manager {
    redis: Redis,
    connect_timeout: Duration,
}

impl Manager {
    /// Connects and loads the script, all before `deadline`.
    fn open(&self, deadline: Instant) -> redis::RedisResult<Conn> {
        // On a cluster, SCRIPT LOAD goes to every node: the script is there whichever
        // primary owns a roster key, a promoted replica included.
        let mut conn = self.redis.connect(left(deadline))?;
        until(&conn, deadline)?;
        let admit_sha = redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg(ADMIT)
            .query(&mut conn)?;
        Ok(Conn {
            conn,
            admit_sha,
            broken: false,
        })
    }
}

impl r2d2::ManageConnection for Manager {
    type Connection = Conn;
    type Error = redis::RedisError;

    fn connect(&self) -> Result<Conn, redis::RedisError> {
        self.open(Instant::now() + self.connect_timeout)
    }

    fn is_valid(&self, conn: &mut Conn) -> Result<(), redis::RedisError> {
        conn.conn.ping()
    }

    fn has_broken(&self, conn: &mut Conn) -> bool {
        conn.broken || !redis::ConnectionLike::is_open(&conn.conn)
    }
}
