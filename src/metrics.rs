//! Prometheus metrics: process-wide counters, gauges and histograms, rendered in the
//! text exposition format 0.0.4 by `GET /metrics`, followed by the standard
//! `process_*` family (`process`, read from /proc at each scrape).
//!
//! Plain atomics on the hot paths (create, deliver); a short-held mutex only for the
//! labelled families, whose label sets are bounded by construction: route templates,
//! a handful of statuses, close codes. Never a raw path, a user id or a token.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

mod process;

/// Upper bounds (seconds) of the latency histogram buckets.
const BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// A latency histogram: cumulative bucket counts, a sum and a count.
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    sum_ns: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    pub const fn new() -> Histogram {
        Histogram {
            buckets: [const { AtomicU64::new(0) }; BUCKETS.len()],
            sum_ns: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, duration: Duration) {
        let seconds = duration.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|&bound| seconds <= bound) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.sum_ns
            .fetch_add(duration.as_nanos() as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        let sep = if labels.is_empty() { "" } else { "," };
        for (bound, bucket) in BUCKETS.iter().zip(&self.buckets) {
            cumulative += bucket.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}"
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let sum = self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum{braces} {sum}");
        let _ = writeln!(out, "{name}_count{braces} {count}");
    }
}

impl Default for Histogram {
    fn default() -> Histogram {
        Histogram::new()
    }
}

/// Every metric of the process.
pub struct Metrics {
    pub ws_connections: AtomicI64,
    pub ws_connections_total: AtomicU64,
    ws_closes: Mutex<BTreeMap<u16, u64>>,
    pub notifications_created: AtomicU64,
    pub notifications_delivered: AtomicU64,
    /// From a notification's creation (its id's timestamp) to its frame written.
    pub delivery: Histogram,
    pub replayed: AtomicU64,
    http_requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    http_seconds: Mutex<BTreeMap<&'static str, Histogram>>,
    pub redis_reconnects: AtomicU64,
    pub redis_messages_received: AtomicU64,
    pub redis_publish_failures: AtomicU64,
    pub db_pool_wait: Histogram,
    pub retention_deleted: AtomicU64,
}

/// The process's metrics. Global because they describe the process, as Prometheus
/// scrapes it; several servers in one test process simply add up.
pub static METRICS: Metrics = Metrics {
    ws_connections: AtomicI64::new(0),
    ws_connections_total: AtomicU64::new(0),
    ws_closes: Mutex::new(BTreeMap::new()),
    notifications_created: AtomicU64::new(0),
    notifications_delivered: AtomicU64::new(0),
    delivery: Histogram::new(),
    replayed: AtomicU64::new(0),
    http_requests: Mutex::new(BTreeMap::new()),
    http_seconds: Mutex::new(BTreeMap::new()),
    redis_reconnects: AtomicU64::new(0),
    redis_messages_received: AtomicU64::new(0),
    redis_publish_failures: AtomicU64::new(0),
    db_pool_wait: Histogram::new(),
    retention_deleted: AtomicU64::new(0),
};

/// A notification went out on a socket; a live one (not replayed history) also
/// feeds the delivery-latency histogram, by the age of its id.
pub fn delivered(id: &uuid::Uuid, live: bool) {
    inc(&METRICS.notifications_delivered);
    if live {
        let now = crate::notification::id_millis(&uuid::Uuid::now_v7());
        let age_ms = now.saturating_sub(crate::notification::id_millis(id));
        METRICS.delivery.observe(Duration::from_millis(age_ms));
    }
}

/// Adds one to a counter.
pub fn inc(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Metrics {
    pub fn ws_closed(&self, code: u16) {
        self.ws_connections.fetch_sub(1, Ordering::Relaxed);
        *self
            .ws_closes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(code)
            .or_default() += 1;
    }

    pub fn ws_opened(&self) {
        self.ws_connections.fetch_add(1, Ordering::Relaxed);
        self.ws_connections_total.fetch_add(1, Ordering::Relaxed);
    }

    /// One REST request; `route` is a route template (or "unknown").
    pub fn http_request(&self, route: &'static str, status: u16, took: Duration) {
        *self
            .http_requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((route, status))
            .or_default() += 1;
        self.http_seconds
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(route)
            .or_default()
            .observe(took);
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        header(&mut out, "notifd_build_info", "gauge", "Build information.");
        let _ = writeln!(
            out,
            "notifd_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        header(
            &mut out,
            // Not `notifd_ws_connections`: under OpenMetrics that is the family name
            // of the counter `notifd_ws_connections_total`, and the two would clash.
            "notifd_ws_connections_open",
            "gauge",
            "WebSocket connections open now.",
        );
        let _ = writeln!(
            out,
            "notifd_ws_connections_open {}",
            self.ws_connections.load(Ordering::Relaxed).max(0)
        );
        counter(
            &mut out,
            "notifd_ws_connections_total",
            "WebSocket connections admitted.",
            load(&self.ws_connections_total),
        );
        header(
            &mut out,
            "notifd_ws_closes_total",
            "counter",
            "WebSocket closes by close code.",
        );
        for (code, n) in self
            .ws_closes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = writeln!(out, "notifd_ws_closes_total{{code=\"{code}\"}} {n}");
        }
        counter(
            &mut out,
            "notifd_notifications_created_total",
            "Notifications stored.",
            load(&self.notifications_created),
        );
        counter(
            &mut out,
            "notifd_notifications_delivered_total",
            "Notification frames written to WebSockets.",
            load(&self.notifications_delivered),
        );
        header(
            &mut out,
            "notifd_delivery_seconds",
            "histogram",
            "Creation to frame written.",
        );
        self.delivery
            .render(&mut out, "notifd_delivery_seconds", "");
        counter(
            &mut out,
            "notifd_replayed_total",
            "Notifications sent by since-replay or catch-up.",
            load(&self.replayed),
        );
        header(
            &mut out,
            "notifd_http_requests_total",
            "counter",
            "REST requests by route and status.",
        );
        for ((route, status), n) in self
            .http_requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "notifd_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
            );
        }
        header(
            &mut out,
            "notifd_http_request_seconds",
            "histogram",
            "REST request duration by route.",
        );
        for (route, histogram) in self
            .http_seconds
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            histogram.render(
                &mut out,
                "notifd_http_request_seconds",
                &format!("route=\"{route}\""),
            );
        }
        counter(
            &mut out,
            "notifd_redis_reconnects_total",
            "Redis subscriber reconnects.",
            load(&self.redis_reconnects),
        );
        counter(
            &mut out,
            "notifd_redis_messages_received_total",
            "Pub/Sub messages the subscriber received (only its connected users' channels).",
            load(&self.redis_messages_received),
        );
        counter(
            &mut out,
            "notifd_redis_publish_failures_total",
            "Publishes that failed (the notification stays stored).",
            load(&self.redis_publish_failures),
        );
        header(
            &mut out,
            "notifd_db_pool_wait_seconds",
            "histogram",
            "Wait for a PostgreSQL connection.",
        );
        self.db_pool_wait
            .render(&mut out, "notifd_db_pool_wait_seconds", "");
        counter(
            &mut out,
            "notifd_retention_deleted_total",
            "Notifications deleted by retention.",
            load(&self.retention_deleted),
        );
        process::render(&mut out);
        out
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    header(out, name, "counter", help);
    let _ = writeln!(out, "{name} {value}");
}
