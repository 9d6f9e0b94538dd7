//! Scenario 1: open many WebSocket connections (distinct users), hold them, and read
//! what they cost notifd: RSS per connection, threads, idle CPU.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{count_map, create, drain, hold, sum, Ctx};
use crate::http::HttpConn;
use crate::proc::{self, round};
use crate::ws;

/// Handshakes in flight at once.
const CONCURRENCY: usize = 256;
/// Pause after the last handshake so notifd's short-lived handshake threads are gone.
const SETTLE: Duration = Duration::from_secs(3);

pub async fn run(ctx: &Arc<Ctx>) -> Result<Value, String> {
    let pid = ctx.pid();
    let n = ctx.args.connections;
    let before = proc::sample(pid)?;
    let fds_before = proc::fds(pid);
    eprintln!(
        "notifd-bench: connections: opening {n} WebSockets ({CONCURRENCY} handshakes at a time)"
    );
    let started = Instant::now();
    let (clients, failures) =
        ws::connect_many(ctx.args.ws, &ctx.minter, "c", n, CONCURRENCY, &ctx.tracker).await;
    let connect_seconds = started.elapsed().as_secs_f64();
    let opened = clients.len() as u64;
    eprintln!(
        "notifd-bench: connections: {opened} open in {connect_seconds:.1}s, {} failed",
        sum(&failures)
    );
    hold(ctx, SETTLE.as_secs_f64()).await?;
    let connected = proc::sample(pid)?;
    let fds_connected = proc::fds(pid);

    eprintln!(
        "notifd-bench: connections: holding for {}s",
        ctx.args.seconds
    );
    let window = proc::Window::start(pid)?;
    hold(ctx, ctx.args.seconds as f64).await?;
    let cpu = window.finish()?;
    let held = ctx.tracker.open.load(Ordering::Acquire);
    let dropped = ctx.tracker.dropped.load(Ordering::Acquire);
    let after = cpu.after;

    // One notification to the first user: the connections are alive, not just open.
    let mut conn = HttpConn::new(ctx.args.http);
    let check = match ctx.seq() {
        Some(seq) => {
            let created = create(ctx, &mut conn, "c0", seq).await;
            let (acked, delivered, _) = drain(ctx, seq..seq + 1, Duration::from_secs(5)).await;
            match created {
                Ok(_) if acked == 1 && delivered == 1 => "delivered".to_string(),
                Ok(_) => "created, not delivered within 5 s".to_string(),
                Err(e) => format!("create failed: {e}"),
            }
        }
        None => "skipped".into(),
    };

    let per_conn = |rss: u64| {
        if opened == 0 {
            0.0
        } else {
            round(rss.saturating_sub(before.rss_kib) as f64 / opened as f64, 2)
        }
    };
    let rss_per_conn = per_conn(after.rss_kib.max(connected.rss_kib));
    let idle_pct = round(cpu.notifd_pct(), 2);

    ctx.tracker.closing.store(true, Ordering::Release);
    drop(clients);

    Ok(json!({
        "connections_asked": n,
        "connections_opened": opened,
        "connections_held": held,
        "connect_failures": sum(&failures),
        "connect_failure_reasons": count_map(&failures),
        "dropped_during_hold": dropped,
        "drop_reasons": ctx.tracker.close_codes.lock().map(|m| count_map(&m)).unwrap_or(json!({})),
        "connect_seconds": round(connect_seconds, 2),
        "connect_rate_per_s": round(opened as f64 / connect_seconds.max(1e-9), 0),
        "hold_seconds": ctx.args.seconds,
        "rss_before_kib": before.rss_kib,
        "rss_connected_kib": connected.rss_kib,
        "rss_after_hold_kib": after.rss_kib,
        "rss_per_connection_kib": rss_per_conn,
        "rss_per_connection_after_connect_kib": per_conn(connected.rss_kib),
        "rss_per_connection_after_hold_kib": per_conn(after.rss_kib),
        "threads_before": before.threads,
        "threads_connected": connected.threads,
        "threads_after_hold": after.threads,
        "fds_before": fds_before,
        "fds_connected": fds_connected,
        "idle_cpu_pct_of_core": idle_pct,
        "cpu": cpu.to_json(),
        "delivery_check": check,
    }))
}
