//! One WebSocket connection's life on its own thread: optional `since` replay, then
//! live delivery, the expiry timer, and the close handshake.
//!
//! The thread owns its `WebSocket`, so pongs, close replies and size limits stay
//! tungstenite's job. It sleeps only in one park, until its expiry or until woken
//! through its `Link`: by the hub (a frame queued, a close or catch-up request), the
//! readiness thread (socket ready), the heartbeat thread (idle check, or a ping it
//! could not send itself) or shutdown. A notification is written the moment it
//! arrives. A park is a plain futex wait: unlike a channel `select!`, it does not spin
//! and yield first, which with thousands of threads on two cores was most of the idle
//! CPU. While parked with nothing half-done, the thread lends its socket (`gate`) so
//! the heartbeat's ping and pong need no wake-up. The socket is non-blocking once
//! live; epoll (`readiness`) says when to read or to retry a flush.

mod replay;
mod socket;

use std::collections::VecDeque;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use tungstenite::{Message, WebSocket};
use uuid::Uuid;

use super::handshake::{Admitted, CLOSE_AT_CAPACITY, CLOSE_EXPIRED};
use super::inbound::ClientStream;
use super::link::now_ms;
use super::link::Link;
use super::WsCtx;
use crate::hub::{Frame, Registration, CLOSE_TOO_SLOW};
use crate::metrics::METRICS;
use crate::notification::{floor_id, id_millis};
use crate::subscriber::Replace;

pub const CLOSE_IDLE: u16 = 4000;
pub const CLOSE_GOING_AWAY: u16 = 1001;
pub const CLOSE_TOO_BIG: u16 = 1009;
/// A client frame that breaks RFC 6455.
pub const CLOSE_PROTOCOL: u16 = 1002;
/// Text (a message or a close reason) that is not UTF-8.
pub const CLOSE_INVALID_DATA: u16 = 1007;
pub const CLOSE_INTERNAL: u16 = 1011;
/// No close frame at all (the peer vanished).
const CLOSE_ABNORMAL: u16 = 1006;

/// Rows per replay query, and how many pages one replay may take.
const REPLAY_PAGE: i64 = 100;
const MAX_REPLAY_PAGES: usize = 1000;
/// Frames or inbound messages handled per wake-up before looking at everything else.
const BATCH: usize = 64;
/// How long to wait for the client's close reply.
const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// How long a client closed as too slow (4006) has to take its close frame, which
/// waits behind everything it has not read: a stalled browser tab that resumes within
/// this time still learns why it was closed. (A client that takes nothing at all is
/// cut off by the kernel after `SEND_STALL_LIMIT` anyway.)
const SLOW_CLOSE_GRACE: Duration = Duration::from_secs(15);

/// The connection is over; holds the close code for the log.
struct Done(u16);

type Step = Result<(), Done>;

struct Session<'a> {
    ctx: &'a WsCtx,
    ws: WebSocket<ClientStream>,
    user_id: String,
    workspace: String,
    link: Arc<Link>,
    queue: Receiver<Frame>,
    /// Catch-up never goes further back than this: `since`, or the connect moment.
    floor: Uuid,
    flush_pending: bool,
    /// Where the history being sent continues (`since` replay or catch-up), if any.
    history: Option<Uuid>,
    /// Pages of history read for the current replay.
    history_pages: usize,
    /// History read from PostgreSQL, not yet sent.
    backlog: VecDeque<Frame>,
    /// Set after a client frame over the limit: tungstenite must not read past a frame
    /// it refused, so input is only drained from then on.
    discard_input: bool,
    /// Set once a close frame is sent: (code, give up waiting at).
    closing: Option<(u16, Instant)>,
    expires: Instant,
}

/// A connection registered with the hub and announced, ready for its own thread.
pub struct Opened {
    registration: Registration,
    link: Arc<Link>,
    queue: Receiver<Frame>,
    admitted: Admitted,
    started: Instant,
    /// The connect moment as a position: catch-up never reaches further back.
    floor: Uuid,
}

/// Registers an admitted connection with the hub and tells other instances (4005).
///
/// Runs on the handshake thread: the Redis client and the log formatting need deep
/// stacks, and pages a thread touches stay resident for its life. Keeping them off
/// the long-lived connection thread keeps each connection's memory small.
pub fn open(ctx: &WsCtx, admitted: Admitted) -> Opened {
    let started = Instant::now();
    // Taken before registering: anything created from here on is owed to this client,
    // even if Redis is down and the announcement below waits.
    let floor = admitted
        .since
        .unwrap_or_else(|| floor_id(id_millis(&Uuid::now_v7())));
    // Unbounded in type, bounded by the hub (which checks its length before sending):
    // a bounded channel allocates every slot up front, 14 KiB per idle connection.
    let (queue_in, queue) = crossbeam_channel::unbounded();
    let link = Arc::new(Link::new());
    let (user_id, workspace) = (&admitted.identity.user_id, &admitted.workspace);
    // Subscribe first, then read history: nothing created meanwhile can fall between.
    let registration = ctx.hub.register(
        user_id,
        workspace,
        link.clone(),
        queue_in,
        ctx.queue_capacity,
    );
    announce(ctx, user_id, workspace, registration.key());
    METRICS.ws_opened();
    log::info!(user = user_id.as_str(), workspace = workspace.as_str(), conn = registration.key().id; "ws opened");
    Opened {
        registration,
        link,
        queue,
        admitted,
        started,
        floor,
    }
}

/// Runs an opened connection to its end, on its own thread.
pub fn run(ctx: &WsCtx, ws: WebSocket<ClientStream>, opened: Opened) {
    crate::process::relax_timers();
    let Opened {
        registration,
        link,
        queue,
        admitted,
        started,
        floor,
    } = opened;
    let Admitted {
        identity,
        workspace,
        since,
    } = admitted;
    let user_id = identity.user_id;
    // Spread over the interval: connections opened in a burst are not all pinged in
    // one later burst.
    let phase = ctx
        .ping_interval
        .mul_f64((registration.key().id % 997) as f64 / 997.0);
    let first_ping_ms = now_ms() + phase.as_millis() as u64;
    let mut session = Session {
        ctx,
        ws,
        user_id,
        workspace,
        link,
        queue,
        floor,
        flush_pending: false,
        history: None,
        history_pages: 0,
        backlog: VecDeque::new(),
        discard_input: false,
        closing: None,
        expires: expiry(ctx, identity.expires_at),
    };
    session.link.set_fd(session.ws.get_ref().tcp().as_raw_fd());
    let code = match session.start(since) {
        Err(Done(code)) => code,
        Ok(()) => match ctx.readiness.register(session.link.clone(), first_ping_ms) {
            Ok(watch) => {
                let code = session.live(&watch);
                // Leave epoll before the socket closes (its fd number may be reused).
                drop(watch);
                code
            }
            Err(_) => session.close_now(CLOSE_AT_CAPACITY, "server at capacity"),
        },
    };
    let Session {
        user_id,
        workspace,
        ws,
        ..
    } = session;
    drop(registration);
    drop(ws);
    METRICS.ws_closed(code);
    log::info!(
        user = user_id.as_str(),
        workspace = workspace.as_str(),
        code = code,
        duration_ms = started.elapsed().as_millis() as u64;
        "ws closed"
    );
}

/// Closes an opened connection that cannot get a thread of its own with `code`, on
/// the calling (handshake) thread.
pub fn refuse(opened: Opened, ws: WebSocket<ClientStream>, code: u16, reason: &str) {
    // Unregistered first: no frame is queued for a connection that is going.
    drop(opened.registration);
    super::handshake::close_blocking(ws, code, reason);
    METRICS.ws_closed(code);
}

/// Tells every instance (this one included) that older connections of this user and
/// workspace must close with 4005.
fn announce(ctx: &WsCtx, user_id: &str, workspace: &str, key: &crate::hub::ConnKey) {
    ctx.hub.replace_older(user_id, workspace, key);
    let message = Replace {
        user_id: user_id.to_string(),
        workspace: workspace.to_string(),
        opened_us: key.opened_us,
        instance: key.instance.clone(),
        id: key.id,
    };
    let json = serde_json::to_string(&message).unwrap_or_default();
    if let Err(err) = ctx.publisher.publish_control(&json) {
        log::warn!(error = err.to_string().as_str(); "cannot announce connection to other instances");
    }
}

/// When the token stops being valid: `exp` plus the leeway, as an `Instant`.
fn expiry(ctx: &WsCtx, exp: u64) -> Instant {
    let now = crate::auth::unix_now();
    let left = exp.saturating_add(ctx.leeway.as_secs()).saturating_sub(now);
    Instant::now() + Duration::from_secs(left.min(10 * 365 * 24 * 3600))
}

impl Session<'_> {
    /// Queues the `since` replay and makes the socket non-blocking.
    fn start(&mut self, since: Option<Uuid>) -> Step {
        if let Some(since) = since {
            self.replay_from(since);
        }
        self.ws
            .get_ref()
            .tcp()
            .set_nonblocking(true)
            .map_err(|_| Done(CLOSE_ABNORMAL))
    }

    /// The live loop; returns the close code. Each turn looks at everything that may
    /// have happened, then the thread parks until woken or its next timer is due.
    fn live(&mut self, watch: &super::readiness::Registration) -> u16 {
        self.link.attach();
        loop {
            self.link.gate.reclaim();
            let was_pending = self.flush_pending;
            // The rest of a frame the subscriber could only half write goes first.
            if let Some(rest) = self.link.take_unsent() {
                self.ws.get_mut().push_unsent(rest);
            }
            let io = self.link.take_io_ready();
            let step = self.turn(io).and_then(|()| {
                // Every "ready" ends in a re-arm (one-shot); so does a new need to
                // hear "writable".
                if io || (self.flush_pending && !was_pending) {
                    watch
                        .rearm(self.flush_pending)
                        .map_err(|_| Done(CLOSE_ABNORMAL))
                } else {
                    Ok(())
                }
            });
            if let Err(Done(code)) = step {
                return code;
            }
            if self.lendable() {
                self.link.allow_direct(!self.replaying());
                self.link.gate.offer();
            }
            // Anything that arrived during the turn (code run by the turn, such as the
            // PostgreSQL client, may have used up this thread's wake-up) gets a turn now.
            let open = self.closing.is_none();
            if self.link.pending(open) || (open && !self.flush_pending && !self.queue.is_empty()) {
                continue;
            }
            let wait = self
                .next_deadline()
                .saturating_duration_since(Instant::now());
            if !wait.is_zero() {
                std::thread::park_timeout(wait);
            }
        }
    }

    /// One turn: close and catch-up requests, the socket (when epoll said so), queued
    /// frames, then timers.
    fn turn(&mut self, io: bool) -> Step {
        if self.closing.is_none() {
            if self.ctx.shutdown.is_fired() {
                self.begin_close(CLOSE_GOING_AWAY, "server shutting down")?;
            } else if let Some(code) = self.link.close_requested() {
                let reason = match code {
                    CLOSE_TOO_SLOW => "too slow: outbound queue full",
                    _ => "replaced by a newer connection",
                };
                self.begin_close(code, reason)?;
            } else if self.link.take_catch_up() {
                // Before any queued frame: the subscriber asks for a catch-up before
                // it delivers anything new after a reconnect, so catch-up starts from
                // what was sent before the outage.
                self.catch_up();
            }
        }
        if io {
            // Read even when closing: the client's close reply may already sit in
            // tungstenite's buffer, where epoll cannot see it.
            self.read_available()?;
        }
        // History first (oldest first, no gap), then live frames.
        self.send_history()?;
        if !self.replaying() {
            self.send_queued()?;
        }
        self.flush()?;
        self.on_timer()
    }

    /// Whether helpers may use the socket while this thread sleeps (`gate`): nothing
    /// unsent, no partial frame read, no close under way.
    fn lendable(&self) -> bool {
        self.closing.is_none()
            && !self.flush_pending
            && !self.discard_input
            && self.ws.get_ref().at_frame_start()
            && !self.ws.get_ref().has_unsent()
    }

    /// The only timers of the thread itself; pings and idle checks come from the
    /// heartbeat thread.
    fn next_deadline(&self) -> Instant {
        match self.closing {
            Some((_, give_up)) => give_up,
            None => self.expires,
        }
    }

    /// Writes queued frames, up to a batch per turn. Stops at the first write that
    /// would block: the rest waits in the queue (where a full queue means 4006) rather
    /// than piling up inside tungstenite.
    fn send_queued(&mut self) -> Step {
        for _ in 0..BATCH {
            if self.flush_pending || self.closing.is_some() {
                return Ok(());
            }
            match self.queue.try_recv() {
                Ok(frame) => self.send(frame, true)?,
                Err(_) => return Ok(()),
            }
        }
        // More than a batch waiting: take another turn before parking.
        std::thread::current().unpark();
        Ok(())
    }

    fn on_timer(&mut self) -> Step {
        let now = Instant::now();
        if let Some((code, give_up)) = self.closing {
            return if now >= give_up {
                Err(Done(code))
            } else {
                Ok(())
            };
        }
        if now >= self.expires {
            return self.begin_close(CLOSE_EXPIRED, "token expired");
        }
        if self.link.take_idle_check()
            && Duration::from_millis(self.link.silent_ms()) >= self.ctx.idle_timeout
        {
            return self.begin_close(CLOSE_IDLE, "idle timeout");
        }
        if self.link.take_ping_due() {
            self.write(Message::Ping(Default::default()))?;
            return self.flush();
        }
        Ok(())
    }
}
