//! What the subscriber thread reads from: a [`Feed`] of Pub/Sub messages, notifd's
//! own connections (`shards::Shards`: one server's over TCP, or one per cluster
//! primary), or, for a server on a Unix socket, the redis crate's synchronous
//! Pub/Sub (`Single`).

use std::time::Duration;

use redis::RedisResult;

/// How often a feed looks up from waiting on Redis: the longest a new user's
/// channel waits to be subscribed, and the granularity of shutdown. Each look costs
/// a few microseconds.
pub const READ_TIMEOUT: Duration = Duration::from_millis(10);
/// How long a command (a subscribe, a PING) may wait for its answer.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// One published message.
#[derive(Debug)]
pub struct Message {
    pub channel: String,
    pub payload: String,
}

/// A Pub/Sub connection as the subscriber drives it. Every subscription is
/// confirmed when the call returns, so it is known to be live; messages arriving
/// meanwhile are kept for `next`.
pub trait Feed {
    fn subscribe_all(&mut self, channels: &[String]) -> RedisResult<()>;
    fn unsubscribe_all(&mut self, channels: &[String]) -> RedisResult<()>;
    /// The next message, waiting at most `READ_TIMEOUT`; `None` when none came.
    fn next(&mut self) -> RedisResult<Option<Message>>;
    /// A round trip on every connection: a dead one errs.
    fn ping(&mut self) -> RedisResult<()>;
}

/// One server's Pub/Sub connection.
pub struct Single<'a> {
    pubsub: redis::PubSub<'a>,
}

impl<'a> Single<'a> {
    pub fn new(pubsub: redis::PubSub<'a>) -> RedisResult<Single<'a>> {
        pubsub.set_read_timeout(Some(READ_TIMEOUT))?;
        Ok(Single { pubsub })
    }

    /// Runs `command` with the longer timeout: a timeout inside a command would leave
    /// the crate skipping the next reply.
    fn command<T>(
        &mut self,
        command: impl FnOnce(&mut redis::PubSub<'a>) -> RedisResult<T>,
    ) -> RedisResult<T> {
        self.pubsub.set_read_timeout(Some(COMMAND_TIMEOUT))?;
        let result = command(&mut self.pubsub);
        self.pubsub.set_read_timeout(Some(READ_TIMEOUT))?;
        result
    }
}

impl Feed for Single<'_> {
    // One channel per command, on purpose: Redis answers a SUBSCRIBE of N channels
    // with N confirmations and the crate waits for the first only, so the next
    // command would take a leftover confirmation for its own.
    fn subscribe_all(&mut self, channels: &[String]) -> RedisResult<()> {
        for channel in channels {
            self.command(|pubsub| pubsub.subscribe(channel))?;
        }
        Ok(())
    }

    fn unsubscribe_all(&mut self, channels: &[String]) -> RedisResult<()> {
        for channel in channels {
            self.command(|pubsub| pubsub.unsubscribe(channel))?;
        }
        Ok(())
    }

    fn next(&mut self) -> RedisResult<Option<Message>> {
        match self.pubsub.get_message() {
            Ok(message) => Ok(Some(Message {
                channel: message.get_channel_name().to_string(),
                payload: message.get_payload()?,
            })),
            Err(err) if err.is_timeout() => Ok(None),
            Err(err) => Err(err),
        }
    }

    fn ping(&mut self) -> RedisResult<()> {
        // In subscribed mode Redis answers PING with ["pong", ""], not "PONG".
        self.command(|pubsub| pubsub.ping::<redis::Value>().map(drop))
    }
}
