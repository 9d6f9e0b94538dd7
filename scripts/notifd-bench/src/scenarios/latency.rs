//! Scenario 2: a steady rate of creates through REST to random connected users;
//! end-to-end latency from the create request sent to the frame received.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{count_map, create, drain, sum, Ctx};
use crate::http::HttpConn;
use crate::proc::{self, round};
use crate::stats::{self, Rng};
use crate::ws;

const WARM_UP: Duration = Duration::from_secs(2);

/// What a paced run did.
pub struct Paced {
    pub seqs: std::ops::Range<u64>,
    pub created: u64,
    pub errors: BTreeMap<String, u64>,
    pub rest: hdrhistogram::Histogram<u64>,
    pub seconds: f64,
}

pub async fn run(ctx: &Arc<Ctx>) -> Result<Value, String> {
    let users = ctx.args.users();
    eprintln!("notifd-bench: latency: connecting {users} users");
    let (clients, failures) =
        ws::connect_many(ctx.args.ws, &ctx.minter, "l", users, 100, &ctx.tracker).await;
    if clients.is_empty() {
        return Err(format!("no WebSocket connected: {failures:?}"));
    }
    super::hold(ctx, 1.0).await?;
    let rate = ctx.args.rate().max(1);
    let conns = ctx.args.latency_clients.max(1);

    eprintln!("notifd-bench: latency: warm-up {}s", WARM_UP.as_secs());
    let (http, slowest_open_ms) = super::open_conns(ctx, conns).await?;
    let (warm, http) = paced(ctx, users, rate, WARM_UP, http).await;
    drain(ctx, warm.seqs.clone(), Duration::from_secs(5)).await;
    ctx.tracker.reset_latency();

    eprintln!(
        "notifd-bench: latency: {rate} creates/s for {}s over {conns} keep-alive connections",
        ctx.args.seconds
    );
    let window = proc::Window::start(ctx.pid())?;
    let (run, _) = paced(
        ctx,
        users,
        rate,
        Duration::from_secs(ctx.args.seconds),
        http,
    )
    .await;
    let cpu = window.finish()?;
    let (acked, delivered, extra) = drain(ctx, run.seqs.clone(), Duration::from_secs(10)).await;
    let e2e = ctx.tracker.latency_snapshot();
    let lost = acked - delivered;
    let dropped = ctx
        .tracker
        .dropped
        .load(std::sync::atomic::Ordering::Acquire);
    drop(clients);
    Ok(json!({
        "users_connected": users as u64 - sum(&failures),
        "connect_failures": count_map(&failures),
        "target_rate_per_s": rate,
        "rest_connections": conns,
        "rest_connection_first_answer_max_ms": slowest_open_ms,
        "seconds": round(run.seconds, 2),
        "creates_sent": run.seqs.end - run.seqs.start,
        "creates_ok": run.created,
        "achieved_rate_per_s": round(run.created as f64 / run.seconds.max(1e-9), 1),
        "create_errors": count_map(&run.errors),
        "delivered": delivered,
        "lost": lost,
        "delivered_not_acked": extra,
        "duplicates": ctx.tracker.duplicates.load(std::sync::atomic::Ordering::Acquire),
        "ws_dropped": dropped,
        "end_to_end": stats::summary(&e2e),
        "slow_deliveries": ctx.tracker.outliers(),
        "rest_create": stats::summary(&run.rest),
        "cpu": cpu.to_json(),
        "notifd_cpu_us_per_notification": round(cpu.notifd_cpu_seconds * 1e6 / (run.created.max(1)) as f64, 1),
    }))
}

/// Creates at `rate` per second for `duration` over `conns` keep-alive connections,
/// each to a random user `l0..l{users}`. Open loop: each connection keeps its own
/// schedule and sends late (at once) when a response took longer than its period.
pub async fn paced(
    ctx: &Arc<Ctx>,
    users: usize,
    rate: u64,
    duration: Duration,
    http: Vec<HttpConn>,
) -> (Paced, Vec<HttpConn>) {
    let conns = http.len().max(1);
    let period = Duration::from_secs_f64(conns as f64 / rate as f64);
    let per_conn = (rate as f64 * duration.as_secs_f64() / conns as f64).ceil() as u64 + 1;
    let start = Instant::now() + Duration::from_millis(20);
    let end = start + duration;
    let first_seq = ctx.seq_now();
    let mut tasks = Vec::new();
    for (k, mut conn) in http.into_iter().enumerate() {
        let ctx = ctx.clone();
        let offset = period.mul_f64(k as f64 / conns as f64);
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng::new(stats::now_ns() ^ (k as u64 + 1));
            let mut rest = stats::histogram();
            let mut errors: BTreeMap<String, u64> = BTreeMap::new();
            let mut created = 0u64;
            let mut next = start + offset;
            for _ in 0..per_conn {
                if next >= end {
                    break;
                }
                tokio::time::sleep_until(next.into()).await;
                next += period;
                let Some(seq) = ctx.seq() else { break };
                let user = format!("l{}", rng.below(users as u64));
                match create(&ctx, &mut conn, &user, seq).await {
                    Ok(ns) => {
                        created += 1;
                        let _ = rest.record(ns.clamp(1, stats::HIST_MAX));
                    }
                    Err(e) => *errors.entry(e).or_default() += 1,
                }
            }
            (created, errors, rest, conn)
        }));
    }
    let results = futures_util::future::join_all(tasks).await;
    let seconds = start
        .elapsed()
        .as_secs_f64()
        .min(duration.as_secs_f64().max(1e-9));
    let mut out = Paced {
        seqs: first_seq..ctx.seq_now(),
        created: 0,
        errors: BTreeMap::new(),
        rest: stats::histogram(),
        seconds,
    };
    let mut back = Vec::new();
    for result in results {
        let Ok((created, errors, rest, conn)) = result else {
            *out.errors.entry("sender task panicked".into()).or_default() += 1;
            continue;
        };
        out.created += created;
        for (k, v) in errors {
            *out.errors.entry(k).or_default() += v;
        }
        let _ = out.rest.add(&rest);
        back.push(conn);
    }
    (out, back)
}
