//! Redis outages on the publishing side: whether Redis is known to be down, what was
//! set aside meanwhile, and the background prober that ends the outage.
//!
//! A create never waits on a Redis that is known to be down: its messages are set
//! aside at once and the create is answered (its rows are stored). When the prober
//! hears from Redis again it re-sends what was set aside in the last
//! `RESEND_WINDOW`, then publishing resumes. Why re-send: the subscriber catches its
//! clients up from PostgreSQL as soon as it has subscribed again, which can be a
//! moment before the prober notices Redis is back, and whatever was created in
//! between would otherwise reach no connected client. Older messages were stored
//! before Redis came back, so that catch-up covers them; connections drop the ids
//! they already sent (`websocket::seen`, 10 s), which the window stays inside.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use super::ping;
use crate::error::{with_causes, Error};
use crate::metrics::METRICS;
use crate::redis_link::{Link, Redis};

/// How far back (by when they were set aside) messages are re-sent on recovery.
/// Well above the prober's longest pause plus its timeout, well inside the
/// connections' 10 s de-duplication window.
const RESEND_WINDOW: Duration = Duration::from_secs(5);
/// Most messages and bytes kept aside; the oldest go first beyond either.
const MAX_ASIDE: usize = 10_000;
const MAX_ASIDE_BYTES: usize = 16 * 1024 * 1024;
/// The prober's first pause; it doubles up to `MAX_PROBE_PAUSE`.
const FIRST_PROBE_PAUSE: Duration = Duration::from_millis(50);
const MAX_PROBE_PAUSE: Duration = Duration::from_secs(1);
/// How long one probe waits to connect and for PONG.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
/// How long re-sending what was set aside may take (up to `MAX_ASIDE_BYTES`).
const RESEND_TIMEOUT: Duration = Duration::from_secs(5);
/// Re-send rounds before publishing resumes anyway: each round takes what creates
/// set aside during the previous one, which shrinks to nothing within a few.
const MAX_RESEND_ROUNDS: usize = 8;

/// The publishing side's view of Redis; shared by every clone of a `Publisher`.
pub(super) struct Outage {
    /// Read on every publish without the lock.
    down: AtomicBool,
    // A std Mutex: held only to add or take messages, never across I/O.
    state: Mutex<State>,
    /// `host:port`, for messages.
    server: String,
}

/// What an outage has set aside.
#[derive(Default)]
struct State {
    /// Oldest first.
    aside: VecDeque<Aside>,
    bytes: usize,
    since: Option<Instant>,
    /// Messages not published live during this outage.
    skipped: u64,
}

struct Aside {
    at: Instant,
    channel: String,
    json: Arc<String>,
}

impl Outage {
    pub(super) fn new(server: String) -> Outage {
        Outage {
            down: AtomicBool::new(false),
            state: Mutex::default(),
            server,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every change to the state is a push, a pop or a reset: a panic elsewhere
        // cannot leave it half-updated.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn is_down(&self) -> bool {
        self.down.load(Ordering::Acquire)
    }

    /// A 503-class error naming the server.
    pub(super) fn error(&self, detail: &str) -> Error {
        Error::Unavailable {
            dependency: "redis",
            detail: format!("{}: {detail}", self.server),
        }
    }

    /// Sets `messages` aside if Redis is known to be down; false when it is up and
    /// they should be published.
    pub(super) fn set_aside_if_down(&self, messages: &[(String, &Arc<String>)]) -> bool {
        if !self.is_down() {
            return false;
        }
        let mut state = self.lock();
        // Again under the lock: the prober may have resumed publishing meanwhile.
        if !self.is_down() {
            return false;
        }
        state.keep(messages);
        true
    }

    /// A publish failed: Redis is down until the prober hears from it.
    pub(super) fn begin(
        self: &Arc<Self>,
        messages: &[(String, &Arc<String>)],
        err: &Error,
        redis: &Redis,
    ) {
        let mut state = self.lock();
        state.keep(messages);
        if self.down.swap(true, Ordering::AcqRel) {
            return;
        }
        state.since = Some(Instant::now());
        drop(state);
        log::warn!(error = err.to_string().as_str(); "redis publish failed; until redis answers, creates are stored and answered without publishing");
        let (outage, redis) = (Arc::downgrade(self), redis.clone());
        // A cluster connection's set-up (topology, one socket per node) runs deeper
        // than a plain one's.
        let spawned = std::thread::Builder::new()
            .name("notifd-redis-probe".into())
            .stack_size(256 * 1024)
            .spawn(move || probe(&outage, &redis));
        if let Err(err) = spawned {
            // Without a prober nothing would end the outage: wait on Redis per
            // publish again, as before it began.
            log::error!(error = err.to_string().as_str(); "cannot start the redis prober; publishing waits on redis");
            self.down.store(false, Ordering::Release);
        }
    }

    /// Redis answers on `conn`: re-sends what was set aside recently, then resumes.
    fn resume(&self, conn: &mut Link) -> redis::RedisResult<()> {
        conn.set_timeouts(RESEND_TIMEOUT)?;
        let mut resent = 0;
        for round in 1..=MAX_RESEND_ROUNDS {
            let mut state = self.lock();
            state.prune(Instant::now());
            let batch: Vec<Aside> = state.aside.drain(..).collect();
            state.bytes = 0;
            // Resume once a round has little left: the few messages of the last round
            // may then be published at the same moment as the first new ones.
            let last = batch.len() <= 64 || round == MAX_RESEND_ROUNDS;
            let ended = last.then(|| {
                self.down.store(false, Ordering::Release);
                let down = state.since.map(|s| s.elapsed()).unwrap_or_default();
                (down, std::mem::take(&mut *state).skipped)
            });
            drop(state);
            if let Err(err) = publish(conn, &batch) {
                if !last {
                    self.lock().put_back(batch);
                }
                return Err(err);
            }
            resent += batch.len();
            if let Some((down, not_live)) = ended {
                log::info!(server = self.server.as_str(), down_ms = down.as_millis() as u64, not_live = not_live, resent = resent; "redis answers again; publishing resumed");
                return Ok(());
            }
        }
        Ok(())
    }
}

/// Publishes what was set aside, in order, in one round trip.
fn publish(conn: &mut Link, batch: &[Aside]) -> redis::RedisResult<()> {
    if batch.is_empty() {
        return Ok(());
    }
    conn.publish_all(
        batch
            .iter()
            .map(|aside| (aside.channel.as_str(), aside.json.as_str())),
    )
}

impl State {
    fn keep(&mut self, messages: &[(String, &Arc<String>)]) {
        let at = Instant::now();
        for (channel, json) in messages {
            self.bytes += json.len();
            self.aside.push_back(Aside {
                at,
                channel: channel.clone(),
                json: Arc::clone(json),
            });
        }
        self.skipped += messages.len() as u64;
        METRICS
            .redis_publish_failures
            .fetch_add(messages.len() as u64, Ordering::Relaxed);
        self.prune(at);
    }

    /// Drops what is older than the re-send window or beyond the bounds.
    fn prune(&mut self, now: Instant) {
        while let Some(oldest) = self.aside.front() {
            let old = now.duration_since(oldest.at) > RESEND_WINDOW;
            if !old && self.aside.len() <= MAX_ASIDE && self.bytes <= MAX_ASIDE_BYTES {
                break;
            }
            self.bytes -= oldest.json.len();
            self.aside.pop_front();
        }
    }

    /// A re-send that failed: its messages go back in front of newer ones.
    fn put_back(&mut self, batch: Vec<Aside>) {
        for aside in batch.into_iter().rev() {
            self.bytes += aside.json.len();
            self.aside.push_front(aside);
        }
        self.prune(Instant::now());
    }
}

/// Tries Redis with doubling pauses until it answers (then resumes publishing) or
/// every `Publisher` is gone (the server stopped). Each failure is logged at debug
/// only: the subscriber logs the same outage at warn on each of its retries.
fn probe(outage: &Weak<Outage>, redis: &Redis) {
    let mut pause = FIRST_PROBE_PAUSE;
    loop {
        std::thread::sleep(pause);
        let Some(outage) = outage.upgrade() else {
            return;
        };
        let result = ping(redis, PROBE_TIMEOUT).and_then(|mut conn| outage.resume(&mut conn));
        match result {
            Ok(()) => return,
            Err(err) => {
                log::debug!(server = outage.server.as_str(), error = with_causes(&err).as_str(); "redis still unreachable")
            }
        }
        pause = (pause * 2).min(MAX_PROBE_PAUSE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn messages(n: usize) -> Vec<(String, Arc<String>)> {
        (0..n)
            .map(|i| (format!("c{i}"), Arc::new(format!("{{\"n\":{i}}}"))))
            .collect()
    }

    fn keep(state: &mut State, messages: &[(String, Arc<String>)]) {
        let refs: Vec<(String, &Arc<String>)> =
            messages.iter().map(|(c, j)| (c.clone(), j)).collect();
        state.keep(&refs);
    }

    #[test]
    fn what_is_set_aside_stays_bounded_and_recent() {
        let mut state = State::default();
        keep(&mut state, &messages(MAX_ASIDE + 5));
        assert_eq!(
            state.aside.len(),
            MAX_ASIDE,
            "the oldest go beyond the bound"
        );
        assert_eq!(state.aside.front().map(|a| a.channel.as_str()), Some("c5"));
        assert_eq!(
            state.skipped,
            (MAX_ASIDE + 5) as u64,
            "all counted as not live"
        );
        let later = Instant::now() + RESEND_WINDOW + Duration::from_millis(1);
        state.prune(later);
        assert!(state.aside.is_empty(), "older than the re-send window");
        assert_eq!(state.bytes, 0);
    }

    #[test]
    fn a_failed_resend_goes_back_in_front_in_order() {
        let mut state = State::default();
        keep(&mut state, &messages(3));
        let batch: Vec<Aside> = state.aside.drain(..2).collect();
        state.bytes -= batch.iter().map(|a| a.json.len()).sum::<usize>();
        state.put_back(batch);
        let order: Vec<&str> = state.aside.iter().map(|a| a.channel.as_str()).collect();
        assert_eq!(order, ["c0", "c1", "c2"]);
    }
}
