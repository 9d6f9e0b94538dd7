//! One WebSocket connection's life on its own thread: the optional `since` replay,
//! then live delivery, the expiry timer, and the close handshake.
//!
//! Comes after the handshake (`open` runs on its thread) and the hub (which hands
//! frames to the connection's `handle`). The thread owns its `WebSocket` (`wire`),
//! so pongs, close replies and size limits stay tungstenite's job. It sleeps only in
//! one park, until its next timer or until woken through its handle: by the hub (a
//! frame queued, 4005, catch-up), the poller (socket ready, idle check, a ping it
//! could not send itself) or shutdown. A park is a plain futex wait: unlike a channel
//! `select!`, it does not spin and yield first, which with thousands of threads on two
//! cores was most of the idle CPU. Before parking with nothing half-done it offers
//! its socket (`lending`), so routine traffic needs no wake-up.

mod history;
mod seat;
mod view;
mod wire;

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use tungstenite::{Message, WebSocket};
use uuid::Uuid;

use super::close::Close;
use super::handle::{now_ms, Handle, Outbound, Request};
use super::handshake::Admitted;
use super::poller::Watch;
use super::protocol::Protocol;
use super::shared::Ctx;
use super::stream::ClientStream;
use crate::events::StateMessage;
use crate::hub::{Frame, Registration};
use crate::metrics::{self, METRICS};
use history::History;
use seat::{take_seat, Seat};
use view::View;
use wire::{Done, Step, Wire};

/// Frames sent per turn before looking at everything else.
const BATCH: usize = 64;

/// A connection registered with the hub, from its handshake to its close.
pub struct Session {
    /// First, so it drops first (fields drop in order): no frame is handed to a
    /// connection whose socket is closing.
    registration: Registration,
    ctx: Arc<Ctx>,
    handle: Arc<Handle>,
    wire: Wire,
    queue: Receiver<Outbound>,
    history: History,
    /// The event protocol's state; `None` on a plain connection.
    view: Option<View>,
    /// Its place in the cluster-wide roster, left when the session ends.
    _seat: Seat,
    started: Instant,
    expires: Instant,
}

/// Longest a new connection waits for its channels to be subscribed.
const SUBSCRIBE_WAIT: Duration = Duration::from_secs(1);

/// Registers an admitted connection with the hub and takes its seat in the roster,
/// replacing (4005) the oldest beyond the limit on any instance.
///
/// Runs on the handshake thread: the Redis client and the log formatting need deep
/// stacks, and pages a thread touches stay resident for its life. Keeping them off
/// the long-lived connection thread keeps each connection's memory small.
///
/// `floor`: the position taken before the upgrade was answered. Everything created
/// after it is owed to this client; a notification published before the
/// registration below (or before its channels were subscribed) reached no one here,
/// so the subscriber reads what PostgreSQL holds after the floor for every
/// connection registered since its last look, in one query (`hub::Fresh`), and
/// `seen` drops what arrives twice.
pub fn open(
    ctx: &Arc<Ctx>,
    ws: WebSocket<ClientStream>,
    admitted: Admitted,
    floor: Uuid,
) -> Session {
    let started = Instant::now();
    // Catch-ups go back to `since` when it was given; the hub's fresh catch-up only
    // needs what this connection's registration may have missed.
    let connected = floor;
    let floor = admitted.since.unwrap_or(floor);
    let (queue_in, queue) = crossbeam_channel::unbounded();
    let socket = ws.get_ref().socket().clone();
    let queue_in = (queue_in, ctx.queue_capacity);
    let handle = Arc::new(Handle::new(socket, queue_in, admitted.protocol));
    let (user_id, workspace) = (admitted.identity.user_id, admitted.workspace);
    // Subscribe first, then read history: nothing created meanwhile can fall between.
    // Registered before the roster hears of it: a newer connection's admission may
    // evict this one at once, and must find it.
    let registration = ctx
        .hub
        .register(&user_id, &workspace, connected, handle.clone());
    // The first connection of a user (or on a workspace) here waits for its channels
    // (the subscriber's next look, within milliseconds): an eviction published for it
    // before then would be lost. Bounded: with Redis away it goes on (and the
    // subscriber's catch-up after reconnecting covers its notifications).
    if !ctx
        .hub
        .wait_subscribed(&user_id, &workspace, SUBSCRIBE_WAIT)
    {
        log::debug!(user = user_id.as_str(); "ws opening before its channels are subscribed");
    }
    let seat = take_seat(ctx, &registration, &user_id, &workspace);
    METRICS.ws_opened();
    log::info!(user = user_id.as_str(), workspace = workspace.as_str(), conn = registration.key().id; "ws opened");
    let view = (admitted.protocol == Protocol::V1).then(|| View::new(&workspace, admitted.since));
    let mut history = History::new(user_id, workspace, floor);
    if let Some(since) = admitted.since {
        history.replay_from(since);
    }
    Session {
        registration,
        expires: expiry(ctx, admitted.identity.expires_at),
        ctx: ctx.clone(),
        handle,
        wire: Wire::new(ws),
        queue,
        history,
        view,
        _seat: seat,
        started,
    }
}

/// When the token stops being valid: `exp` plus the leeway, as an `Instant`.
fn expiry(ctx: &Ctx, exp: u64) -> Instant {
    let now = crate::auth::unix_now();
    let left = exp.saturating_add(ctx.leeway.as_secs()).saturating_sub(now);
    Instant::now() + Duration::from_secs(left.min(10 * 365 * 24 * 3600))
}

impl Session {
    /// Runs the connection to its end, on its own thread.
    pub fn run(mut self) {
        crate::process::relax_timers();
        self.handle.attach();
        let code = match self.wire.go_live() {
            Err(Done(code)) => code,
            Ok(()) => match self
                .ctx
                .poller
                .watch(self.handle.clone(), self.first_ping_ms())
            {
                // The watch ends with this arm: out of epoll before anything closes.
                Ok(watch) => self.serve(&watch),
                Err(_) => self.wire.close_now(Close::AtCapacity),
            },
        };
        METRICS.ws_closed(code);
        log::info!(
            user = self.history.user_id(),
            workspace = self.history.workspace(),
            code = code,
            duration_ms = self.started.elapsed().as_millis() as u64;
            "ws closed"
        );
    }

    /// Closes a connection that cannot get a thread of its own, on the calling
    /// (handshake) thread.
    pub fn refuse(self, close: Close) {
        // Unregistered first: nothing is handed to a connection that is going.
        let ws = self.into_wire().into_inner();
        super::handshake::close_blocking(ws, close, close.reason());
        METRICS.ws_closed(close.code());
    }

    /// The socket alone; everything else (the registration first) is let go.
    fn into_wire(self) -> Wire {
        self.wire
    }

    /// Spread over the interval: connections opened in a burst are not all pinged in
    /// one later burst.
    fn first_ping_ms(&self) -> u64 {
        let id = self.registration.key().id;
        let phase = self.ctx.ping_interval.mul_f64((id % 997) as f64 / 997.0);
        now_ms() + phase.as_millis() as u64
    }

    /// The live loop; returns the close code. Each turn looks at everything that may
    /// have happened, then the thread parks until woken or its next timer is due.
    fn serve(&mut self, watch: &Watch) -> u16 {
        let code = loop {
            self.handle.lending.reclaim();
            if let Some(rest) = self.handle.lending.take_unsent() {
                self.wire.push_unsent(rest);
            }
            if let Err(Done(code)) = self.turn(watch) {
                break code;
            }
            if self.wire.lendable() {
                self.handle.lending.offer(self.is_live());
            }
            // Anything that arrived during the turn (code run by the turn, such as the
            // PostgreSQL client, may have used up this thread's wake-up) gets a turn now.
            let open = self.wire.closing().is_none();
            let queued = open && !self.wire.flush_pending() && !self.queue.is_empty();
            if self.handle.pending(open) || queued {
                continue;
            }
            let wait = self
                .next_deadline()
                .saturating_duration_since(Instant::now());
            if !wait.is_zero() {
                std::thread::park_timeout(wait);
            }
        };
        self.handle.lending.retire();
        code
    }

    /// One turn: requests, the socket (when epoll said so), history, queued frames,
    /// timers; then the re-arm every "ready" needs (one-shot), as does a new need to
    /// hear "writable".
    fn turn(&mut self, watch: &Watch) -> Step {
        let was_pending = self.wire.flush_pending();
        let io = self.handle.take(Request::IoReady);
        self.on_requests()?;
        if io {
            // Read even when closing: the client's close reply may already sit in
            // tungstenite's buffer, where epoll cannot see it.
            self.wire.read_available(&self.handle)?;
        }
        self.send_history()?;
        self.sync_view()?;
        if self.is_live() {
            self.send_queued()?;
        }
        self.wire.flush()?;
        self.on_timer()?;
        let pending = self.wire.flush_pending();
        if io || (pending && !was_pending) {
            return watch
                .rearm(pending)
                .map_err(|_| Done(Close::Abnormal.code()));
        }
        Ok(())
    }

    /// Shutdown, a close asked for (4005, 4006), or a catch-up.
    fn on_requests(&mut self) -> Step {
        if self.wire.closing().is_some() {
            return Ok(());
        }
        if self.ctx.shutdown.is_fired() {
            return self.wire.begin_close(Close::GoingAway, None);
        }
        if let Some(close) = self.handle.close_requested() {
            return self.wire.begin_close(close, None);
        }
        if self.handle.take(Request::CatchUp) {
            // Before any queued frame: the subscriber asks for a catch-up before it
            // delivers anything new after a reconnect, so catch-up starts from what
            // was sent before the outage.
            let newest = self.handle.seen().newest();
            self.history.catch_up(newest);
            if let Some(view) = self.view.as_mut() {
                view.mark_stale();
            }
        }
        Ok(())
    }

    /// The hand-off from history to live frames, in one place: live once no history
    /// remains to be sent (queued frames wait, and borrowers may not write them).
    /// On an event-protocol connection, also not before `synced` went out.
    fn is_live(&self) -> bool {
        !self.history.replaying() && self.view.as_ref().is_none_or(View::synced)
    }

    /// Once the history is out, an event-protocol connection gets `synced` and its
    /// counts (read now, each row with its version), once; after a catch-up, its
    /// counts again if they moved.
    fn sync_view(&mut self) -> Step {
        let Some(view) = self.view.as_mut() else {
            return Ok(());
        };
        if !view.wants_rows() || self.history.replaying() || self.wire.closing().is_some() {
            return Ok(());
        }
        let workspaces = [None, Some(self.history.workspace().to_string())];
        let rows = match self
            .ctx
            .store
            .counter_rows(self.history.user_id(), &workspaces)
        {
            Ok(rows) => rows,
            Err(err) => {
                let reason = format!("cannot read counts: {err}");
                return self.wire.begin_close(Close::Internal, Some(&reason));
            }
        };
        let newest = self.handle.seen().newest();
        for frame in view.rows_read(newest, &rows) {
            self.wire.write(Message::Text(frame))?;
        }
        Ok(())
    }

    /// The frames a state message means for this connection's view (event protocol).
    fn send_state(&mut self, message: &StateMessage) -> Step {
        let Some(view) = self.view.as_mut() else {
            return Ok(());
        };
        if self.wire.closing().is_some() {
            return Ok(());
        }
        for frame in view.apply(message) {
            self.wire.write(Message::Text(frame))?;
        }
        Ok(())
    }

    /// Sends history until the socket would block.
    fn send_history(&mut self) -> Step {
        for _ in 0..BATCH {
            if self.wire.busy() {
                return Ok(());
            }
            match self.history.next(&self.ctx.store) {
                Ok(Some(frame)) => {
                    if !self.handle.seen().contains(&frame.id) {
                        metrics::inc(&METRICS.replayed);
                    }
                    self.send(frame, false)?;
                }
                Ok(None) => return Ok(()),
                Err(reason) => return self.wire.begin_close(Close::Internal, Some(reason)),
            }
        }
        // More to send and the socket takes it: another turn before parking.
        std::thread::current().unpark();
        Ok(())
    }

    /// Writes queued frames, up to a batch per turn. Stops at the first write that
    /// would block: the rest waits in the queue (where a full queue means 4006) rather
    /// than piling up inside tungstenite.
    fn send_queued(&mut self) -> Step {
        for _ in 0..BATCH {
            if self.wire.busy() {
                return Ok(());
            }
            match self.queue.try_recv() {
                Ok(Outbound::Notification(frame)) => self.send(frame, true)?,
                Ok(Outbound::State(message)) => self.send_state(&message)?,
                Err(_) => return Ok(()),
            }
        }
        // More than a batch waiting: take another turn before parking.
        std::thread::current().unpark();
        Ok(())
    }

    /// Sends one notification unless this connection already sent it. Live frames
    /// (not replayed history) feed the delivery-latency histogram.
    fn send(&mut self, frame: Frame, live: bool) -> Step {
        // After a close frame nothing more may be sent; an expired notification is
        // gone from every read path, a queued frame of it included.
        if self.wire.closing().is_some()
            || frame.is_expired()
            || !self.handle.seen().insert(frame.id)
        {
            return Ok(());
        }
        let text = self.handle.protocol().notification(&frame.json);
        self.wire.write(Message::Text(text))?;
        metrics::delivered(&frame.id, live);
        Ok(())
    }

    /// The thread's own timers: the close grace, the token's expiry, and the idle
    /// check and ping the poller asked for.
    fn on_timer(&mut self) -> Step {
        let now = Instant::now();
        if let Some((close, give_up)) = self.wire.closing() {
            return if now >= give_up {
                Err(Done(close.code()))
            } else {
                Ok(())
            };
        }
        if now >= self.expires {
            return self.wire.begin_close(Close::Expired, None);
        }
        if self.handle.take(Request::IdleCheck)
            && Duration::from_millis(self.handle.silent_ms()) >= self.ctx.idle_timeout
        {
            return self.wire.begin_close(Close::Idle, None);
        }
        if self.handle.take(Request::Ping) {
            self.wire.write(Message::Ping(Default::default()))?;
            return self.wire.flush();
        }
        Ok(())
    }

    fn next_deadline(&self) -> Instant {
        match self.wire.closing() {
            Some((_, give_up)) => give_up,
            None => self.expires,
        }
    }
}
