//! Scenario instances (issue 15, not in "all"): what each of three notifd on one
//! Redis (one database, one prefix) receives from Redis when every user is connected
//! to exactly one of them. scripts/bench starts A (`--pid`, `--http`, `--ws`) and B
//! and C (`--instance PID,HTTP,WS`). BENCH_USERS users (3,000 unless given) are split
//! in three contiguous blocks, one WebSocket each on its block's instance; creates go
//! at BENCH_RATE (3,000/s unless given) for BENCH_SECONDS to uniformly random users
//! (latency.rs's `paced`) over BENCH_LATENCY_CLIENTS keep-alive connections to each
//! instance's REST.
//!
//! Per instance, over the timed window: the messages its subscriber received (the
//! delta of `notifd_redis_messages_received_total`; null for a notifd without it),
//! the bytes it received from Redis (the kernel's TCP counters, any binary; nearly
//! all of them its subscriber's), its CPU, and its clients' frames and latency. The generator's own pattern tap (tap.rs), subscribed
//! as a pattern-subscribing notifd was, receives every message published: each
//! instance's share is its count over the tap's, and its bytes over the tap's.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::str::FromStr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{json, Value};

use super::latency::paced;
use super::{count_map, drain_by, hold, open_conns_at, sum, wait_ready, Ctx};
use crate::http::HttpConn;
use crate::proc::{self, round};
use crate::stats;
use crate::tap::{self, Tap};
use crate::token::WORKSPACE;
use crate::ws::{self, Client, Clients, Frames, Tracker};

/// Users (one client each) unless BENCH_USERS says.
const USERS: usize = 3_000;
/// Creates per second unless BENCH_RATE says.
const RATE: u64 = 3_000;
const WARM_UP: Duration = Duration::from_secs(2);
/// Handshakes in flight at once, per instance.
const CONCURRENCY: usize = 100;
/// The instances in the result, A first (the `--pid` one).
const NAMES: [&str; 3] = ["A", "B", "C"];
/// The counter of messages an instance's subscriber received (issue 15).
const METRIC: &str = "notifd_redis_messages_received_total";

/// A notifd of the run: process, REST and WebSocket addresses.
#[derive(Clone, Copy, Debug)]
pub struct Instance {
    pub pid: u32,
    pub http: SocketAddr,
    pub ws: SocketAddr,
}

impl FromStr for Instance {
    type Err = String;

    /// `PID,HTTP,WS`, e.g. `4242,127.0.0.1:8081,127.0.0.1:8082`.
    fn from_str(text: &str) -> Result<Instance, String> {
        let parts: Vec<&str> = text.split(',').map(str::trim).collect();
        let [pid, http, ws] = parts[..] else {
            return Err(format!("{text:?}: give PID,HTTP_ADDR,WS_ADDR"));
        };
        let addr = |a: &str| a.parse().map_err(|e| format!("{a:?}: {e}"));
        Ok(Instance {
            pid: pid.parse().map_err(|e| format!("{pid:?}: {e}"))?,
            http: addr(http)?,
            ws: addr(ws)?,
        })
    }
}

/// One instance under load: its users' clients, read by a tracker of its own.
struct Member {
    name: &'static str,
    at: Instance,
    users: Range<usize>,
    tracker: Arc<Tracker>,
    clients: Vec<Client>,
    failures: BTreeMap<String, u64>,
}

/// What an instance had received at one moment.
#[derive(Clone, Copy)]
struct Counters {
    /// The messages metric; None when this notifd has none.
    messages: Option<u64>,
    /// Received over its Redis connections; None without one Redis server or `ss`.
    redis_bytes: Option<u64>,
    frames: u64,
}

pub async fn run(ctx: &Arc<Ctx>) -> Result<Value, String> {
    let all = instances(ctx)?;
    for at in &all[1..] {
        wait_ready(at.http, at.pid).await?;
    }
    let users = ctx.args.users.unwrap_or(USERS).max(all.len());
    let rate = ctx.args.rate.unwrap_or(RATE).max(1);
    let mut members = Vec::with_capacity(all.len());
    for (k, at) in all.iter().enumerate() {
        members.push(connect(ctx, k, *at, users).await?);
    }
    hold(ctx, 1.0).await?;
    let per = ctx.args.latency_clients.max(1);
    let mut http = Vec::with_capacity(per * members.len());
    for m in &members {
        http.extend(open_conns_at(m.at.http, per).await?.0);
    }
    let conns = http.len();
    let tap = start_tap(ctx).await;

    eprintln!("notifd-bench: instances: warm-up {}s", WARM_UP.as_secs());
    let (warm, http) = paced(ctx, users, rate, WARM_UP, http).await;
    drain_by(|| tally(ctx, &members, &warm.seqs), Duration::from_secs(5)).await;
    let redis = ctx
        .args
        .redis_url
        .as_deref()
        .and_then(|u| tap::address(u).ok());
    let before = counters(&members, redis).await;
    let tap_before = tap.as_ref().map(Tap::reading).unwrap_or_default();
    for m in &members {
        m.tracker.reset_latency();
    }
    eprintln!(
        "notifd-bench: instances: {rate} creates/s for {}s over {conns} keep-alive \
         connections ({per} per instance)",
        ctx.args.seconds
    );
    let windows = members
        .iter()
        .map(|m| proc::Window::start(m.at.pid))
        .collect::<Result<Vec<_>, _>>()?;
    let (run, _) = paced(
        ctx,
        users,
        rate,
        Duration::from_secs(ctx.args.seconds),
        http,
    )
    .await;
    let cpus = windows
        .iter()
        .map(proc::Window::finish)
        .collect::<Result<Vec<_>, _>>()?;
    let limit = Duration::from_secs(10);
    let (acked, delivered, extra) = drain_by(|| tally(ctx, &members, &run.seqs), limit).await;
    // After the drain: every message of the window's creates has arrived by now.
    let after = counters(&members, redis).await;
    let published = tap.as_ref().map(|t| t.reading().since(tap_before));
    if let Some(m) = members.iter().find(|m| !proc::alive(m.at.pid)) {
        return Err(format!("notifd {} exited during the scenario", m.name));
    }

    let mut e2e = stats::histogram();
    let mut rows = Vec::with_capacity(members.len());
    for (k, m) in members.iter().enumerate() {
        let latency = m.tracker.latency_snapshot();
        let _ = e2e.add(&latency);
        let window = Window {
            before: &before[k],
            after: &after[k],
            cpu: &cpus[k],
            latency: &latency,
        };
        rows.push(window.to_json(m, published.as_ref().ok()));
    }
    for m in &mut members {
        m.tracker.closing.store(true, Ordering::Release);
        m.clients.clear();
    }
    Ok(json!({
        "users": users,
        "users_connected": members.iter().map(|m| m.clients_held()).sum::<u64>(),
        "target_rate_per_s": rate,
        "rest_connections": conns,
        "seconds": round(run.seconds, 2),
        "creates_sent": run.seqs.end - run.seqs.start,
        "creates_ok": run.created,
        "achieved_rate_per_s": round(run.created as f64 / run.seconds.max(1e-9), 1),
        "create_errors": count_map(&run.errors),
        "delivered": delivered,
        "lost": acked - delivered,
        "delivered_not_acked": extra,
        "end_to_end": stats::summary(&e2e),
        "rest_create": stats::summary(&run.rest),
        "messages_metric": if after.iter().all(|c| c.messages.is_some()) {
            "present"
        } else {
            "absent (a notifd before issue 15: its pattern subscription receives every message)"
        },
        "published": match &published {
            Ok(r) => json!({"messages": r.messages, "bytes": r.bytes}),
            Err(e) => json!({"error": e}),
        },
        "notifd_cpu_seconds_all": round(cpus.iter().map(|c| c.notifd_cpu_seconds).sum(), 2),
        "instances": rows,
    }))
}

/// A (`--pid`, `--http`, `--ws`) and the two `--instance`s, on loopback.
fn instances(ctx: &Ctx) -> Result<Vec<Instance>, String> {
    let a = &ctx.args;
    if a.instances.len() != NAMES.len() - 1 {
        return Err(format!(
            "instances needs {} --instance PID,HTTP,WS besides --pid/--http/--ws (scripts/bench \
             starts them); got {}",
            NAMES.len() - 1,
            a.instances.len()
        ));
    }
    let mut all = vec![Instance {
        pid: a.pid,
        http: a.http,
        ws: a.ws,
    }];
    all.extend(a.instances.iter().copied());
    if all
        .iter()
        .any(|i| !i.http.ip().is_loopback() || !i.ws.ip().is_loopback())
    {
        return Err("refusing a non-loopback instance; traffic stays on 127.0.0.1".into());
    }
    Ok(all)
}

/// Connects the k-th block of `users` (`l{i}`, as `paced` names them) to `at`.
async fn connect(ctx: &Ctx, k: usize, at: Instance, users: usize) -> Result<Member, String> {
    let n = NAMES.len();
    let block = users * k / n..users * (k + 1) / n;
    let name = NAMES[k];
    eprintln!(
        "notifd-bench: instances: connecting users l{}..l{} to {name}",
        block.start,
        block.end - 1
    );
    let tracker = Tracker::new(ctx.tracker.protocol);
    let clients = Clients {
        addr: at.ws,
        workspace: WORKSPACE,
        protocol: tracker.protocol,
        concurrency: CONCURRENCY,
        tracker: &tracker,
    };
    let start = block.start;
    let (held, failures) = clients
        .open(
            block.len(),
            |i| ctx.minter.user(&format!("l{}", start + i)),
            |_| -> Arc<dyn Frames> { tracker.clone() },
        )
        .await;
    if held.is_empty() {
        return Err(format!("no WebSocket connected to {name}: {failures:?}"));
    }
    Ok(Member {
        name,
        at,
        users: block,
        tracker,
        clients: held,
        failures,
    })
}

impl Member {
    fn clients_held(&self) -> u64 {
        self.users.len() as u64 - sum(&self.failures)
    }
}

/// Acked creates of `seqs` against the frames of every instance's clients.
fn tally(ctx: &Ctx, members: &[Member], seqs: &Range<u64>) -> (u64, u64, u64) {
    let seen = |seq| members.iter().any(|m| m.tracker.seen(seq));
    ws::tally(seqs.clone(), |seq| ctx.tracker.acked(seq), seen)
}

/// The pattern tap on the patterns notifd subscribed to before issue 15; an error
/// (a cluster, credentials) leaves the shares out of the result.
async fn start_tap(ctx: &Ctx) -> Result<Tap, String> {
    let url = ctx
        .args
        .redis_url
        .as_deref()
        .ok_or("tap: no NOTIFD_REDIS_URL")?;
    let prefix = &ctx.args.redis_prefix;
    let patterns = [
        format!("{prefix}notifications:*"),
        format!("{prefix}notifd:state:*"),
    ];
    let tap = Tap::start(url, &patterns).await;
    if let Err(e) = &tap {
        eprintln!("notifd-bench: instances: no pattern tap ({e}); shares left out");
    }
    tap
}

async fn counters(members: &[Member], redis: Option<SocketAddr>) -> Vec<Counters> {
    let received = redis.and_then(crate::sockets::received_from);
    let mut out = Vec::with_capacity(members.len());
    for m in members {
        out.push(Counters {
            messages: metric(m.at.http).await,
            redis_bytes: received.as_ref().and_then(|r| r.get(&m.at.pid).copied()),
            frames: m.tracker.frames.load(Ordering::Acquire),
        });
    }
    out
}

/// `METRIC` on the instance's /metrics (the REST port); None when it has none.
async fn metric(http: SocketAddr) -> Option<u64> {
    let response = HttpConn::new(http)
        .request("GET", "/metrics", "-", None)
        .await
        .ok()?;
    let text = String::from_utf8_lossy(&response.body);
    let value = text
        .lines()
        .find_map(|line| line.strip_prefix(METRIC)?.strip_prefix(' '))?;
    value.trim().parse::<f64>().ok().map(|v| v as u64)
}

/// One instance's readings around the timed window.
struct Window<'a> {
    before: &'a Counters,
    after: &'a Counters,
    cpu: &'a proc::WindowCpu,
    latency: &'a Histogram<u64>,
}

impl Window<'_> {
    /// Its figures (`published`: the tap's over the window, if it ran).
    fn to_json(&self, m: &Member, published: Option<&tap::Reading>) -> Value {
        let (before, after, cpu) = (self.before, self.after, self.cpu);
        let delta = |a: Option<u64>, b: Option<u64>| Some(a?.saturating_sub(b?));
        let messages = delta(after.messages, before.messages);
        let bytes = delta(after.redis_bytes, before.redis_bytes);
        let share = |part: Option<u64>, whole: Option<u64>| match (part, whole) {
            (Some(p), Some(w)) if w > 0 => Some(round(p as f64 / w as f64, 3)),
            _ => None,
        };
        json!({
            "instance": m.name,
            "users": format!("l{}..l{}", m.users.start, m.users.end - 1),
            "users_connected": m.clients_held(),
            "connect_failures": count_map(&m.failures),
            "redis_messages_received": messages,
            "messages_share_of_published": share(messages, published.map(|p| p.messages)),
            "redis_bytes_received": bytes,
            "redis_bytes_vs_pattern_tap": share(bytes, published.map(|p| p.bytes)),
            "frames_received": after.frames - before.frames,
                "end_to_end": stats::summary(self.latency),
            "duplicates": m.tracker.duplicates.load(Ordering::Acquire),
            "ws_dropped": m.tracker.dropped.load(Ordering::Acquire),
            "notifd_cpu_seconds": round(cpu.notifd_cpu_seconds, 2),
            "notifd_cpu_pct_of_core": round(cpu.notifd_pct(), 1),
            "cpu": cpu.to_json(),
        })
    }
}
