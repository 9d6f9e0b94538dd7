//! A connection's link to the threads around it: the flags other threads set to ask
//! something of it (close, catch up, ping, check idleness, look at the socket), the
//! wake-up that goes with each, what it has sent (`seen`), and the gate through which
//! helpers use its socket while it sleeps.
//!
//! Shared by the hub (frames and close requests), the readiness, heartbeat and
//! subscriber threads, and the connection thread itself, which alone parks on it.

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU16, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::thread::Thread;
use std::time::Instant;

use super::gate::SocketGate;
use super::seen::Seen;

/// What other threads can ask of a connection: flags saying what to look at, and a
/// wake-up. The connection thread parks (a futex wait, no spinning) and every request
/// unparks it; an unpark before it parks is kept, so none is lost, and many coalesce.
/// While it sleeps, helpers may use its socket through `gate`.
pub struct Link {
    thread: OnceLock<Thread>,
    io_ready: AtomicBool,
    close_code: AtomicU16,
    catch_up: AtomicBool,
    ping_due: AtomicBool,
    idle_check: AtomicBool,
    /// When the client last sent anything (`link::now_ms`): the connection thread and
    /// the readiness thread (pongs it takes) write it, the heartbeat thread reads it.
    heard_ms: AtomicU64,
    /// Lets helper threads do the heartbeat, and the subscriber write frames, while
    /// the connection thread sleeps.
    pub gate: SocketGate,
    /// The live socket's descriptor (-1 before), for helpers holding a loan.
    fd: AtomicI32,
    /// Whether a helper may write notifications now: no history is being sent.
    direct: AtomicBool,
    /// Ids sent on this connection, whoever wrote them.
    seen: Mutex<Seen>,
    /// The rest of a frame a helper wrote only in part; its thread sends it first.
    unsent: Mutex<Vec<u8>>,
}

impl Default for Link {
    fn default() -> Link {
        Link::new()
    }
}

impl Link {
    pub fn new() -> Link {
        Link {
            thread: OnceLock::new(),
            io_ready: AtomicBool::new(false),
            close_code: AtomicU16::new(0),
            catch_up: AtomicBool::new(false),
            ping_due: AtomicBool::new(false),
            idle_check: AtomicBool::new(false),
            heard_ms: AtomicU64::new(now_ms()),
            gate: SocketGate::default(),
            fd: AtomicI32::new(-1),
            direct: AtomicBool::new(false),
            seen: Mutex::new(Seen::default()),
            unsent: Mutex::new(Vec::new()),
        }
    }

    /// Makes the calling thread the one woken (the connection thread, once at start).
    /// Requests made before are kept in the flags and the queue.
    pub fn attach(&self) {
        let _ = self.thread.set(std::thread::current());
    }

    /// Wakes the connection thread: its queue has a new frame, or a flag was set.
    pub fn wake(&self) {
        if let Some(thread) = self.thread.get() {
            thread.unpark();
        }
    }

    /// The socket may be readable or writable (from the readiness thread).
    pub fn io_ready(&self) {
        self.io_ready.store(true, Ordering::Release);
        self.wake();
    }

    /// True when a signal waits: the socket ready, or (for a connection not yet
    /// closing) a close, catch-up, ping or idle-check request.
    pub fn pending(&self, with_requests: bool) -> bool {
        self.io_ready.load(Ordering::Acquire)
            || (with_requests
                && (self.catch_up.load(Ordering::Acquire)
                    || self.close_code.load(Ordering::Acquire) != 0
                    || self.ping_due.load(Ordering::Acquire)
                    || self.idle_check.load(Ordering::Acquire)))
    }

    /// Takes the "socket ready" signal, if any.
    pub fn take_io_ready(&self) -> bool {
        self.io_ready.swap(false, Ordering::AcqRel)
    }

    /// Asks the connection to close with `code`; the first code asked for wins.
    pub fn close(&self, code: u16) {
        let _ = self
            .close_code
            .compare_exchange(0, code, Ordering::AcqRel, Ordering::Acquire);
        self.wake();
    }

    /// The close code asked for, if any.
    pub fn close_requested(&self) -> Option<u16> {
        match self.close_code.load(Ordering::Acquire) {
            0 => None,
            code => Some(code),
        }
    }

    /// Asks the connection to catch up from PostgreSQL (after a Redis outage).
    pub fn request_catch_up(&self) {
        self.catch_up.store(true, Ordering::Release);
        self.wake();
    }

    /// Takes the catch-up request, if any.
    pub fn take_catch_up(&self) -> bool {
        self.catch_up.swap(false, Ordering::AcqRel)
    }

    /// Asks the connection thread to send a ping itself (the heartbeat thread could
    /// not borrow the socket).
    pub fn request_ping(&self) {
        self.ping_due.store(true, Ordering::Release);
        self.wake();
    }

    pub fn take_ping_due(&self) -> bool {
        self.ping_due.swap(false, Ordering::AcqRel)
    }

    /// Asks the connection thread to check whether the client went idle.
    pub fn request_idle_check(&self) {
        self.idle_check.store(true, Ordering::Release);
        self.wake();
    }

    pub fn take_idle_check(&self) -> bool {
        self.idle_check.swap(false, Ordering::AcqRel)
    }

    /// The client sent something now.
    pub fn heard(&self) {
        self.heard_ms.store(now_ms(), Ordering::Release);
    }

    pub fn set_fd(&self, fd: i32) {
        self.fd.store(fd, Ordering::Release);
    }

    pub fn fd(&self) -> i32 {
        self.fd.load(Ordering::Acquire)
    }

    /// Says whether helpers may write notifications (the thread, before offering).
    pub fn allow_direct(&self, allowed: bool) {
        self.direct.store(allowed, Ordering::Release);
    }

    /// True when a notification may be written by a helper now: allowed, and no
    /// catch-up (which must go first) or close waiting for the thread.
    pub fn takes_direct_frames(&self) -> bool {
        self.direct.load(Ordering::Acquire)
            && !self.catch_up.load(Ordering::Acquire)
            && self.close_code.load(Ordering::Acquire) == 0
    }

    /// The ids sent on this connection. Held only briefly, never across a wait.
    pub fn seen(&self) -> MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps the rest of a frame for the thread to send first.
    pub fn keep_unsent(&self, rest: Vec<u8>) {
        self.unsent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(&rest);
    }

    pub fn take_unsent(&self) -> Option<Vec<u8>> {
        let mut unsent = self.unsent.lock().unwrap_or_else(|e| e.into_inner());
        (!unsent.is_empty()).then(|| std::mem::take(&mut *unsent))
    }

    /// Milliseconds since the client last sent anything.
    pub fn silent_ms(&self) -> u64 {
        now_ms().saturating_sub(self.heard_ms.load(Ordering::Acquire))
    }
}

/// Milliseconds since the process's first call: a clock cheap to keep in an atomic.
pub fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}
