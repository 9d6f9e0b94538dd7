//! Who may touch a live connection's socket: its own thread, or, while that thread is
//! parked with nothing half-done, a helper thread doing routine work in its place.
//!
//! Waking a thread costs more than the work itself on a small virtual machine (a
//! wake-up measured ~50 µs of CPU here), and most of a connection's work is small:
//! a ping out, a pong in, a notification out. While the connection thread sleeps,
//! the heartbeat thread sends its pings, the readiness thread takes its pongs off
//! the socket, and the subscriber writes its notifications (`direct`), so 15,000 idle
//! connections wake no connection thread at all, and a delivery costs no wake-up.
//!
//! A connection thread lends its socket just before it parks, and only when nothing
//! is half-done (no unsent output, no partial inbound frame, no close under way); it
//! takes the socket back first thing after waking, waiting out a loan in progress
//! (a loan is a non-blocking syscall or two, plus at most an uncontended lock and a
//! small copy). The socket stays open while lent: the thread closes it only after
//! taking it back.

use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

/// The connection thread is running (or parked with work half-done): hands off.
const OWNED: u8 = 0;
/// The connection thread is parked with nothing half-done: a helper may borrow.
const LENDABLE: u8 = 1;
/// A helper is using the socket.
const LENT: u8 = 2;

/// Yields before `reclaim` starts sleeping between looks.
const RECLAIM_YIELDS: u32 = 64;

/// The ownership state of one connection's socket.
#[derive(Debug, Default)]
pub struct SocketGate {
    state: AtomicU8,
}

impl SocketGate {
    /// Offers the socket to helpers (the connection thread, about to park).
    pub fn offer(&self) {
        self.state.store(LENDABLE, Ordering::Release);
    }

    /// Takes the socket back (the connection thread, after waking), waiting for a
    /// helper that holds it to finish: yielding at first (a loan is short), then
    /// sleeping briefly, in case the helper was descheduled mid-loan.
    pub fn reclaim(&self) {
        for attempt in 0u32.. {
            match self
                .state
                .compare_exchange(LENDABLE, OWNED, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) | Err(OWNED) => return,
                Err(_) if attempt < RECLAIM_YIELDS => std::thread::yield_now(),
                Err(_) => std::thread::sleep(Duration::from_micros(100)),
            }
        }
    }

    /// Borrows the socket if its thread offered it; the loan ends when the guard drops.
    pub fn borrow(&self) -> Option<Loan<'_>> {
        self.state
            .compare_exchange(LENDABLE, LENT, Ordering::AcqRel, Ordering::Acquire)
            .ok()
            .map(|_| Loan { gate: self })
    }
}

/// A helper's use of a socket; gives it back on drop.
pub struct Loan<'a> {
    gate: &'a SocketGate,
}

impl Loan<'_> {
    /// Ends the loan with the socket back in its thread's hands and not on offer:
    /// the thread has something to finish (the rest of a frame) before any helper
    /// may write again.
    pub fn return_to_owner(self) {
        self.gate.state.store(OWNED, Ordering::Release);
        std::mem::forget(self);
    }
}

impl Drop for Loan<'_> {
    fn drop(&mut self) {
        self.gate.state.store(LENDABLE, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_offered_socket_can_be_borrowed_and_reclaim_waits_for_the_loan() {
        let gate = SocketGate::default();
        assert!(gate.borrow().is_none(), "owned by its thread");
        gate.offer();
        let loan = gate.borrow().expect("offered");
        assert!(gate.borrow().is_none(), "one loan at a time");
        std::thread::scope(|scope| {
            let reclaimer = scope.spawn(|| gate.reclaim());
            std::thread::sleep(std::time::Duration::from_millis(20));
            assert!(!reclaimer.is_finished(), "reclaim waits while lent");
            drop(loan);
            reclaimer.join().expect("reclaimed");
        });
        assert!(gate.borrow().is_none(), "owned again");
    }
}
