//! Every open REST connection, in a fixed table of slots: a parked connection sits
//! in its slot; a worker takes it out for a turn and puts it back (or closes it).
//!
//! Epoll events carry slot and generation, never the descriptor: a slot's generation
//! moves on when its connection closes, so a late event for a closed connection
//! finds nothing to take, even if the slot (or the descriptor number) is in use again.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use super::connection::Connection;

struct Slot {
    connection: Mutex<Option<Box<Connection>>>,
    generation: AtomicU32,
    /// When the parked connection expires, in ms since the table's epoch (0: none).
    deadline: AtomicU64,
    /// Counted against the connection cap (refused connections are not).
    counted: AtomicBool,
}

pub struct Table {
    slots: Box<[Slot]>,
    free: Mutex<Vec<u32>>,
    counted: AtomicUsize,
    epoch: Instant,
}

/// Slot and generation of one connection.
pub type Token = u64;

fn token(slot: u32, generation: u32) -> Token {
    (u64::from(slot) << 32) | u64::from(generation)
}

fn split(token: Token) -> (usize, u32) {
    ((token >> 32) as usize, token as u32)
}

impl Table {
    pub fn new(capacity: usize) -> Table {
        let slots = (0..capacity)
            .map(|_| Slot {
                connection: Mutex::new(None),
                generation: AtomicU32::new(0),
                deadline: AtomicU64::new(0),
                counted: AtomicBool::new(false),
            })
            .collect();
        Table {
            slots,
            // Popped from the end: low slots first, so a sweep touches few pages.
            free: Mutex::new((0..capacity as u32).rev().collect()),
            counted: AtomicUsize::new(0),
            epoch: Instant::now(),
        }
    }

    /// Connections counted against the cap.
    pub fn counted(&self) -> usize {
        self.counted.load(Ordering::Relaxed)
    }

    /// Parks a new connection in a free slot and gives it to `register` (which adds
    /// it to epoll) while the slot is still locked, so no event can find it missing.
    /// `None` (and the connection closed) when no slot is free or `register` fails.
    pub fn insert(
        &self,
        connection: Connection,
        counted: bool,
        deadline: Instant,
        register: impl FnOnce(&Connection, Token) -> std::io::Result<()>,
    ) -> Option<Token> {
        let index = lock(&self.free).pop()?;
        let slot = &self.slots[index as usize];
        let token = token(index, slot.generation.load(Ordering::Acquire));
        let mut guard = lock(&slot.connection);
        if register(&connection, token).is_err() {
            drop(guard);
            lock(&self.free).push(index);
            return None;
        }
        slot.counted.store(counted, Ordering::Relaxed);
        if counted {
            self.counted.fetch_add(1, Ordering::Relaxed);
        }
        slot.deadline
            .store(self.millis(deadline), Ordering::Release);
        *guard = Some(Box::new(connection));
        Some(token)
    }

    /// Takes the connection of `token` out for a turn, if it is still that one.
    pub fn take(&self, token: Token) -> Option<Box<Connection>> {
        let (index, generation) = split(token);
        let slot = self.slots.get(index)?;
        let mut guard = lock(&slot.connection);
        if slot.generation.load(Ordering::Acquire) != generation {
            return None;
        }
        guard.take()
    }

    /// Puts a connection back after its turn and re-arms it (`rearm`) under the
    /// slot's lock: whoever takes it next finds it in place. If re-arming fails the
    /// connection is closed and the slot freed.
    pub fn park(
        &self,
        token: Token,
        connection: Box<Connection>,
        deadline: Instant,
        rearm: impl FnOnce(&Connection) -> std::io::Result<()>,
    ) {
        let (index, _) = split(token);
        let slot = &self.slots[index];
        let mut guard = lock(&slot.connection);
        slot.deadline
            .store(self.millis(deadline), Ordering::Release);
        if rearm(&connection).is_ok() {
            *guard = Some(connection);
            return;
        }
        drop(guard);
        drop(connection);
        self.release(token);
    }

    /// Frees the slot of a connection that has been closed (dropped).
    pub fn release(&self, token: Token) {
        let (index, generation) = split(token);
        let slot = &self.slots[index];
        if slot
            .generation
            .compare_exchange(
                generation,
                generation.wrapping_add(1),
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_err()
        {
            return;
        }
        if slot.counted.swap(false, Ordering::Relaxed) {
            self.counted.fetch_sub(1, Ordering::Relaxed);
        }
        slot.deadline.store(0, Ordering::Release);
        lock(&self.free).push(index as u32);
    }

    /// Takes out every parked connection whose deadline has passed (`all`: every
    /// parked connection), with its token.
    pub fn take_expired(&self, now: Instant, all: bool) -> Vec<(Token, Box<Connection>)> {
        let now_ms = self.millis(now);
        let mut expired = Vec::new();
        for (index, slot) in self.slots.iter().enumerate() {
            let deadline = slot.deadline.load(Ordering::Acquire);
            if deadline == 0 || (!all && deadline > now_ms) {
                continue;
            }
            let mut guard = lock(&slot.connection);
            // Parked again with a new deadline since the look above: not expired.
            let deadline = slot.deadline.load(Ordering::Acquire);
            if !all && (deadline == 0 || deadline > now_ms) {
                continue;
            }
            if let Some(connection) = guard.take() {
                let generation = slot.generation.load(Ordering::Acquire);
                expired.push((token(index as u32, generation), connection));
            }
        }
        expired
    }

    fn millis(&self, at: Instant) -> u64 {
        // +1: zero means "no deadline".
        at.saturating_duration_since(self.epoch).as_millis() as u64 + 1
    }
}

/// Locks a mutex whose data stays consistent even if a holder panicked (every
/// critical section here is a move or a push).
pub fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
