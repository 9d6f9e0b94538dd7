//! WebSocket clients as tokio tasks (no thread per client) and the tracker every
//! client reports its frames to: delivery latency, duplicates, losses, closes. A
//! client speaks plain or `notifd.v1` (events.rs): a v1 tracker unwraps each
//! `notification` event and counts the other events; a scenario with its own reading
//! of the frames (state-fanout, broadcast) gives each client its own `Frames`.

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
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

use crate::events::{Event, EventCounts, Protocol};
use crate::stats;
use crate::token::{Minter, WORKSPACE};

/// Sequence numbers a run may use (bitmaps of this many bits).
pub const MAX_SEQ: u64 = 1 << 24;
/// One connect plus handshake.
const CONNECT_LIMIT: Duration = Duration::from_secs(20);

/// What a client hands each text frame to.
pub trait Frames: Send + Sync + 'static {
    fn on_text(&self, text: &str);
}

/// What clients report to. Shared by every client of a run.
pub struct Tracker {
    /// What the run's clients speak.
    pub protocol: Protocol,
    /// v1 events received, by kind (v1 runs only).
    pub events: EventCounts,
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

/// A bench notification's frame, as far as the generator reads it.
#[derive(Deserialize)]
pub struct Frame {
    pub id: String,
    pub payload: Payload,
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

/// Over seqs `range`, by what `acked` and `seen` say of each: (acked, acked and
/// delivered, delivered but never acked).
pub fn tally(
    range: std::ops::Range<u64>,
    acked: impl Fn(u64) -> bool,
    seen: impl Fn(u64) -> bool,
) -> (u64, u64, u64) {
    let (mut acked_n, mut both, mut extra) = (0, 0, 0);
    for seq in range.start..range.end.min(MAX_SEQ) {
        let (a, s) = (acked(seq), seen(seq));
        acked_n += u64::from(a);
        both += u64::from(a && s);
        extra += u64::from(s && !a);
    }
    (acked_n, both, extra)
}

/// Bit `seq` of a bitmap (false beyond it).
fn bit_set(bits: &[AtomicU64], seq: u64) -> bool {
    bits.get((seq / 64) as usize)
        .is_some_and(|w| w.load(Ordering::Acquire) & (1u64 << (seq % 64)) != 0)
}

/// Milliseconds since the epoch in a UUIDv7's first 48 bits.
fn uuid_v7_ms(id: &str) -> Option<u64> {
    let hex: String = id.chars().filter(|c| *c != '-').take(12).collect();
    u64::from_str_radix(&hex, 16).ok()
}

/// What the generator stamped into the payload when it sent the create.
#[derive(Deserialize)]
pub struct Payload {
    pub sent_ns: u64,
    pub seq: u64,
}

impl Tracker {
    pub fn new(protocol: Protocol) -> Arc<Tracker> {
        let words = (MAX_SEQ / 64) as usize;
        Arc::new(Tracker {
            protocol,
            events: EventCounts::default(),
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

    /// A v1 frame: a `notification` event is a delivery; every event is counted.
    fn on_event(&self, text: &str, received: u64) {
        match serde_json::from_str::<Event<Frame>>(text) {
            Ok(event) => {
                self.events.count(&event.event);
                if let Some(frame) = event.notification {
                    self.record(frame, received);
                }
            }
            Err(_) => self.events.count("(not an event)"),
        }
    }

    /// One delivery of a bench notification: its latency, or a duplicate.
    fn record(&self, frame: Frame, received: u64) {
        let seq = frame.payload.seq;
        if seq >= MAX_SEQ {
            // Outside the run's bitmaps: not a delivery.
            return;
        }
        let bit = 1u64 << (seq % 64);
        let old = self.seen[(seq / 64) as usize].fetch_or(bit, Ordering::AcqRel);
        if old & bit != 0 {
            self.duplicates.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let latency = received.saturating_sub(frame.payload.sent_ns).max(1);
        if latency > OUTLIER_NS {
            self.keep_outlier(&frame, latency, received);
        }
        if let Ok(mut h) = self.latency.lock() {
            let _ = h.record(latency.min(stats::HIST_MAX));
        }
        self.frames.fetch_add(1, Ordering::AcqRel);
    }

    fn keep_outlier(&self, frame: &Frame, latency: u64, received: u64) {
        let (Some(id_ms), Ok(mut list)) = (uuid_v7_ms(&frame.id), self.outliers.lock()) else {
            return;
        };
        if list.len() < MAX_OUTLIERS {
            let sent_ms = frame.payload.sent_ns as f64 / 1e6;
            list.push(Outlier {
                seq: frame.payload.seq,
                total_ms: crate::proc::round(latency as f64 / 1e6, 1),
                sent_to_id_ms: crate::proc::round(id_ms as f64 - sent_ms, 1),
                id_to_frame_ms: crate::proc::round(received as f64 / 1e6 - id_ms as f64, 1),
            });
        }
    }

    pub fn ack(&self, seq: u64) {
        if seq < MAX_SEQ {
            self.acked[(seq / 64) as usize].fetch_or(1u64 << (seq % 64), Ordering::AcqRel);
        }
    }

    /// Whether the create of `seq` was answered 201.
    pub fn acked(&self, seq: u64) -> bool {
        bit_set(&self.acked, seq)
    }

    /// Whether a frame of `seq` arrived.
    pub fn seen(&self, seq: u64) -> bool {
        bit_set(&self.seen, seq)
    }

    /// Over seqs `range`: (acked, acked and delivered, delivered but never acked).
    pub fn tally(&self, range: std::ops::Range<u64>) -> (u64, u64, u64) {
        tally(range, |seq| self.acked(seq), |seq| self.seen(seq))
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

impl Frames for Tracker {
    fn on_text(&self, text: &str) {
        let received = stats::now_ns();
        match self.protocol {
            Protocol::V1 => self.on_event(text, received),
            Protocol::Plain => {
                // Not a bench notification (or not parseable): not a delivery.
                if let Ok(frame) = serde_json::from_str::<Frame>(text) {
                    self.record(frame, received);
                }
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

/// Opens one client on `workspace` with `token`, speaking `protocol`, and starts its
/// reader, which hands every text frame to `frames`; `tracker` counts it open and
/// closed.
pub async fn connect(
    addr: SocketAddr,
    workspace: &str,
    token: &str,
    protocol: Protocol,
    tracker: &Arc<Tracker>,
    frames: Arc<dyn Frames>,
) -> Result<Client, String> {
    let upgrade = handshake(addr, workspace, token, protocol);
    let mut ws = tokio::time::timeout(CONNECT_LIMIT, upgrade)
        .await
        .map_err(|_| "connect timed out".to_string())??;
    tracker.open.fetch_add(1, Ordering::AcqRel);
    let tracker = tracker.clone();
    let task = tokio::spawn(async move {
        // Bounded by the connection's life; the run aborts the task at its end.
        let why = loop {
            match ws.next().await {
                Some(Ok(Message::Text(text))) => frames.on_text(text.as_str()),
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

type Socket = tokio_tungstenite::WebSocketStream<TcpStream>;

/// TCP connect and the upgrade, offering `protocol`'s subprotocol; a v1 client the
/// server answers without `notifd.v1` is an error (it would get plain frames).
async fn handshake(
    addr: SocketAddr,
    workspace: &str,
    token: &str,
    protocol: Protocol,
) -> Result<Socket, String> {
    let url = format!("ws://{addr}/?token={token}&workspaceSlug={workspace}");
    let mut request = url
        .as_str()
        .into_client_request()
        .map_err(|e| format!("request: {}", short(&e.to_string())))?;
    if let Some(name) = protocol.subprotocol() {
        request
            .headers_mut()
            .insert(PROTOCOL_HEADER, HeaderValue::from_static(name));
    }
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {}", e.kind()))?;
    let _ = stream.set_nodelay(true);
    let (ws, response) =
        tokio_tungstenite::client_async_with_config(request, stream, Some(ws_config()))
            .await
            .map_err(|e| format!("handshake: {}", short(&e.to_string())))?;
    if let Some(name) = protocol.subprotocol() {
        let selected = response.headers().get(PROTOCOL_HEADER);
        if selected.and_then(|v| v.to_str().ok()) != Some(name) {
            return Err(format!("handshake: the server did not select {name}"));
        }
    }
    Ok(ws)
}

const PROTOCOL_HEADER: &str = "Sec-WebSocket-Protocol";

fn short(text: &str) -> String {
    text.chars().take(80).collect()
}

/// Opens `count` tracker clients for users `{prefix}{i}`, `concurrency` handshakes at
/// a time, speaking the tracker's protocol. Returns the clients and the failures by
/// reason.
pub async fn connect_many(
    addr: SocketAddr,
    minter: &Minter,
    prefix: &str,
    count: usize,
    concurrency: usize,
    tracker: &Arc<Tracker>,
) -> (Vec<Client>, BTreeMap<String, u64>) {
    let frames = |_| -> Arc<dyn Frames> { tracker.clone() };
    let clients = Clients {
        addr,
        workspace: WORKSPACE,
        protocol: tracker.protocol,
        concurrency,
        tracker,
    };
    clients
        .open(count, |i| minter.user(&format!("{prefix}{i}")), frames)
        .await
}

/// Where and how `Clients::open` connects.
pub struct Clients<'a> {
    pub addr: SocketAddr,
    /// The workspace every client connects on (`workspaceSlug`).
    pub workspace: &'a str,
    pub protocol: Protocol,
    /// Handshakes in flight at once.
    pub concurrency: usize,
    pub tracker: &'a Arc<Tracker>,
}

impl Clients<'_> {
    /// Opens `count` clients, client `i` with `token(i)` and reading into `frames(i)`.
    /// Returns the clients (in no order) and the failures by reason.
    pub async fn open(
        &self,
        count: usize,
        token: impl Fn(usize) -> String,
        frames: impl Fn(usize) -> Arc<dyn Frames>,
    ) -> (Vec<Client>, BTreeMap<String, u64>) {
        let mut clients = Vec::with_capacity(count);
        let mut failures: BTreeMap<String, u64> = BTreeMap::new();
        let (addr, workspace, protocol) = (self.addr, self.workspace, self.protocol);
        let mut pending = futures_util::stream::iter((0..count).map(|i| {
            let (token, frames, tracker) = (token(i), frames(i), self.tracker.clone());
            async move { connect(addr, workspace, &token, protocol, &tracker, frames).await }
        }))
        .buffer_unordered(self.concurrency.max(1));
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
}
