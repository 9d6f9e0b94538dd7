//! WebSocket clients as tokio tasks (no thread per client) and the tracker every
//! client reports its frames to: delivery latency, duplicates, losses, closes.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use hdrhistogram::Histogram;
use serde::Deserialize;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

use crate::stats;
use crate::token::{Minter, WORKSPACE};

/// Sequence numbers a run may use (bitmaps of this many bits).
pub const MAX_SEQ: u64 = 1 << 24;
/// One connect plus handshake.
const CONNECT_LIMIT: Duration = Duration::from_secs(20);

/// What clients report to. Shared by every client of a run.
pub struct Tracker {
    /// Frames received that carried a bench payload.
    pub frames: AtomicU64,
    pub duplicates: AtomicU64,
    /// Clients connected now.
    pub open: AtomicU64,
    /// Clients whose connection ended while we did not ask for it.
    pub dropped: AtomicU64,
    /// Set while the run closes its clients on purpose.
    pub closing: AtomicBool,
    pub close_codes: Mutex<BTreeMap<String, u64>>,
    /// Delivery latency (create request sent -> frame received), ns.
    pub latency: Mutex<Histogram<u64>>,
    pub outliers: Mutex<Vec<Outlier>>,
    /// Bits: a frame of this seq arrived.
    seen: Vec<AtomicU64>,
    /// Bits: the create of this seq was answered 201.
    acked: Vec<AtomicU64>,
}

#[derive(Deserialize)]
struct Frame {
    id: String,
    payload: Payload,
}

/// Deliveries slower than this are kept as outliers, with where their time went.
const OUTLIER_NS: u64 = 500_000_000;
/// Outliers kept per run.
const MAX_OUTLIERS: usize = 20;

/// A slow delivery: create sent -> id minted (the ms in the UUIDv7, i.e. notifd had
/// read and validated the request) -> frame received.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Outlier {
    pub seq: u64,
    pub total_ms: f64,
    pub sent_to_id_ms: f64,
    pub id_to_frame_ms: f64,
}

/// Milliseconds since the epoch in a UUIDv7's first 48 bits.
fn uuid_v7_ms(id: &str) -> Option<u64> {
    let hex: String = id.chars().filter(|c| *c != '-').take(12).collect();
    u64::from_str_radix(&hex, 16).ok()
}

#[derive(Deserialize)]
struct Payload {
    sent_ns: u64,
    seq: u64,
}

impl Tracker {
    pub fn new() -> Arc<Tracker> {
        let words = (MAX_SEQ / 64) as usize;
        Arc::new(Tracker {
            frames: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            open: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            closing: AtomicBool::new(false),
            close_codes: Mutex::new(BTreeMap::new()),
            latency: Mutex::new(stats::histogram()),
            outliers: Mutex::new(Vec::new()),
            seen: (0..words).map(|_| AtomicU64::new(0)).collect(),
            acked: (0..words).map(|_| AtomicU64::new(0)).collect(),
        })
    }

    fn on_text(&self, text: &str) {
        let received = stats::now_ns();
        match serde_json::from_str::<Frame>(text) {
            Ok(frame) if frame.payload.seq < MAX_SEQ => {
                let seq = frame.payload.seq;
                let bit = 1u64 << (seq % 64);
                let old = self.seen[(seq / 64) as usize].fetch_or(bit, Ordering::AcqRel);
                if old & bit != 0 {
                    self.duplicates.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                let latency = received.saturating_sub(frame.payload.sent_ns).max(1);
                if latency > OUTLIER_NS {
                    if let (Some(id_ms), Ok(mut list)) =
                        (uuid_v7_ms(&frame.id), self.outliers.lock())
                    {
                        if list.len() < MAX_OUTLIERS {
                            let sent_ms = frame.payload.sent_ns as f64 / 1e6;
                            list.push(Outlier {
                                seq,
                                total_ms: crate::proc::round(latency as f64 / 1e6, 1),
                                sent_to_id_ms: crate::proc::round(id_ms as f64 - sent_ms, 1),
                                id_to_frame_ms: crate::proc::round(
                                    received as f64 / 1e6 - id_ms as f64,
                                    1,
                                ),
                            });
                        }
                    }
                }
                if let Ok(mut h) = self.latency.lock() {
                    let _ = h.record(latency.min(stats::HIST_MAX));
                }
                self.frames.fetch_add(1, Ordering::AcqRel);
            }
            // Not a bench notification (or not parseable): not a delivery.
            _ => {}
        }
    }

    pub fn ack(&self, seq: u64) {
        if seq < MAX_SEQ {
            self.acked[(seq / 64) as usize].fetch_or(1u64 << (seq % 64), Ordering::AcqRel);
        }
    }

    /// Over seqs `range`: (acked, acked and delivered, delivered but never acked).
    pub fn tally(&self, range: std::ops::Range<u64>) -> (u64, u64, u64) {
        let (mut acked, mut both, mut extra) = (0, 0, 0);
        for seq in range.start..range.end.min(MAX_SEQ) {
            let w = (seq / 64) as usize;
            let bit = 1u64 << (seq % 64);
            let a = self.acked[w].load(Ordering::Acquire) & bit != 0;
            let s = self.seen[w].load(Ordering::Acquire) & bit != 0;
            acked += u64::from(a);
            both += u64::from(a && s);
            extra += u64::from(s && !a);
        }
        (acked, both, extra)
    }

    pub fn reset_latency(&self) {
        if let Ok(mut h) = self.latency.lock() {
            h.reset();
        }
        if let Ok(mut list) = self.outliers.lock() {
            list.clear();
        }
    }

    /// Deliveries slower than 0.5 s since the last reset (at most 20).
    pub fn outliers(&self) -> serde_json::Value {
        self.outliers
            .lock()
            .map(|l| serde_json::json!(*l))
            .unwrap_or(serde_json::Value::Null)
    }

    pub fn latency_snapshot(&self) -> Histogram<u64> {
        self.latency
            .lock()
            .map(|h| h.clone())
            .unwrap_or_else(|_| stats::histogram())
    }

    fn closed(&self, why: String) {
        self.open.fetch_sub(1, Ordering::AcqRel);
        if !self.closing.load(Ordering::Acquire) {
            self.dropped.fetch_add(1, Ordering::AcqRel);
            if let Ok(mut codes) = self.close_codes.lock() {
                *codes.entry(why).or_default() += 1;
            }
        }
    }
}

/// One connected client: its reader task.
pub struct Client {
    task: JoinHandle<()>,
}

impl Drop for Client {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn ws_config() -> WebSocketConfig {
    // tungstenite's default 128 KiB read buffer per client would cost 2 GB at 15,000.
    WebSocketConfig::default()
        .read_buffer_size(8 * 1024)
        .write_buffer_size(0)
}

/// Opens one client for `user` and starts its reader.
pub async fn connect(
    addr: SocketAddr,
    token: &str,
    tracker: &Arc<Tracker>,
) -> Result<Client, String> {
    let url = format!("ws://{addr}/?token={token}&workspaceSlug={WORKSPACE}");
    let attempt = async {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {}", e.kind()))?;
        let _ = stream.set_nodelay(true);
        let (ws, _response) =
            tokio_tungstenite::client_async_with_config(url.as_str(), stream, Some(ws_config()))
                .await
                .map_err(|e| format!("handshake: {}", short(&e.to_string())))?;
        Ok::<_, String>(ws)
    };
    let mut ws = tokio::time::timeout(CONNECT_LIMIT, attempt)
        .await
        .map_err(|_| "connect timed out".to_string())??;
    tracker.open.fetch_add(1, Ordering::AcqRel);
    let tracker = tracker.clone();
    let task = tokio::spawn(async move {
        // Bounded by the connection's life; the run aborts the task at its end.
        let why = loop {
            match ws.next().await {
                Some(Ok(Message::Text(text))) => tracker.on_text(text.as_str()),
                // Pings are answered by tungstenite as we read.
                Some(Ok(Message::Close(frame))) => {
                    break match frame {
                        Some(f) => format!("close {}", u16::from(f.code)),
                        None => "close (no code)".into(),
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => break format!("error: {}", short(&e.to_string())),
                None => break "eof".into(),
            }
        };
        tracker.closed(why);
    });
    Ok(Client { task })
}

fn short(text: &str) -> String {
    text.chars().take(80).collect()
}

/// Opens `count` clients for users `{prefix}{i}`, `concurrency` handshakes at a time.
/// Returns the clients and the failures by reason.
pub async fn connect_many(
    addr: SocketAddr,
    minter: &Minter,
    prefix: &str,
    count: usize,
    concurrency: usize,
    tracker: &Arc<Tracker>,
) -> (Vec<Client>, BTreeMap<String, u64>) {
    let mut clients = Vec::with_capacity(count);
    let mut failures: BTreeMap<String, u64> = BTreeMap::new();
    let mut pending = futures_util::stream::iter((0..count).map(|i| {
        let token = minter.user(&format!("{prefix}{i}"));
        let tracker = tracker.clone();
        async move { connect(addr, &token, &tracker).await }
    }))
    .buffer_unordered(concurrency.max(1));
    let mut last_report = std::time::Instant::now();
    while let Some(result) = pending.next().await {
        match result {
            Ok(client) => clients.push(client),
            Err(why) => *failures.entry(why).or_default() += 1,
        }
        if last_report.elapsed() > Duration::from_secs(5) {
            last_report = std::time::Instant::now();
            eprintln!(
                "notifd-bench:   {} connected, {} failed",
                clients.len(),
                failures.values().sum::<u64>()
            );
        }
    }
    (clients, failures)
}
