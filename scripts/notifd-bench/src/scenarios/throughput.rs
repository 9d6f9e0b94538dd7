//! Scenario 3: as many creates per second as notifd sustains, from several closed-loop
//! keep-alive clients, each notification to a connected user; deliveries counted on
//! the WebSockets. One step per client count; the best step is the result.
//! BENCH_BATCH=N (N > 1) makes each request a batch of N notifications (to random
//! connected users) through the batch endpoint; creates still count notifications.
//! BENCH_IDEMPOTENCY=1 gives every notification an idempotency key of its own.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{count_map, create, create_batch, drain, hold, sum, Ctx};
use crate::proc::{self, round};
use crate::stats::{self, Rng};
use crate::ws;

/// Load before the measured window of each step.
const WARM_UP: Duration = Duration::from_secs(2);
/// Longest wait for the last deliveries of a step.
const DRAIN_LIMIT: Duration = Duration::from_secs(15);
/// Most notifications in one batch request (notifd's limit).
const MAX_BATCH: usize = 1000;

pub async fn run(ctx: &Arc<Ctx>) -> Result<Value, String> {
    let users = ctx.args.users();
    if !(1..=MAX_BATCH).contains(&ctx.args.batch) {
        return Err(format!(
            "BENCH_BATCH is {}: give 1 (single creates) to {MAX_BATCH}",
            ctx.args.batch
        ));
    }
    eprintln!("notifd-bench: throughput: connecting {users} users");
    let (clients, failures) =
        ws::connect_many(ctx.args.ws, &ctx.minter, "t", users, 100, &ctx.tracker).await;
    if clients.is_empty() {
        return Err(format!("no WebSocket connected: {failures:?}"));
    }
    hold(ctx, 1.0).await?;
    let levels: Vec<usize> = ctx
        .args
        .throughput_clients
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .filter(|n| (1..=256).contains(n))
        .collect();
    if levels.is_empty() {
        return Err("BENCH_THROUGHPUT_CLIENTS names no client count from 1 to 256".into());
    }
    let perf_level = if ctx.args.perf_clients == 0 {
        None
    } else if levels.contains(&ctx.args.perf_clients) {
        Some(ctx.args.perf_clients)
    } else {
        levels.first().copied()
    };
    let mut steps = Vec::new();
    for &clients_n in &levels {
        let step = step(ctx, users, clients_n, perf_level == Some(clients_n)).await?;
        steps.push(step);
    }
    let dropped = ctx.tracker.dropped.load(Ordering::Acquire);
    ctx.tracker.closing.store(true, Ordering::Release);
    drop(clients);
    // The best step: most deliveries per second with nothing lost.
    let best = steps
        .iter()
        .filter(|s| s["lost"] == 0)
        .max_by(|a, b| {
            let f = |v: &Value| v["deliveries_per_s"].as_f64().unwrap_or(0.0);
            f(a).total_cmp(&f(b))
        })
        .or_else(|| steps.first())
        .cloned()
        .unwrap_or(Value::Null);
    Ok(json!({
        "users_connected": users as u64 - sum(&failures),
        "connect_failures": count_map(&failures),
        "ws_dropped": dropped,
        "steps": steps,
        "best": best,
    }))
}

/// "16 clients", or "16 clients x batch 100" in batch mode; ", keyed" with
/// BENCH_IDEMPOTENCY=1.
fn label(clients: usize, batch: usize, keyed: bool) -> String {
    let keyed = if keyed { ", keyed" } else { "" };
    if batch > 1 {
        format!("{clients} clients x batch {batch}{keyed}")
    } else {
        format!("{clients} clients{keyed}")
    }
}

async fn step(ctx: &Arc<Ctx>, users: usize, n: usize, perf: bool) -> Result<Value, String> {
    let batch = ctx.args.batch;
    let label = label(n, batch, ctx.args.idempotency == 1);
    eprintln!(
        "notifd-bench: throughput: {label}, {}s warm-up + {}s measured",
        WARM_UP.as_secs(),
        ctx.args.seconds
    );
    let (http, slowest_open_ms) = super::open_conns(ctx, n).await?;
    ctx.tracker.reset_latency();
    let first_seq = ctx.seq_now();
    let ok = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let window_len = Duration::from_secs(ctx.args.seconds);
    // Hard bound on the senders, whatever happens to the measuring side.
    let deadline = started + WARM_UP + window_len + Duration::from_secs(1);
    let mut tasks = Vec::new();
    for (k, mut conn) in http.into_iter().enumerate() {
        let (ctx, ok, stop) = (ctx.clone(), ok.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng::new(stats::now_ns() ^ ((k as u64 + 1) << 17));
            let mut errors: BTreeMap<String, u64> = BTreeMap::new();
            let mut rest = stats::histogram();
            let mut items: Vec<(String, u64)> = Vec::with_capacity(batch);
            let mut body = String::with_capacity(if batch > 1 { batch * 128 + 32 } else { 0 });
            while !stop.load(Ordering::Acquire) && Instant::now() < deadline {
                items.clear();
                for _ in 0..batch {
                    let Some(seq) = ctx.seq() else { break };
                    items.push((format!("t{}", rng.below(users as u64)), seq));
                }
                // Sequence numbers ran out: stop rather than send a short request.
                if items.len() < batch {
                    break;
                }
                let result = if batch == 1 {
                    let (user, seq) = &items[0];
                    create(&ctx, &mut conn, user, *seq).await
                } else {
                    create_batch(&ctx, &mut conn, &items, &mut body).await
                };
                match result {
                    Ok(ns) => {
                        ok.fetch_add(batch as u64, Ordering::AcqRel);
                        let _ = rest.record(ns.clamp(1, stats::HIST_MAX));
                    }
                    Err(e) => {
                        // Counted in notifications not created, like `ok`.
                        *errors.entry(e).or_default() += batch as u64;
                        // Do not spin on a refusing server.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
            (errors, rest)
        }));
    }
    hold(ctx, WARM_UP.as_secs_f64()).await?;
    let ok0 = ok.load(Ordering::Acquire);
    let frames0 = ctx.tracker.frames.load(Ordering::Acquire);
    let mut perf_child = None;
    if perf {
        perf_child = start_perf(ctx, n);
    }
    let window = proc::Window::start(ctx.pid())?;
    hold(ctx, window_len.as_secs_f64()).await?;
    let cpu = window.finish()?;
    let ok1 = ok.load(Ordering::Acquire);
    let frames1 = ctx.tracker.frames.load(Ordering::Acquire);
    stop.store(true, Ordering::Release);
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let mut rest = stats::histogram();
    for task in futures_util::future::join_all(tasks).await {
        match task {
            Ok((errs, h)) => {
                for (k, v) in errs {
                    *errors.entry(k).or_default() += v;
                }
                let _ = rest.add(&h);
            }
            Err(_) => *errors.entry("sender task panicked".into()).or_default() += 1,
        }
    }
    let perf_file = match perf_child {
        Some((mut child, path)) => {
            let _ = tokio::task::spawn_blocking(move || child.wait()).await;
            Some(path)
        }
        None => None,
    };
    let last_seq = ctx.seq_now();
    let (acked, delivered, extra) = drain(ctx, first_seq..last_seq, DRAIN_LIMIT).await;
    let e2e = ctx.tracker.latency_snapshot();
    let created = ok1 - ok0;
    let secs = cpu.seconds.max(1e-9);
    eprintln!(
        "notifd-bench: throughput: {label}: {:.0} creates/s, {:.0} deliveries/s, lost {}",
        created as f64 / secs,
        (frames1 - frames0) as f64 / secs,
        acked - delivered
    );
    Ok(json!({
        "clients": n,
        "batch": batch,
        "idempotency": ctx.args.idempotency == 1,
        "label": label,
        "rest_connection_first_answer_max_ms": slowest_open_ms,
        "window_s": round(secs, 2),
        "creates_in_window": created,
        "creates_per_s": round(created as f64 / secs, 0),
        "deliveries_per_s": round((frames1 - frames0) as f64 / secs, 0),
        "creates_total": acked,
        "delivered_total": delivered,
        "lost": acked - delivered,
        "delivered_not_acked": extra,
        "create_errors": count_map(&errors),
        "notifd_cpu_us_per_notification": round(cpu.notifd_cpu_seconds * 1e6 / created.max(1) as f64, 1),
        "notifd_cpu_pct_of_core": round(cpu.notifd_pct(), 1),
        "notifd_threads": cpu.after.threads,
        "notifd_rss_kib": cpu.after.rss_kib,
        "end_to_end": stats::summary(&e2e),
        "slow_deliveries": ctx.tracker.outliers(),
        // Per request: one notification, or `batch` of them.
        "rest_create": stats::summary(&rest),
        "cpu": cpu.to_json(),
        "perf_data": perf_file,
    }))
}

/// `perf record -g` of notifd for the measured window, when perf is installed.
fn start_perf(ctx: &Ctx, clients: usize) -> Option<(std::process::Child, String)> {
    let dir = ctx.args.out.parent()?.to_path_buf();
    let path = dir.join(format!("perf-throughput-{clients}.data"));
    let child = std::process::Command::new("perf")
        .args(["record", "-F", "199", "--call-graph", "dwarf,16384", "-p"])
        .arg(ctx.pid().to_string())
        .arg("-o")
        .arg(&path)
        .args(["--", "sleep"])
        .arg(ctx.args.seconds.to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    match child {
        Ok(child) => {
            eprintln!("notifd-bench: perf record -> {}", path.display());
            Some((child, path.display().to_string()))
        }
        Err(err) => {
            eprintln!("notifd-bench: cannot start perf: {err}");
            None
        }
    }
}
