//! The publisher: after a create commits, sends the notification's JSON to
//! `{prefix}notifications:{user_id}` (or its workspace's channel) on Redis (contract
//! §5): PUBLISH on one server, SPUBLISH on a Redis Cluster (`redis_link`).
//!
//! Comes after `store` (the committer calls it once a group is stored); the
//! subscriber threads of every instance come after it. A Redis failure never fails a
//! create, and while Redis is down no create waits on it: the first failed publish
//! marks Redis down (`outage`), later ones are set aside at once, and one background
//! prober tries Redis with backoff until it answers, then publishing resumes.
//! Connected clients are caught up from PostgreSQL by the subscriber when it
//! reconnects.

mod outage;
mod state;

use std::sync::Arc;
use std::time::Duration;

use crate::error::{with_causes, Error};
use crate::notification::Notification;
use crate::redis_link::{Link, Redis};
use outage::Outage;

/// How long a create waits for a Redis connection before giving up on publishing.
const CONNECTION_TIMEOUT: Duration = Duration::from_millis(500);

/// How long an announcement between instances waits for a pooled connection.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(5);

/// One message for Redis: a notification (its audience picks the channel) and its
/// JSON (shared with the reply, not copied).
pub type Message<'a> = (&'a Notification, &'a Arc<String>);

/// A handle on the Redis publishing side; cheap to clone.
#[derive(Clone)]
pub struct Publisher {
    pool: r2d2::Pool<Manager>,
    manager: Manager,
    redis: Redis,
    prefix: String,
    outage: Arc<Outage>,
}

impl Publisher {
    pub fn new(url: &str, prefix: &str, pool_size: u32) -> Result<Publisher, Error> {
        let redis = Redis::open(url).map_err(|e| Error::Internal(format!("bad Redis URL: {e}")))?;
        let manager = Manager {
            redis: redis.clone(),
        };
        let pool = r2d2::Pool::builder()
            .max_size(pool_size)
            .min_idle(Some(0))
            .test_on_check_out(false)
            .connection_timeout(CONNECTION_TIMEOUT)
            .error_handler(Box::new(r2d2::NopErrorHandler))
            .build_unchecked(manager.clone());
        let outage = Arc::new(Outage::new(redis.describe()));
        Ok(Publisher {
            pool,
            manager,
            redis,
            prefix: prefix.to_string(),
            outage,
        })
    }

    /// The channel of a notification: its user's, or its workspace's for the
    /// workspace audience.
    pub fn channel(&self, notification: &Notification) -> String {
        match (&notification.user_id, &notification.workspace) {
            (Some(user_id), _) => crate::channels::user_notifications(&self.prefix, user_id),
            (None, Some(slug)) => crate::channels::workspace_notifications(&self.prefix, slug),
            // `validate` never lets a notification have neither (nor the table).
            (None, None) => crate::channels::user_notifications(&self.prefix, ""),
        }
    }

    /// Publishes many notifications in one round trip: `(notification, json)` pairs. Never
    /// fails a create: while Redis is down the messages are set aside without waiting
    /// (and counted in `notifd_redis_publish_failures_total`).
    pub fn publish_many(&self, messages: &[Message<'_>]) {
        let channels: Vec<(String, &Arc<String>)> = messages
            .iter()
            .map(|(notification, json)| (self.channel(notification), *json))
            .collect();
        self.send(&channels);
    }

    /// Sends `(channel, json)` pairs in one pipeline, or sets them aside while Redis is
    /// down (the outage path re-sends them on recovery).
    fn send(&self, channels: &[(String, &Arc<String>)]) {
        if self.outage.set_aside_if_down(channels) {
            return;
        }
        let messages: Vec<(&str, &str)> = channels
            .iter()
            .map(|(channel, json)| (channel.as_str(), json.as_str()))
            .collect();
        if let Err(err) = self.run(&messages, CONNECTION_TIMEOUT) {
            self.outage.begin(channels, &err, &self.redis);
        }
    }

    /// Publishes a roster eviction (`roster::Evict`) on the user's state channel, so
    /// it reaches the instances holding that user's connections. Waits
    /// longer for a connection than a create does: a burst of thousands of new
    /// WebSockets announces itself at once, and an announcement lost means two
    /// connections of one user and workspace on two instances. While Redis is known
    /// to be down it fails at once: no instance could hear it.
    pub fn publish_control(&self, user_id: &str, json: &str) -> Result<(), Error> {
        if self.outage.is_down() {
            return Err(self.outage.error("down; announcement not sent"));
        }
        let channel = crate::channels::user_state(&self.prefix, user_id);
        self.run(&[(channel.as_str(), json)], CONTROL_TIMEOUT)
    }

    /// Publishes `(channel, message)` pairs on a pooled connection (waiting at most
    /// `wait` for one).
    fn run(&self, messages: &[(&str, &str)], wait: Duration) -> Result<(), Error> {
        let failed = |err: &dyn std::error::Error| self.outage.error(&with_causes(err));
        let mut conn = self.pool.get_timeout(wait).map_err(|e| failed(&e))?;
        if conn.publish(messages).is_ok() {
            return Ok(());
        }
        // A pooled connection goes stale when Redis restarts, and only a command finds
        // out: this one is now marked broken (the pool drops it), and the publish gets
        // one more try on a fresh connection rather than being lost.
        drop(conn);
        let mut fresh = r2d2::ManageConnection::connect(&self.manager).map_err(|e| failed(&e))?;
        fresh.publish(messages).map_err(|e| failed(&e))
    }

    /// True when Redis answers a PING within `timeout` (on a fresh connection, so a
    /// pooled one cannot hide an outage).
    pub fn ping(&self, timeout: Duration) -> Result<(), Error> {
        ping(&self.redis, timeout)
            .map(drop)
            .map_err(|e| self.outage.error(&with_causes(&e)))
    }
}

/// PING on a fresh connection with `timeout` for connecting and for the answer.
fn ping(redis: &Redis, timeout: Duration) -> redis::RedisResult<Link> {
    let mut conn = redis.connect(timeout)?;
    conn.ping()?;
    Ok(conn)
}

/// For `notifd check-config`: PING on a fresh connection within `timeout`. Ok and Err
/// both name the server (`host:port`, or the cluster's seeds), never the URL.
pub fn check(url: &str, timeout: Duration) -> Result<String, String> {
    let redis = Redis::open(url).map_err(|e| format!("not a Redis URL: {e}"))?;
    let server = redis.describe();
    ping(&redis, timeout)
        .map(|_| format!("{server}: ok"))
        .map_err(|e| format!("{server}: {}", with_causes(&e)))
}

/// A pooled Redis connection that remembers a failed command.
struct Connection {
    conn: Link,
    broken: bool,
}

impl Connection {
    fn publish(&mut self, messages: &[(&str, &str)]) -> redis::RedisResult<()> {
        let result = self.conn.publish_all(messages.iter().copied());
        self.broken |= result.is_err();
        result
    }
}

/// Opens Redis connections for the pool with timeouts on connect, read and write, so
/// a Redis that hangs delays a create by at most `CONNECTION_TIMEOUT`.
#[derive(Clone)]
struct Manager {
    redis: Redis,
}

impl r2d2::ManageConnection for Manager {
    type Connection = Connection;
    type Error = redis::RedisError;

    fn connect(&self) -> Result<Connection, redis::RedisError> {
        Ok(Connection {
            conn: self.redis.connect(CONNECTION_TIMEOUT)?,
            broken: false,
        })
    }

    fn is_valid(&self, conn: &mut Connection) -> Result<(), redis::RedisError> {
        conn.conn.ping()
    }

    fn has_broken(&self, conn: &mut Connection) -> bool {
        conn.broken || !redis::ConnectionLike::is_open(&conn.conn)
    }
}
