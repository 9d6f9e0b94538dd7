//! The state-fanout scenario's bookkeeping: one slot per user holding its
//! notification's id, whether it is read now, and the one mark in flight (at most
//! one per user, so an `updated` frame names its mark). The marker claims a free
//! user, reports the PATCH's answer; the user's client (on the other instance)
//! reports its frames; whichever comes second completes the mark and records its
//! times. state_fanout.rs drives both sides.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::events::{Event, EventCounts};
use crate::stats::{self, Rng};
use crate::ws::Frames;

/// A mark whose `updated` frame has not arrived this long after its 200 is lost.
pub const LOST_AFTER: Duration = Duration::from_secs(5);
/// Random picks per claim before the tick gives up (every user busy).
const PICKS: usize = 16;

/// One user's state.
#[derive(Default)]
struct Slot {
    /// Its notification's id, once the `notification` event arrived.
    id: Option<String>,
    read: bool,
    pending: Option<Pending>,
}

/// A mark in flight.
struct Pending {
    /// Read (true) or unread (false).
    read: bool,
    sent: Instant,
    /// After the warm-up: its times are recorded.
    measured: bool,
    /// The PATCH answered 200.
    answered: Option<Instant>,
    /// The `updated` frame arrived.
    frame: Option<Instant>,
}

/// A claimed mark: which user, which way, on which notification.
pub struct Claim {
    pub user: usize,
    pub read: bool,
    pub id: String,
}

/// Times of the completed marks, and what did not pair up.
pub struct Slots {
    slots: Vec<Mutex<Slot>>,
    /// 200 -> `updated` frame (0 when the frame came first), ns.
    pub answer_to_frame: Mutex<Histogram<u64>>,
    /// PATCH sent -> `updated` frame, ns.
    pub sent_to_frame: Mutex<Histogram<u64>>,
    /// Marks whose frame arrived before their 200 was read.
    pub frame_first: AtomicU64,
    pub completed: AtomicU64,
    pub lost: AtomicU64,
    /// `updated` frames that named no mark in flight (say, a lost mark's, late).
    pub unmatched: AtomicU64,
    pub events: EventCounts,
}

impl Slots {
    pub fn new(users: usize) -> Arc<Slots> {
        Arc::new(Slots {
            slots: (0..users).map(|_| Mutex::new(Slot::default())).collect(),
            answer_to_frame: Mutex::new(stats::histogram()),
            sent_to_frame: Mutex::new(stats::histogram()),
            frame_first: AtomicU64::new(0),
            completed: AtomicU64::new(0),
            lost: AtomicU64::new(0),
            unmatched: AtomicU64::new(0),
            events: EventCounts::default(),
        })
    }

    /// The client reader of `user`.
    pub fn frames(self: &Arc<Slots>, user: usize) -> Arc<dyn Frames> {
        Arc::new(UserFrames {
            slots: self.clone(),
            user,
        })
    }

    /// Users whose notification has arrived.
    pub fn ready(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| s.lock().is_ok_and(|s| s.id.is_some()))
            .count()
    }

    /// Marks in flight or waiting for their frame.
    pub fn outstanding(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| s.lock().is_ok_and(|s| s.pending.is_some()))
            .count()
    }

    /// Claims a random user with its notification and no mark in flight (expiring a
    /// lost one first) for the opposite of its state now.
    pub fn claim(&self, rng: &mut Rng, measured: bool) -> Option<Claim> {
        for _ in 0..PICKS {
            let user = rng.below(self.slots.len() as u64) as usize;
            let Ok(mut slot) = self.slots[user].lock() else {
                continue;
            };
            self.expire(&mut slot, LOST_AFTER);
            let Some(id) = slot.id.clone() else { continue };
            if slot.pending.is_some() {
                continue;
            }
            let read = !slot.read;
            slot.pending = Some(Pending {
                read,
                sent: Instant::now(),
                measured,
                answered: None,
                frame: None,
            });
            return Some(Claim { user, read, id });
        }
        None
    }

    /// The claim's PATCH answered 200 at `at`.
    pub fn answered(&self, claim: &Claim, at: Instant) {
        let Ok(mut slot) = self.slots[claim.user].lock() else {
            return;
        };
        if let Some(p) = slot.pending.as_mut() {
            p.answered = Some(at);
        }
        self.try_complete(&mut slot);
    }

    /// The claim's PATCH failed: its state change is unknown; no frame is awaited.
    pub fn abandon(&self, claim: &Claim) {
        if let Ok(mut slot) = self.slots[claim.user].lock() {
            slot.pending = None;
        }
    }

    /// Counts every answered mark still without its frame as lost (the end of a run).
    pub fn expire_all(&self) {
        for slot in &self.slots {
            if let Ok(mut slot) = slot.lock() {
                self.expire(&mut slot, Duration::ZERO);
            }
        }
    }

    fn expire(&self, slot: &mut Slot, after: Duration) {
        let Some(p) = &slot.pending else { return };
        if p.answered.is_some_and(|at| at.elapsed() >= after) {
            if p.measured {
                self.lost.fetch_add(1, Ordering::Relaxed);
            }
            // The 200 says the state changed, frame or not.
            slot.read = p.read;
            slot.pending = None;
        }
    }

    fn arrived(&self, user: usize, id: String) {
        if let Ok(mut slot) = self.slots[user].lock() {
            slot.id.get_or_insert(id);
        }
    }

    fn updated(&self, user: usize, ids: &[String], read: bool, at: Instant) {
        let Ok(mut slot) = self.slots[user].lock() else {
            return;
        };
        let named = slot.id.as_ref().is_some_and(|id| ids.contains(id));
        match slot.pending.as_mut() {
            Some(p) if named && p.read == read && p.frame.is_none() => p.frame = Some(at),
            _ => {
                self.unmatched.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        self.try_complete(&mut slot);
    }

    /// Once both the 200 and the frame are in: records the mark and frees the user.
    fn try_complete(&self, slot: &mut Slot) {
        let Some(p) = &slot.pending else { return };
        let (Some(answered), Some(frame)) = (p.answered, p.frame) else {
            return;
        };
        if p.measured {
            if frame < answered {
                self.frame_first.fetch_add(1, Ordering::Relaxed);
            }
            let ns = |d: Duration| (d.as_nanos() as u64).clamp(1, stats::HIST_MAX);
            if let Ok(mut h) = self.answer_to_frame.lock() {
                let _ = h.record(ns(frame.saturating_duration_since(answered)));
            }
            if let Ok(mut h) = self.sent_to_frame.lock() {
                let _ = h.record(ns(frame.saturating_duration_since(p.sent)));
            }
            self.completed.fetch_add(1, Ordering::Relaxed);
        }
        slot.read = p.read;
        slot.pending = None;
    }

    pub fn summary(&self) -> Value {
        let get =
            |h: &Mutex<Histogram<u64>>| h.lock().map(|h| stats::summary(&h)).unwrap_or(Value::Null);
        let n = |c: &AtomicU64| c.load(Ordering::Acquire);
        json!({
            "answer_to_updated": get(&self.answer_to_frame),
            "sent_to_updated": get(&self.sent_to_frame),
            "updated_before_answer": n(&self.frame_first),
            "completed": n(&self.completed),
            "lost": n(&self.lost),
            "unmatched_updated": n(&self.unmatched),
            "v1_events": self.events.to_json(),
        })
    }
}

/// A notification as the scenario reads it: its id.
#[derive(Deserialize)]
struct Notification {
    id: String,
}

/// One user's client on the other instance.
struct UserFrames {
    slots: Arc<Slots>,
    user: usize,
}

impl Frames for UserFrames {
    fn on_text(&self, text: &str) {
        let at = Instant::now();
        let Ok(event) = serde_json::from_str::<Event<Notification>>(text) else {
            self.slots.events.count("(not an event)");
            return;
        };
        self.slots.events.count(&event.event);
        match event.event.as_str() {
            "notification" => {
                if let Some(n) = event.notification {
                    self.slots.arrived(self.user, n.id);
                }
            }
            "updated" => match event.read_change() {
                Some(read) => self.slots.updated(self.user, &event.ids, read, at),
                None => {
                    self.slots.unmatched.fetch_add(1, Ordering::Relaxed);
                }
            },
            // synced, counts: counted only.
            _ => {}
        }
    }
}
