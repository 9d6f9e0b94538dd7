//! Scenario broadcast (issue 13): how long one workspace-audience notification takes
//! to reach every connection on its workspace. BENCH_USERS distinct users (10,000
//! unless given) hold one plain WebSocket each on a workspace of the scenario's own;
//! once a warm-up broadcast has reached all of them (the clients are live), the
//! BENCH_BROADCASTS timed broadcasts (20) go one at a time, each as soon as the one
//! before reached every client (or `DELIVERY_LIMIT` passed), so each measures one
//! fan-out on its own: create sent -> the last client's frame. notifd's CPU is read
//! over the timed broadcasts. broadcast_arrivals.rs counts the frames.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::broadcast_arrivals::{Arrivals, MAX_BROADCASTS};
use super::{count_map, create_for, hold, sum, Audience, Ctx};
use crate::events::Protocol;
use crate::http::HttpConn;
use crate::proc::{self, round};
use crate::stats;
use crate::ws::Clients;

/// The scenario's workspace: no other scenario's rows or clients are on it.
const WORKSPACE: &str = "bench-broadcast";
/// Users (one client each) unless BENCH_USERS says.
const USERS: usize = 10_000;
/// Handshakes in flight at once (as the connections scenario).
const CONCURRENCY: usize = 256;
/// Warm-up broadcasts sent at most, until one reaches every client.
const WARM_UPS: usize = 3;
/// Longest wait for one broadcast to reach every client; what is missing then is lost.
const DELIVERY_LIMIT: Duration = Duration::from_secs(10);
/// How often the sender looks at the arrival count. The times come from the
/// readers' own clock readings, so this only delays the next broadcast.
const POLL: Duration = Duration::from_millis(2);

pub async fn run(ctx: &Arc<Ctx>) -> Result<Value, String> {
    let users = ctx.args.users.unwrap_or(USERS);
    let count = ctx.args.broadcasts;
    if !(1..=MAX_BROADCASTS - WARM_UPS).contains(&count) {
        return Err(format!(
            "BENCH_BROADCASTS is {count}: give 1 to {}",
            MAX_BROADCASTS - WARM_UPS
        ));
    }
    let arrivals = Arrivals::new(ctx.seq_now());
    eprintln!(
        "notifd-bench: broadcast: connecting {users} users to workspace {WORKSPACE} \
         ({CONCURRENCY} handshakes at a time)"
    );
    let clients = Clients {
        addr: ctx.args.ws,
        workspace: WORKSPACE,
        protocol: Protocol::Plain,
        concurrency: CONCURRENCY,
        tracker: &ctx.tracker,
    };
    let started = Instant::now();
    let (ws_clients, failures) = clients
        .open(
            users,
            |i| ctx.minter.user_in(&format!("b{i}"), WORKSPACE),
            |_| arrivals.frames(),
        )
        .await;
    let connect_seconds = started.elapsed().as_secs_f64();
    let connected = ws_clients.len() as u64;
    if connected == 0 {
        return Err(format!("no WebSocket connected: {failures:?}"));
    }
    hold(ctx, 1.0).await?;
    let mut conn = HttpConn::new(ctx.args.http);
    let warm_up = warm_up(ctx, &arrivals, &mut conn, connected).await?;

    eprintln!("notifd-bench: broadcast: {count} broadcasts to {connected} clients, one at a time");
    let window = proc::Window::start(ctx.pid())?;
    let mut timed = Vec::with_capacity(count);
    let mut rest = stats::histogram();
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    for _ in 0..count {
        match broadcast(ctx, &mut conn, &arrivals).await {
            Ok((k, ns)) => {
                let _ = rest.record(ns.clamp(1, stats::HIST_MAX));
                timed.push(k);
                reach_all(&arrivals, k, connected).await;
            }
            Err(e) => *errors.entry(e).or_default() += 1,
        }
    }
    let cpu = window.finish()?;

    let fanout = Fanout::of(&arrivals, &timed, connected);
    let delivered = fanout.delivered;
    let dropped = ctx.tracker.dropped.load(Ordering::Acquire);
    ctx.tracker.closing.store(true, Ordering::Release);
    drop(ws_clients);
    Ok(json!({
        "workspace": WORKSPACE,
        "users_asked": users,
        "users_connected": connected,
        "connect_failures": sum(&failures),
        "connect_failure_reasons": count_map(&failures),
        "connect_seconds": round(connect_seconds, 2),
        "warm_up": warm_up,
        "broadcasts_asked": count,
        "broadcasts_sent": timed.len(),
        "create_errors": count_map(&errors),
        "expected_frames": connected * timed.len() as u64,
        "frames_received": delivered,
        "frames_lost": connected * timed.len() as u64 - delivered,
        "incomplete_broadcasts": fanout.incomplete,
        "duplicates": arrivals.duplicates.load(Ordering::Acquire),
        "unexpected_frames": arrivals.unexpected.load(Ordering::Acquire),
        "ws_dropped": dropped,
        "time_to_last_frame": stats::summary(&fanout.last),
        "time_to_first_frame": stats::summary(&fanout.first),
        "rest_create": stats::summary(&rest),
        "cpu": cpu.to_json(),
        "notifd_cpu_seconds": round(cpu.notifd_cpu_seconds, 2),
        "notifd_cpu_ms_per_broadcast": round(cpu.notifd_cpu_seconds * 1e3 / timed.len().max(1) as f64, 2),
        "notifd_cpu_us_per_frame": round(cpu.notifd_cpu_seconds * 1e6 / delivered.max(1) as f64, 2),
    }))
}

/// Sends warm-up broadcasts until one reaches every client, at most `WARM_UPS`:
/// notifd subscribes to a workspace's channel once a connection is on it, and a
/// broadcast that reached everyone says every client is live. Some clients not
/// reached is a result (the timed broadcasts will miss them too); none is an error.
async fn warm_up(
    ctx: &Ctx,
    arrivals: &Arrivals,
    conn: &mut HttpConn,
    connected: u64,
) -> Result<Value, String> {
    let mut reached = 0;
    for sent in 1..=WARM_UPS {
        let (k, _) = broadcast(ctx, conn, arrivals)
            .await
            .map_err(|e| format!("warm-up broadcast: {e}"))?;
        reached = reach_all(arrivals, k, connected).await;
        if reached == connected {
            return Ok(json!({"broadcasts": sent, "reached": reached}));
        }
    }
    if reached == 0 {
        return Err(format!(
            "none of {WARM_UPS} warm-up broadcasts reached a client within {}s",
            DELIVERY_LIMIT.as_secs()
        ));
    }
    Ok(json!({"broadcasts": WARM_UPS, "reached": reached}))
}

/// One broadcast to the workspace, stamped with its send time; returns its index and
/// the REST round trip in ns.
async fn broadcast(
    ctx: &Ctx,
    conn: &mut HttpConn,
    arrivals: &Arrivals,
) -> Result<(usize, u64), String> {
    let seq = ctx.seq().ok_or("sequence numbers used up")?;
    let k = arrivals
        .index(seq)
        .ok_or("more broadcasts than one run holds")?;
    let ns = create_for(ctx, conn, Audience::Workspace(WORKSPACE), seq).await?;
    Ok((k, ns))
}

/// Waits until broadcast `k` reached `expected` clients, at most `DELIVERY_LIMIT`;
/// returns how many it reached.
async fn reach_all(arrivals: &Arrivals, k: usize, expected: u64) -> u64 {
    let started = Instant::now();
    loop {
        let reached = arrivals.received(k);
        if reached >= expected || started.elapsed() >= DELIVERY_LIMIT {
            return reached;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The timed broadcasts' arrivals: create sent -> first and last client's frame (ns),
/// over the broadcasts that reached every client.
struct Fanout {
    first: hdrhistogram::Histogram<u64>,
    last: hdrhistogram::Histogram<u64>,
    delivered: u64,
    /// Broadcasts some client never got (within `DELIVERY_LIMIT`): no time-to-last.
    incomplete: u64,
}

impl Fanout {
    fn of(arrivals: &Arrivals, timed: &[usize], connected: u64) -> Fanout {
        let mut fanout = Fanout {
            first: stats::histogram(),
            last: stats::histogram(),
            delivered: 0,
            incomplete: 0,
        };
        for &k in timed {
            let Some(o) = arrivals.outcome(k) else {
                fanout.incomplete += 1;
                continue;
            };
            // A duplicate is not counted, so `received` never exceeds the clients.
            fanout.delivered += o.received.min(connected);
            if o.received < connected {
                fanout.incomplete += 1;
                continue;
            }
            let ns = |at: u64| at.saturating_sub(o.sent_ns).clamp(1, stats::HIST_MAX);
            let _ = fanout.first.record(ns(o.first_ns));
            let _ = fanout.last.record(ns(o.last_ns));
        }
        fanout
    }
}
