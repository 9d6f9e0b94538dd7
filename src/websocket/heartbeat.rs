//! The heartbeat thread: pings every live connection on schedule and notices clients
//! gone idle, without waking connection threads that have nothing else to do.
//!
//! It walks the readiness slots in small steps, a full round every `sweep` (a
//! fraction of the ping interval, at most a second): a connection whose ping is due
//! gets a ping frame written straight to its socket when its thread has offered the
//! socket (`gate`), and is asked to send one itself otherwise; a connection silent for
//! the idle timeout is asked to check and close. Its pongs are taken off the socket by
//! the readiness thread. Comes after `readiness` (which holds the slots); the
//! connection threads do everything else.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::link::now_ms;
use super::link::Link;
use super::readiness::Readiness;

/// An unmasked, empty ping frame (RFC 6455 §5.5.2): FIN + ping, length 0.
const PING_FRAME: [u8; 2] = [0x89, 0x00];
/// Longest round over all connections: how late a ping or an idle close may be.
const MAX_SWEEP: Duration = Duration::from_secs(1);
/// Shortest pause between steps.
const MIN_STEP: Duration = Duration::from_millis(10);
/// The heartbeat thread's name (in logs, and for `supervise`).
pub const THREAD_NAME: &str = "notifd-heartbeat";

/// Starts the heartbeat thread; it runs until `stop` is set.
pub fn spawn(
    readiness: Readiness,
    ping_interval: Duration,
    idle_timeout: Duration,
    stop: Arc<AtomicBool>,
) -> io::Result<JoinHandle<()>> {
    let beat = Heartbeat {
        readiness,
        ping_ms: ping_interval.as_millis() as u64,
        idle_ms: idle_timeout.as_millis() as u64,
        sweep: (ping_interval.min(idle_timeout) / 30).clamp(MIN_STEP, MAX_SWEEP),
    };
    let stopping = stop.clone();
    crate::supervise::spawn_essential(
        THREAD_NAME,
        128 * 1024,
        move || stopping.load(Ordering::Acquire),
        move || beat.run(&stop),
    )
}

struct Heartbeat {
    readiness: Readiness,
    ping_ms: u64,
    idle_ms: u64,
    sweep: Duration,
}

impl Heartbeat {
    fn run(&self, stop: &AtomicBool) {
        let step = (self.sweep / 10).max(MIN_STEP);
        let mut position = 0;
        let mut last = Instant::now();
        while !stop.load(Ordering::Acquire) {
            crate::supervise::fault_point(THREAD_NAME);
            std::thread::sleep(step);
            let now = Instant::now();
            // Slots due this step, in proportion to the time that passed, so a late
            // step catches up; a round never takes longer than `sweep`.
            let share = now.duration_since(last).as_secs_f64() / self.sweep.as_secs_f64();
            last = now;
            let count = (share * self.readiness.slots_used() as f64).ceil() as usize;
            let now_ms = now_ms();
            position = self.readiness.visit(position, count, |link, next_ping_ms| {
                self.beat(link, next_ping_ms, now_ms)
            });
        }
    }

    fn beat(&self, link: &Link, next_ping_ms: &mut u64, now_ms: u64) {
        if link.silent_ms() >= self.idle_ms {
            link.request_idle_check();
            return;
        }
        if now_ms < *next_ping_ms {
            return;
        }
        *next_ping_ms = now_ms + self.ping_ms;
        let Some(loan) = link.gate.borrow() else {
            return link.request_ping();
        };
        // Not sent (a full socket, most likely): the thread's own ping waits in
        // tungstenite's buffer, where the slow-client rules apply.
        if !super::direct::send(link, loan, &PING_FRAME, &[]) {
            link.request_ping();
        }
    }
}
