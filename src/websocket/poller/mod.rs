//! The poller: one thread that owns the table of live sockets and does their routine
//! work, so that a parked connection thread is woken only when it has work of its own.
//!
//! It waits in `epoll_wait` (`epoll`) until a socket is ready or the next heartbeat
//! step is due, whichever comes first. A ready socket wakes its connection thread
//! (`handle`), unless all that arrived is pongs and the socket is lent (`lending`):
//! those it takes off the socket itself and re-arms it. A heartbeat step walks a
//! share of the table, so that a full round takes `sweep` (a fraction of the ping
//! interval, at most a second): a connection whose ping is due gets one (written on
//! the lent socket, or asked of its thread), and one silent for the idle timeout is
//! asked to check and close (4000).
//!
//! Connection threads add and remove their slots (`watch`, and dropping the `Watch`);
//! a slot has a lock of its own, so events for different sockets never contend, and
//! events carry slot + generation so that one for a slot since reused is ignored.

mod epoll;

use std::io;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::handle::{now_ms, Handle, Request};
use super::lending::Use;
use epoll::{Epoll, Event, Events};

/// The poller thread's name (in logs, and for `supervise`).
pub const THREAD_NAME: &str = "notifd-poller";
const MAX_EVENTS: usize = 256;
/// Longest round over all connections: how late a ping or an idle close may be.
const MAX_SWEEP: Duration = Duration::from_secs(1);
/// Shortest pause between heartbeat steps.
const MIN_STEP: Duration = Duration::from_millis(10);

/// One watched socket.
struct Slot {
    generation: u32,
    handle: Option<Arc<Handle>>,
    /// When this connection is pinged next (`now_ms`).
    next_ping_ms: u64,
}

struct Table {
    epoll: Epoll,
    slots: Vec<Mutex<Slot>>,
    free: Mutex<Vec<u32>>,
    /// One past the highest slot ever used: the heartbeat walks no further.
    used: AtomicUsize,
}

impl Table {
    fn slot(&self, at: usize) -> MutexGuard<'_, Slot> {
        self.slots[at].lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Handle on the poller's table; cheap to clone.
#[derive(Clone)]
pub struct Poller {
    table: Arc<Table>,
}

/// When to ping and when a client counts as idle.
pub struct Heartbeat {
    pub ping_interval: Duration,
    pub idle_timeout: Duration,
}

fn token(slot: u32, generation: u32) -> u64 {
    (u64::from(slot) << 32) | u64::from(generation)
}

impl Poller {
    /// A table with room for `capacity` sockets.
    pub fn new(capacity: usize) -> io::Result<Poller> {
        let slots = (0..capacity)
            .map(|_| {
                Mutex::new(Slot {
                    generation: 0,
                    handle: None,
                    next_ping_ms: 0,
                })
            })
            .collect();
        Ok(Poller {
            table: Arc::new(Table {
                epoll: Epoll::new()?,
                slots,
                free: Mutex::new((0..capacity as u32).rev().collect()),
                used: AtomicUsize::new(0),
            }),
        })
    }

    /// Watches the socket of `handle`, first pinged at `first_ping_ms`. Fails when
    /// every slot is taken.
    pub fn watch(&self, handle: Arc<Handle>, first_ping_ms: u64) -> io::Result<Watch> {
        let table = &self.table;
        let slot = table
            .free
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
            .ok_or_else(|| io::Error::other("poller: no free slot"))?;
        let generation = {
            let mut entry = table.slot(slot as usize);
            entry.generation = entry.generation.wrapping_add(1);
            entry.handle = Some(handle.clone());
            entry.next_ping_ms = first_ping_ms;
            entry.generation
        };
        table.used.fetch_max(slot as usize + 1, Ordering::AcqRel);
        // The slot is filled before the socket joins epoll, so the first event finds it.
        let watch = Watch {
            poller: self.clone(),
            handle,
            slot,
            generation,
        };
        table.epoll.add(watch.socket(), token(slot, generation))?;
        Ok(watch)
    }

    /// Wakes every watched connection (shutdown: each then sees the signal).
    pub fn wake_all(&self) {
        for at in 0..self.table.used.load(Ordering::Acquire) {
            if let Some(handle) = &self.table.slot(at).handle {
                handle.wake();
            }
        }
    }

    /// Runs the poller on a thread of its own until `stop` is set. Not at shutdown:
    /// the connections still need their events then, to read the clients' close replies.
    pub fn spawn(
        &self,
        heartbeat: &Heartbeat,
        stop: Arc<AtomicBool>,
    ) -> io::Result<JoinHandle<()>> {
        let mut beat = Beat::new(self.table.clone(), heartbeat);
        let stopping = stop.clone();
        crate::supervise::spawn_essential(
            THREAD_NAME,
            128 * 1024,
            move || stopping.load(Ordering::Acquire),
            move || beat.run(&stop),
        )
    }
}

/// The poller thread's state: the table, and where the heartbeat stands in it.
struct Beat {
    table: Arc<Table>,
    ping_ms: u64,
    idle_ms: u64,
    sweep: Duration,
    step: Duration,
    /// The next slot the heartbeat looks at, when, and when it last did.
    position: usize,
    next_step: Instant,
    last_step: Instant,
}

impl Beat {
    fn new(table: Arc<Table>, heartbeat: &Heartbeat) -> Beat {
        let sweep =
            (heartbeat.ping_interval.min(heartbeat.idle_timeout) / 30).clamp(MIN_STEP, MAX_SWEEP);
        let step = (sweep / 10).max(MIN_STEP);
        let now = Instant::now();
        Beat {
            table,
            ping_ms: heartbeat.ping_interval.as_millis() as u64,
            idle_ms: heartbeat.idle_timeout.as_millis() as u64,
            sweep,
            step,
            position: 0,
            next_step: now + step,
            last_step: now,
        }
    }

    fn run(&mut self, stop: &AtomicBool) {
        let mut events = Events::with_capacity(MAX_EVENTS);
        while !stop.load(Ordering::Acquire) {
            crate::supervise::fault_point(THREAD_NAME);
            let left = self.next_step.saturating_duration_since(Instant::now());
            // Rounded up: a wait of 0 ms before the step is due would spin.
            let timeout_ms = left.as_micros().div_ceil(1000) as i32;
            if let Err(err) = self.table.epoll.wait(&mut events, timeout_ms) {
                log::error!(error = err.to_string().as_str(); "epoll_wait failed");
            }
            for event in events.iter() {
                self.on_event(&event);
            }
            if Instant::now() >= self.next_step {
                self.heartbeat_step();
            }
        }
    }

    fn on_event(&self, event: &Event) {
        let (slot, generation) = ((event.token >> 32) as usize, event.token as u32);
        let Some(entry) = self.table.slots.get(slot) else {
            return;
        };
        let entry = entry.lock().unwrap_or_else(|e| e.into_inner());
        let Some(handle) = entry
            .handle
            .as_ref()
            .filter(|_| entry.generation == generation)
        else {
            return;
        };
        if !(event.only_input && self.take_pongs(handle, event.token)) {
            handle.ask(Request::IoReady);
        }
    }

    /// Takes pongs off a lent socket and re-arms it, so its thread sleeps on. False
    /// when the thread must look itself (anything else arrived, or it was not lent).
    fn take_pongs(&self, handle: &Handle, token: u64) -> bool {
        let Some(loan) = handle.lending.borrow(Use::Heartbeat) else {
            return false;
        };
        if !loan.take_pongs() {
            return false;
        }
        handle.heard();
        // The thread re-arms only after a wake-up, which this path does not give.
        let socket = handle.lending.socket().as_fd();
        let rearmed = self.table.epoll.rearm(socket, token, false).is_ok();
        drop(loan);
        rearmed
    }

    /// Visits the slots due this step, in proportion to the time that passed, so a
    /// late step catches up; a round never takes longer than `sweep`.
    fn heartbeat_step(&mut self) {
        let now = Instant::now();
        let share = now.duration_since(self.last_step).as_secs_f64() / self.sweep.as_secs_f64();
        self.last_step = now;
        self.next_step = now + self.step;
        let used = self.table.used.load(Ordering::Acquire);
        if used == 0 {
            return;
        }
        let count = ((share * used as f64).ceil() as usize).min(used);
        let now_ms = now_ms();
        let mut at = self.position % used;
        for _ in 0..count {
            let mut entry = self.table.slot(at);
            let Slot {
                handle,
                next_ping_ms,
                ..
            } = &mut *entry;
            if let Some(handle) = handle {
                self.beat(handle, next_ping_ms, now_ms);
            }
            drop(entry);
            at = (at + 1) % used;
        }
        self.position = at;
    }

    fn beat(&self, handle: &Handle, next_ping_ms: &mut u64, now_ms: u64) {
        if handle.silent_ms() >= self.idle_ms {
            return handle.ask(Request::IdleCheck);
        }
        if now_ms >= *next_ping_ms {
            *next_ping_ms = now_ms + self.ping_ms;
            handle.ping();
        }
    }
}

/// A socket in the poller's table. Dropping it takes the socket out of epoll and frees
/// the slot.
pub struct Watch {
    poller: Poller,
    handle: Arc<Handle>,
    slot: u32,
    generation: u32,
}

impl Watch {
    fn socket(&self) -> std::os::fd::BorrowedFd<'_> {
        self.handle.lending.socket().as_fd()
    }

    /// Arms the one-shot registration again, for writable too while a flush waits.
    pub fn rearm(&self, want_write: bool) -> io::Result<()> {
        let token = token(self.slot, self.generation);
        self.poller
            .table
            .epoll
            .rearm(self.socket(), token, want_write)
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let table = &self.poller.table;
        // The socket is still open: `handle` holds it.
        table.epoll.remove(self.socket());
        table.slot(self.slot as usize).handle = None;
        table
            .free
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(self.slot);
    }
}
