//! The broadcast scenario's bookkeeping: for each broadcast, how many clients have
//! its frame and when the first and the last one got it; for each client, which
//! broadcasts it has (a second frame of one is a duplicate, not a delivery). Every
//! client's reader reports here; broadcast.rs sends and waits on the counts.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::stats;
use crate::ws::{Frame, Frames};

/// Broadcasts one run may send, warm-ups included: one bit each in a client's word.
pub const MAX_BROADCASTS: usize = 64;

/// One broadcast's arrivals.
struct Broadcast {
    /// Clients that got its frame.
    received: AtomicU64,
    /// Send time stamped in its payload, ns since the epoch (0 until a frame came).
    sent_ns: AtomicU64,
    /// Earliest and latest arrival, ns since the epoch.
    first_ns: AtomicU64,
    last_ns: AtomicU64,
}

/// What the clients of one run report to.
pub struct Arrivals {
    /// The sequence number of broadcast 0: broadcast `k` carries `first_seq + k`.
    first_seq: u64,
    broadcasts: Vec<Broadcast>,
    pub duplicates: AtomicU64,
    /// Text frames that were not one of this run's broadcasts.
    pub unexpected: AtomicU64,
}

/// One finished (or given up) broadcast's times, ns since the epoch.
pub struct Outcome {
    pub received: u64,
    pub sent_ns: u64,
    pub first_ns: u64,
    pub last_ns: u64,
}

impl Arrivals {
    pub fn new(first_seq: u64) -> Arc<Arrivals> {
        Arc::new(Arrivals {
            first_seq,
            broadcasts: (0..MAX_BROADCASTS)
                .map(|_| Broadcast {
                    received: AtomicU64::new(0),
                    sent_ns: AtomicU64::new(0),
                    first_ns: AtomicU64::new(u64::MAX),
                    last_ns: AtomicU64::new(0),
                })
                .collect(),
            duplicates: AtomicU64::new(0),
            unexpected: AtomicU64::new(0),
        })
    }

    /// A new client's reader.
    pub fn frames(self: &Arc<Arrivals>) -> Arc<dyn Frames> {
        Arc::new(ClientFrames {
            arrivals: self.clone(),
            seen: AtomicU64::new(0),
        })
    }

    /// Which broadcast `seq` is, if it is one of this run's.
    pub fn index(&self, seq: u64) -> Option<usize> {
        let k = usize::try_from(seq.checked_sub(self.first_seq)?).ok()?;
        (k < MAX_BROADCASTS).then_some(k)
    }

    /// Clients that have broadcast `k` now.
    pub fn received(&self, k: usize) -> u64 {
        self.broadcasts
            .get(k)
            .map_or(0, |b| b.received.load(Ordering::Acquire))
    }

    /// Broadcast `k`'s arrivals so far; None before its first frame.
    pub fn outcome(&self, k: usize) -> Option<Outcome> {
        let b = self.broadcasts.get(k)?;
        let received = b.received.load(Ordering::Acquire);
        (received > 0).then(|| Outcome {
            received,
            sent_ns: b.sent_ns.load(Ordering::Acquire),
            first_ns: b.first_ns.load(Ordering::Acquire),
            last_ns: b.last_ns.load(Ordering::Acquire),
        })
    }

    fn arrived(&self, k: usize, frame: &Frame, at: u64) {
        let b = &self.broadcasts[k];
        b.sent_ns.store(frame.payload.sent_ns, Ordering::Release);
        b.first_ns.fetch_min(at, Ordering::AcqRel);
        b.last_ns.fetch_max(at, Ordering::AcqRel);
        // Counted last: whoever sees the count complete sees the times too.
        b.received.fetch_add(1, Ordering::AcqRel);
    }
}

/// One client's reader: its bit per broadcast received.
struct ClientFrames {
    arrivals: Arc<Arrivals>,
    seen: AtomicU64,
}

impl Frames for ClientFrames {
    fn on_text(&self, text: &str) {
        let at = stats::now_ns();
        let arrivals = &self.arrivals;
        let Some((k, frame)) = serde_json::from_str::<Frame>(text)
            .ok()
            .and_then(|f| Some((arrivals.index(f.payload.seq)?, f)))
        else {
            arrivals.unexpected.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let bit = 1u64 << k;
        if self.seen.fetch_or(bit, Ordering::AcqRel) & bit != 0 {
            arrivals.duplicates.fetch_add(1, Ordering::Relaxed);
            return;
        }
        arrivals.arrived(k, &frame, at);
    }
}
