//! Scenario state-fanout (issue 12, not in "all"): how fast a state change made
//! through one instance reaches the user's event-protocol client on another.
//! scripts/bench starts two notifd on one database and one Redis prefix: A (`--http`,
//! `--pid`) takes every REST call, B (`--peer-*`) holds BENCH_FANOUT_USERS v1 clients,
//! one per user. Each user gets one notification through A (awaited on B as its
//! `notification` event); then, at BENCH_FANOUT_RATE for BENCH_SECONDS, a random free
//! user's notification is marked read or unread (alternately, so each mark changes
//! a row) through A, timed from the PATCH's 200 to the `updated` frame on B.
//! state_slots.rs pairs the frames with the marks.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::{json, Value};

use super::state_slots::{Claim, Slots, LOST_AFTER};
use super::{count_map, create, hold, open_conns, sum, wait_ready, Ctx};
use crate::events::Protocol;
use crate::http::HttpConn;
use crate::proc::{self, round};
use crate::stats::{self, Rng};
use crate::token::WORKSPACE;
use crate::ws::Clients;

/// Marks before the measured window (timed, not recorded).
const WARM_UP: Duration = Duration::from_secs(2);
/// Longest wait for every user's notification on B.
const SETUP_LIMIT: Duration = Duration::from_secs(15);
/// Users the scenario accepts (one client and one slot each).
const MAX_USERS: usize = 20_000;

/// The second notifd: it holds the clients.
struct Peer {
    pid: u32,
    ws: SocketAddr,
}

fn peer(ctx: &Ctx) -> Result<(Peer, SocketAddr), String> {
    let e = &ctx.args.events;
    let (Some(pid), Some(http), Some(ws)) = (e.peer_pid, e.peer_http, e.peer_ws) else {
        return Err(
            "state-fanout needs --peer-pid, --peer-http and --peer-ws (a second \
                    notifd; scripts/bench starts it)"
                .into(),
        );
    };
    if !http.ip().is_loopback() || !ws.ip().is_loopback() {
        return Err("refusing a non-loopback peer address; traffic stays on 127.0.0.1".into());
    }
    Ok((Peer { pid, ws }, http))
}

pub async fn run(ctx: &Arc<Ctx>) -> Result<Value, String> {
    let (peer, peer_http) = peer(ctx)?;
    wait_ready(peer_http, peer.pid).await?;
    let n = ctx.args.events.fanout_users.clamp(1, MAX_USERS);
    let slots = Slots::new(n);
    eprintln!("notifd-bench: state-fanout: connecting {n} v1 clients to instance B");
    let tokens: Vec<String> = (0..n).map(|i| ctx.minter.user(&user(i))).collect();
    let clients = Clients {
        addr: peer.ws,
        workspace: WORKSPACE,
        protocol: Protocol::V1,
        concurrency: 50,
        tracker: &ctx.tracker,
    };
    let (ws_clients, failures) = clients
        .open(n, |i| tokens[i].clone(), |i| slots.frames(i))
        .await;
    if ws_clients.is_empty() {
        return Err(format!("no WebSocket connected: {failures:?}"));
    }
    hold(ctx, 1.0).await?;
    let setup = notify_each(ctx, &slots, n).await?;

    let conns = ctx.args.latency_clients.max(1);
    let rate = ctx.args.events.fanout_rate.clamp(1, 100_000);
    let (http, _) = open_conns(ctx, conns).await?;
    let (window_a, window_b) = (
        proc::Window::start(ctx.pid())?,
        proc::Window::start(peer.pid)?,
    );
    eprintln!(
        "notifd-bench: state-fanout: {rate} marks/s through A for {}s (+{}s warm-up)",
        ctx.args.seconds,
        WARM_UP.as_secs()
    );
    let marks = mark(ctx, &slots, &tokens, http, rate).await;
    // The last marks' frames, bounded; what is still missing then is lost.
    let settle = Instant::now();
    while slots.outstanding() > 0 && settle.elapsed() < LOST_AFTER {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    slots.expire_all();
    let (cpu_a, cpu_b) = (window_a.finish()?, window_b.finish()?);
    if !proc::alive(peer.pid) {
        return Err("notifd B exited during the scenario".into());
    }
    let dropped = ctx
        .tracker
        .dropped
        .load(std::sync::atomic::Ordering::Acquire);
    drop(ws_clients);
    let mut result = json!({
        "protocol": "v1",
        "users": n,
        "users_connected": n as u64 - sum(&failures),
        "connect_failures": count_map(&failures),
        "notifications_seen_on_b": setup,
        "target_rate_per_s": rate,
        "rest_connections": conns,
        "seconds": round(marks.seconds, 2),
        "marks_sent": marks.sent,
        "marks_ok_measured": marks.ok,
        "achieved_rate_per_s": round(marks.ok as f64 / marks.seconds.max(1e-9), 1),
        "mark_errors": count_map(&marks.errors),
        "ticks_without_a_free_user": marks.no_free_user,
        "mark_read": stats::summary(&marks.read),
        "mark_unread": stats::summary(&marks.unread),
        "ws_dropped": dropped,
        "cpu_a": cpu_a.to_json(),
        "cpu_b": cpu_b.to_json(),
    });
    if let (Value::Object(map), Value::Object(more)) = (&mut result, slots.summary()) {
        map.extend(more);
    }
    Ok(result)
}

fn user(i: usize) -> String {
    format!("f{i}")
}

/// Creates one notification per user through A and waits (bounded) until every one
/// has arrived on B; returns how many did.
async fn notify_each(ctx: &Ctx, slots: &Slots, n: usize) -> Result<usize, String> {
    let mut conn = HttpConn::new(ctx.args.http);
    for i in 0..n {
        let seq = ctx.seq().ok_or("sequence numbers exhausted")?;
        create(ctx, &mut conn, &user(i), seq)
            .await
            .map_err(|e| format!("creating {}'s notification through A: {e}", user(i)))?;
    }
    let started = Instant::now();
    while slots.ready() < n && started.elapsed() < SETUP_LIMIT {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seen = slots.ready();
    eprintln!(
        "notifd-bench: state-fanout: {seen} of {n} notifications seen on B in {:.2}s",
        started.elapsed().as_secs_f64()
    );
    if seen == 0 {
        return Err("no notification created through A reached its client on B".into());
    }
    Ok(seen)
}

/// What the markers did (`sent`, `errors`, `no_free_user`: warm-up included).
struct Marks {
    sent: u64,
    /// Answered 200 in the measured window.
    ok: u64,
    errors: BTreeMap<String, u64>,
    no_free_user: u64,
    /// PATCH round trips, ns.
    read: Histogram<u64>,
    unread: Histogram<u64>,
    seconds: f64,
}

impl Marks {
    fn new() -> Marks {
        Marks {
            sent: 0,
            ok: 0,
            errors: BTreeMap::new(),
            no_free_user: 0,
            read: stats::histogram(),
            unread: stats::histogram(),
            seconds: 0.0,
        }
    }
}

/// Marks at `rate` per second over `http`'s connections, open loop (each connection
/// on its own schedule, late sends go at once): WARM_UP untimed, then BENCH_SECONDS.
async fn mark(
    ctx: &Arc<Ctx>,
    slots: &Arc<Slots>,
    tokens: &[String],
    http: Vec<HttpConn>,
    rate: u64,
) -> Marks {
    let conns = http.len().max(1);
    let period = Duration::from_secs_f64(conns as f64 / rate as f64);
    let start = Instant::now() + Duration::from_millis(20);
    let measure_from = start + WARM_UP;
    let end = measure_from + Duration::from_secs(ctx.args.seconds);
    let tokens = Arc::new(tokens.to_vec());
    let mut tasks = Vec::new();
    for (k, conn) in http.into_iter().enumerate() {
        let marker = Marker {
            slots: slots.clone(),
            tokens: tokens.clone(),
            conn,
            rng: Rng::new(stats::now_ns() ^ (k as u64 + 1)),
            marks: Marks::new(),
        };
        let first = start + period.mul_f64(k as f64 / conns as f64);
        tasks.push(tokio::spawn(marker.run(first, period, measure_from, end)));
    }
    let mut all = Marks {
        seconds: end.saturating_duration_since(measure_from).as_secs_f64(),
        ..Marks::new()
    };
    for result in futures_util::future::join_all(tasks).await {
        let Ok(m) = result else {
            *all.errors.entry("marker task panicked".into()).or_default() += 1;
            continue;
        };
        all.sent += m.sent;
        all.ok += m.ok;
        all.no_free_user += m.no_free_user;
        for (k, v) in m.errors {
            *all.errors.entry(k).or_default() += v;
        }
        let _ = all.read.add(&m.read);
        let _ = all.unread.add(&m.unread);
    }
    all
}

/// One keep-alive connection's marks.
struct Marker {
    slots: Arc<Slots>,
    tokens: Arc<Vec<String>>,
    conn: HttpConn,
    rng: Rng,
    marks: Marks,
}

impl Marker {
    async fn run(
        mut self,
        mut next: Instant,
        period: Duration,
        measure_from: Instant,
        end: Instant,
    ) -> Marks {
        // Bounded by `end`: each pass moves `next` on by one period.
        while next < end {
            tokio::time::sleep_until(next.into()).await;
            next += period;
            let measured = Instant::now() >= measure_from;
            match self.slots.claim(&mut self.rng, measured) {
                Some(claim) => self.one(&claim, measured).await,
                None => self.marks.no_free_user += 1,
            }
        }
        self.marks
    }

    /// One PATCH read or unread of the claimed notification.
    async fn one(&mut self, claim: &Claim, measured: bool) {
        let path = if claim.read {
            "/v1/notifications/read"
        } else {
            "/v1/notifications/unread"
        };
        let body = json!({ "ids": [claim.id] }).to_string();
        let token = &self.tokens[claim.user];
        self.marks.sent += 1;
        let sent = Instant::now();
        let response = self
            .conn
            .request("PATCH", path, token, Some(body.as_bytes()))
            .await;
        let at = Instant::now();
        let why = match response {
            Ok(r) if r.status == 200 => {
                self.slots.answered(claim, at);
                self.marks.ok += u64::from(measured);
                let h = if claim.read {
                    &mut self.marks.read
                } else {
                    &mut self.marks.unread
                };
                if measured {
                    let ns = (at - sent).as_nanos() as u64;
                    let _ = h.record(ns.clamp(1, stats::HIST_MAX));
                }
                return;
            }
            Ok(r) => format!("{path}: status {}", r.status),
            Err(e) => format!("{path}: {}", e.kind()),
        };
        self.slots.abandon(claim);
        *self.marks.errors.entry(why).or_default() += 1;
    }
}
