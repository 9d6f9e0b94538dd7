//! The scenarios (issue 4's four, idle-rest, issue 12's state-fanout, issue 13's
//! broadcast and broadcast-history, issue 15's instances) and what they share: the
//! run context, waiting for notifd, creating a stamped notification (for a user or a
//! workspace audience), draining deliveries. pages.rs and seed.rs are what the read
//! scenarios share.

mod broadcast;
mod broadcast_arrivals;
mod broadcast_history;
mod connections;
mod history;
mod idle_rest;
mod instances;
mod latency;
mod pages;
mod seed;
mod state_fanout;
mod state_slots;
mod throughput;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::events::Protocol;
use crate::http::HttpConn;
use crate::proc;
use crate::stats;
use crate::token::{Minter, WORKSPACE};
use crate::ws::{Tracker, MAX_SEQ};
use crate::RunArgs;

pub use instances::Instance;

/// How long notifd may take to answer /readyz after start.
const READY_LIMIT: Duration = Duration::from_secs(60);

pub struct Ctx {
    pub args: RunArgs,
    pub minter: Minter,
    pub service_token: String,
    pub tracker: Arc<Tracker>,
    next_seq: AtomicU64,
    /// With BENCH_IDEMPOTENCY=1, what every create's idempotency key starts with
    /// (then its sequence number): unique to this run, so a kept database never
    /// replays an earlier run's key.
    key_prefix: Option<String>,
}

impl Ctx {
    /// The next sequence number, or None once the bitmaps are full (a bound on loops).
    pub fn seq(&self) -> Option<u64> {
        let seq = self.next_seq.fetch_add(1, Ordering::AcqRel);
        (seq < MAX_SEQ).then_some(seq)
    }

    pub fn seq_now(&self) -> u64 {
        self.next_seq.load(Ordering::Acquire).min(MAX_SEQ)
    }

    pub fn pid(&self) -> u32 {
        self.args.pid
    }
}

pub async fn run(args: RunArgs) -> Result<Value, String> {
    let minter = Minter::new(&args.secret);
    let ctx = Arc::new(Ctx {
        service_token: minter.service(),
        minter,
        tracker: Tracker::new(args.events.protocol),
        next_seq: AtomicU64::new(0),
        key_prefix: (args.idempotency == 1).then(|| format!("bench-{}-", stats::now_ns())),
        args,
    });
    wait_ready(ctx.args.http, ctx.pid()).await?;
    let started = stats::now_ns();
    let mut result = match ctx.args.scenario.as_str() {
        "connections" => connections::run(&ctx).await,
        "latency" => latency::run(&ctx).await,
        "throughput" => throughput::run(&ctx).await,
        "history" => history::run(&ctx).await,
        "idle-rest" => idle_rest::run(&ctx).await,
        "state-fanout" => state_fanout::run(&ctx).await,
        "broadcast" => broadcast::run(&ctx).await,
        "broadcast-history" => broadcast_history::run(&ctx).await,
        "instances" => instances::run(&ctx).await,
        other => Err(format!(
            "unknown scenario {other:?}: connections, latency, throughput, history, idle-rest, \
             state-fanout, broadcast, broadcast-history or instances"
        )),
    }?;
    if !proc::alive(ctx.pid()) {
        return Err("notifd exited during the scenario".into());
    }
    if let Value::Object(map) = &mut result {
        map.insert("scenario".into(), json!(ctx.args.scenario));
        map.insert(
            "duration_s".into(),
            json!(proc::round((stats::now_ns() - started) as f64 / 1e9, 1)),
        );
        // Which notifd and which Redis: what tells two runs' files apart.
        map.insert("notifd_binary".into(), json!(proc::exe(ctx.pid())));
        let cluster = ctx
            .args
            .redis_url
            .as_deref()
            .map(|u| u.starts_with("redis+cluster://"));
        map.insert(
            "redis".into(),
            json!(match cluster {
                Some(true) => "cluster",
                Some(false) => "single",
                None => "unknown",
            }),
        );
        // What the tracker's clients spoke, and (v1) the events they were sent, unless
        // the scenario read its clients' frames itself and said so.
        if !map.contains_key("protocol") {
            map.insert("protocol".into(), json!(ctx.tracker.protocol.name()));
            if ctx.tracker.protocol == Protocol::V1 {
                map.insert("v1_events".into(), ctx.tracker.events.to_json());
            }
        }
    }
    Ok(result)
}

/// Waits (bounded) until the notifd at `http` (process `pid`) answers /readyz 200.
pub async fn wait_ready(http: SocketAddr, pid: u32) -> Result<(), String> {
    let started = Instant::now();
    let mut last = String::from("no answer");
    while started.elapsed() < READY_LIMIT {
        if !proc::alive(pid) {
            return Err(format!(
                "notifd {pid} exited before it was ready (see its log)"
            ));
        }
        match crate::http::get_status(http, "/readyz").await {
            Ok(200) => {
                eprintln!(
                    "notifd-bench: notifd ready after {:.1}s",
                    started.elapsed().as_secs_f64()
                );
                return Ok(());
            }
            Ok(status) => last = format!("status {status}"),
            Err(err) => last = err.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!(
        "notifd did not answer /readyz 200 within {}s (last: {last})",
        READY_LIMIT.as_secs()
    ))
}

/// Who a bench notification is for.
#[derive(Clone, Copy)]
pub enum Audience<'a> {
    /// One user, on the bench workspace.
    User(&'a str),
    /// Every user granted this workspace (issue 13's workspace audience).
    Workspace(&'a str),
}

/// Creates one notification for `user`, stamped with its send time; returns the REST
/// round trip in ns.
pub async fn create(ctx: &Ctx, conn: &mut HttpConn, user: &str, seq: u64) -> Result<u64, String> {
    create_for(ctx, conn, Audience::User(user), seq).await
}

/// Creates one notification for `to`, stamped with its send time; returns the REST
/// round trip in ns.
pub async fn create_for(
    ctx: &Ctx,
    conn: &mut HttpConn,
    to: Audience<'_>,
    seq: u64,
) -> Result<u64, String> {
    ready(conn).await?;
    let mut body = String::new();
    write_item(
        &mut body,
        to,
        stats::now_ns(),
        seq,
        ctx.key_prefix.as_deref(),
    );
    post(ctx, conn, "/v1/internal/notifications", &body, &[seq]).await
}

/// Creates one notification per `(user, seq)` of `items` in one
/// `POST /v1/internal/notifications/batch` (all or none), each stamped with the
/// request's send time; returns the REST round trip in ns. `body` is scratch space
/// kept by the caller between calls.
pub async fn create_batch(
    ctx: &Ctx,
    conn: &mut HttpConn,
    items: &[(String, u64)],
    body: &mut String,
) -> Result<u64, String> {
    ready(conn).await?;
    let sent = stats::now_ns();
    body.clear();
    body.push_str(r#"{"notifications":["#);
    for (i, (user, seq)) in items.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        write_item(
            body,
            Audience::User(user),
            sent,
            *seq,
            ctx.key_prefix.as_deref(),
        );
    }
    body.push_str("]}");
    let seqs: Vec<u64> = items.iter().map(|&(_, seq)| seq).collect();
    post(ctx, conn, "/v1/internal/notifications/batch", body, &seqs).await
}

async fn ready(conn: &mut HttpConn) -> Result<(), String> {
    conn.ready()
        .await
        .map_err(|e| format!("connect: {}", e.kind()))
}

/// One notification's create JSON, its payload stamped with the send time.
fn write_item(body: &mut String, to: Audience, sent: u64, seq: u64, key_prefix: Option<&str>) {
    use std::fmt::Write;
    let _ = match to {
        Audience::User(user) => write!(body, r#"{{"user_id":"{user}","workspace":"{WORKSPACE}","#),
        Audience::Workspace(slug) => {
            write!(body, r#"{{"audience":"workspace","workspace":"{slug}","#)
        }
    };
    let _ = write!(
        body,
        r#""kind":"bench","payload":{{"sent_ns":{sent},"seq":{seq}}}"#
    );
    if let Some(prefix) = key_prefix {
        let _ = write!(body, r#","idempotency_key":"{prefix}{seq}""#);
    }
    body.push('}');
}

/// Posts a create body; on 201 marks every `seqs` as created. Returns the round trip in ns.
async fn post(
    ctx: &Ctx,
    conn: &mut HttpConn,
    path: &str,
    body: &str,
    seqs: &[u64],
) -> Result<u64, String> {
    let started = Instant::now();
    let response = conn
        .request("POST", path, &ctx.service_token, Some(body.as_bytes()))
        .await
        .map_err(|e| format!("io: {}", e.kind()))?;
    let took = started.elapsed().as_nanos() as u64;
    if response.status != 201 {
        return Err(format!("status {}", response.status));
    }
    for &seq in seqs {
        ctx.tracker.ack(seq);
    }
    Ok(took)
}

/// Opens `n` keep-alive REST connections one after the other, each proven by one
/// answered `GET /healthz`, so the timed load starts on connections notifd serves.
/// (With the old tiny_http front, a burst could wait seconds for a pool thread.)
/// Returns the connections and the slowest first answer in ms.
pub async fn open_conns(ctx: &Ctx, n: usize) -> Result<(Vec<HttpConn>, f64), String> {
    open_conns_at(ctx.args.http, n).await
}

/// `open_conns` to the notifd REST at `http` (one of several instances).
pub async fn open_conns_at(http: SocketAddr, n: usize) -> Result<(Vec<HttpConn>, f64), String> {
    let mut conns = Vec::with_capacity(n);
    let mut slowest = 0f64;
    for _ in 0..n {
        let mut conn = HttpConn::new(http);
        let took = healthz(&mut conn)
            .await
            .map_err(|e| format!("opening a REST connection: {e}"))?;
        slowest = slowest.max(took as f64 / 1e6);
        conns.push(conn);
    }
    Ok((conns, proc::round(slowest, 2)))
}

/// One `GET /healthz` answered 200 on `conn`; returns the round trip in ns.
pub async fn healthz(conn: &mut HttpConn) -> Result<u64, String> {
    let started = Instant::now();
    let response = conn
        .request("GET", "/healthz", "-", None)
        .await
        .map_err(|e| format!("GET /healthz: {e}"))?;
    if response.status != 200 {
        return Err(format!("GET /healthz: status {}", response.status));
    }
    Ok(started.elapsed().as_nanos() as u64)
}

/// Waits (bounded) until every acked create in `range` arrived; returns
/// (acked, delivered of those, delivered but not acked).
pub async fn drain(ctx: &Ctx, range: std::ops::Range<u64>, limit: Duration) -> (u64, u64, u64) {
    drain_by(|| ctx.tracker.tally(range.clone()), limit).await
}

/// `drain` over what `tally` counts, (acked, delivered of those, delivered but not
/// acked): for frames spread over several trackers.
pub async fn drain_by(tally: impl Fn() -> (u64, u64, u64), limit: Duration) -> (u64, u64, u64) {
    let started = Instant::now();
    loop {
        let tally = tally();
        if tally.1 >= tally.0 || started.elapsed() >= limit {
            return tally;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn count_map(map: &BTreeMap<String, u64>) -> Value {
    json!(map)
}

pub fn sum(map: &BTreeMap<String, u64>) -> u64 {
    map.values().sum()
}

/// Sleeps `seconds` in short steps, stopping early if notifd exits.
pub async fn hold(ctx: &Ctx, seconds: f64) -> Result<(), String> {
    let end = Instant::now() + Duration::from_secs_f64(seconds);
    while Instant::now() < end {
        if !proc::alive(ctx.pid()) {
            return Err("notifd exited".into());
        }
        let left = end.saturating_duration_since(Instant::now());
        tokio::time::sleep(left.min(Duration::from_millis(500))).await;
    }
    Ok(())
}
