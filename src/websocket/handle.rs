//! What other threads ask of a connection, and how they reach it: one request word
//! (flags, and the close code asked for), a wake-up, when the client was last heard,
//! its outbound queue, its socket's `lending`, and the ids it has sent (`seen`).
//!
//! Shared by the hub (which hands it notifications, 4005 and catch-up requests
//! through `hub::Member`), the poller (socket ready, pings, idle checks) and the
//! connection thread itself, which alone parks on it. A delivery is decided here:
//! written straight to the lent socket when nothing waits before it, else queued for
//! the thread, else (queue full) the connection is closed with 4006.

use std::net::TcpStream;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread::Thread;
use std::time::Instant;

use crossbeam_channel::Sender;
use tungstenite::protocol::frame::coding::{Control, Data, OpCode};

use super::close::Close;
use super::lending::{Lending, Sent, Use};
use super::protocol::Protocol;
use super::seen::Seen;
use crate::events::StateMessage;
use crate::hub::{Frame, Member};
use crate::metrics;

/// What a connection's outbound queue carries, in the order it arrived.
#[derive(Debug, Clone)]
pub enum Outbound {
    Notification(Frame),
    /// A state change or new counters of the user (event-protocol connections only).
    State(Arc<StateMessage>),
}

/// A request flag in the request word; the close code takes its upper half.
#[derive(Debug, Clone, Copy)]
pub enum Request {
    /// The socket may be readable or writable (the poller).
    IoReady = 1,
    /// Catch up from PostgreSQL (the subscriber reconnected to Redis).
    CatchUp = 2,
    /// Send a ping yourself (the poller could not borrow the socket).
    Ping = 4,
    /// Check whether the client went idle (the poller).
    IdleCheck = 8,
}

const CLOSE_SHIFT: u32 = 16;
/// What keeps a notification from being written by a borrower: a close or a
/// catch-up waiting for the thread.
const BLOCKS_DIRECT: u32 = !0 << CLOSE_SHIFT | Request::CatchUp as u32;

/// One connection as the threads around it see it.
pub struct Handle {
    requests: AtomicU32,
    /// The connection thread, once it runs: an unpark before it parks is kept, so no
    /// request is lost, and many coalesce.
    thread: OnceLock<Thread>,
    /// When the client last sent anything (`now_ms`).
    heard_ms: AtomicU64,
    pub lending: Lending,
    seen: Mutex<Seen>,
    /// Unbounded in type, bounded here (`deliver` checks its length first; only the
    /// subscriber thread sends): a bounded channel allocates every slot up front, 14
    /// KiB per idle connection.
    queue: Sender<Outbound>,
    capacity: usize,
    /// How notifications are framed, and whether state messages are wanted.
    protocol: Protocol,
}

impl Handle {
    pub fn new(
        socket: Arc<TcpStream>,
        (queue, capacity): (Sender<Outbound>, usize),
        protocol: Protocol,
    ) -> Handle {
        Handle {
            requests: AtomicU32::new(0),
            thread: OnceLock::new(),
            heard_ms: AtomicU64::new(now_ms()),
            lending: Lending::new(socket),
            seen: Mutex::new(Seen::default()),
            queue,
            capacity,
            protocol,
        }
    }

    /// What the connection speaks (how its notifications are framed).
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// Makes the calling thread the one woken (the connection thread, once at start).
    /// Requests made before stay in the word and the queue.
    pub fn attach(&self) {
        let _ = self.thread.set(std::thread::current());
    }

    pub fn wake(&self) {
        if let Some(thread) = self.thread.get() {
            thread.unpark();
        }
    }

    /// Sets `request` and wakes the thread.
    pub fn ask(&self, request: Request) {
        self.requests.fetch_or(request as u32, Ordering::AcqRel);
        self.wake();
    }

    /// Takes `request`: true when it was set.
    pub fn take(&self, request: Request) -> bool {
        self.requests.fetch_and(!(request as u32), Ordering::AcqRel) & request as u32 != 0
    }

    /// Asks the connection to close with `close`; the first close asked for wins.
    pub fn close(&self, close: Close) {
        let code = u32::from(close.code()) << CLOSE_SHIFT;
        let _ = self
            .requests
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |word| {
                (word >> CLOSE_SHIFT == 0).then_some(word | code)
            });
        self.wake();
    }

    pub fn close_requested(&self) -> Option<Close> {
        Close::from_code((self.requests.load(Ordering::Acquire) >> CLOSE_SHIFT) as u16)
    }

    /// True when something waits for the thread: the socket ready, or (for a
    /// connection not yet closing, `open`) any other request.
    pub fn pending(&self, open: bool) -> bool {
        let word = self.requests.load(Ordering::Acquire);
        let mask = if open {
            u32::MAX
        } else {
            Request::IoReady as u32
        };
        word & mask != 0
    }

    /// The client sent something now.
    pub fn heard(&self) {
        self.heard_ms.store(now_ms(), Ordering::Release);
    }

    /// Milliseconds since the client last sent anything.
    pub fn silent_ms(&self) -> u64 {
        now_ms().saturating_sub(self.heard_ms.load(Ordering::Acquire))
    }

    /// The ids sent on this connection. Held only briefly, never across a wait.
    pub fn seen(&self) -> MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends a ping on the lent socket, or asks the thread to (the socket is not
    /// offered, or full: then the thread's ping waits in tungstenite's buffer, where
    /// the slow-client rules apply).
    pub fn ping(&self) {
        let sent = match self.lending.borrow(Use::Heartbeat) {
            Some(loan) => self.sent(loan.send(OpCode::Control(Control::Ping), &[])),
            None => false,
        };
        if !sent {
            self.ask(Request::Ping);
        }
    }

    /// Writes a notification straight to the lent socket when it may be: offered for
    /// frames, and no catch-up (which must go first) or close waiting for the thread.
    fn write_direct(&self, frame: &Frame) -> bool {
        let Some(loan) = self.lending.borrow(Use::Frame) else {
            return false;
        };
        if self.requests.load(Ordering::Acquire) & BLOCKS_DIRECT != 0 {
            return false;
        }
        let mut seen = self.seen();
        // Expired (contract §1: gone from every read path) or already sent by a
        // replay or catch-up: nothing to write, as in the queue's path.
        if frame.is_expired() || seen.contains(&frame.id) {
            return true;
        }
        let text = self.protocol.notification(&frame.json);
        if !self.sent(loan.send(OpCode::Data(Data::Text), text.as_bytes())) {
            return false;
        }
        seen.insert(frame.id);
        drop(seen);
        metrics::delivered(&frame.id, true);
        true
    }

    /// Whether a frame written on a loan counts as sent; wakes the thread when it must
    /// finish the frame or find out the socket is dead.
    fn sent(&self, sent: Sent) -> bool {
        match sent {
            Sent::Whole => true,
            Sent::Part => {
                self.ask(Request::IoReady);
                true
            }
            Sent::Nothing => false,
            Sent::Failed => {
                self.ask(Request::IoReady);
                false
            }
        }
    }
}

impl Handle {
    /// Queues `item` for the thread and wakes it; a full queue closes the connection
    /// as too slow (4006).
    fn enqueue(&self, item: Outbound) -> bool {
        if self.queue.len() >= self.capacity {
            self.close(Close::TooSlow);
            return false;
        }
        let queued = self.queue.try_send(item);
        if queued.is_ok() {
            self.wake();
        }
        queued.is_ok()
    }
}

impl Member for Handle {
    fn deliver(&self, frame: &Frame) -> bool {
        // Straight to the socket when nothing is queued before it (only the subscriber
        // thread adds to the queue, so "empty" stays true meanwhile).
        if self.queue.is_empty() && self.write_direct(frame) {
            return true;
        }
        self.enqueue(Outbound::Notification(frame.clone()))
    }

    fn replace(&self) {
        self.close(Close::Replaced);
    }

    fn state(&self, message: &Arc<StateMessage>) {
        // Always queued, never written by a borrower: the session works out what the
        // change means for its view (and a queue keeps it behind earlier frames).
        if self.protocol == Protocol::V1 {
            self.enqueue(Outbound::State(message.clone()));
        }
    }

    fn catch_up(&self) {
        self.ask(Request::CatchUp);
    }
}

/// Milliseconds since the process's first call: a clock cheap to keep in an atomic.
pub fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn handle(capacity: usize) -> (Handle, crossbeam_channel::Receiver<Outbound>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let _client = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (server, _) = listener.accept().expect("accept");
        let (queue, frames) = crossbeam_channel::unbounded();
        (
            Handle::new(Arc::new(server), (queue, capacity), Protocol::Plain),
            frames,
        )
    }

    fn frame() -> Frame {
        Frame {
            id: uuid::Uuid::now_v7(),
            json: "{}".into(),
            expires: None,
        }
    }

    #[test]
    fn frames_queue_while_the_socket_is_not_lent_and_a_full_queue_asks_for_4006() {
        let (handle, frames) = handle(1);
        assert!(handle.deliver(&frame()), "queued");
        assert_eq!(handle.close_requested(), None);
        assert!(!handle.deliver(&frame()), "the queue is full");
        assert_eq!(handle.close_requested(), Some(Close::TooSlow));
        handle.replace();
        assert_eq!(
            handle.close_requested(),
            Some(Close::TooSlow),
            "the first wins"
        );
        assert_eq!(frames.len(), 1);
    }

    #[test]
    fn requests_are_taken_once_and_a_close_keeps_frames_off_the_lent_socket() {
        let (handle, frames) = handle(4);
        assert!(!handle.pending(true));
        handle.catch_up();
        assert!(handle.pending(true) && !handle.pending(false));
        assert!(handle.take(Request::CatchUp));
        assert!(!handle.take(Request::CatchUp));
        handle.lending.offer(true);
        handle.close(Close::Replaced);
        assert!(handle.deliver(&frame()));
        assert_eq!(frames.len(), 1, "queued for the thread, which closes first");
    }

    #[test]
    fn an_expired_notification_is_taken_but_never_written() {
        let (handle, frames) = handle(4);
        handle.lending.offer(true);
        let mut expired = frame();
        expired.expires = Some(time::OffsetDateTime::now_utc() - time::Duration::seconds(1));
        assert!(
            handle.deliver(&expired),
            "taken (dropped), not a reason for 4006"
        );
        assert_eq!(frames.len(), 0, "not queued");
        assert!(!handle.seen().contains(&expired.id), "not written");
        let live = frame();
        assert!(handle.deliver(&live));
        assert!(
            handle.seen().contains(&live.id),
            "a live one is written to the lent socket"
        );
    }
}
