//! Scenario 5 (issue 9): 10,000 idle keep-alive REST connections held while other
//! clients use the API. Each idle connection is opened and proven by one answered
//! `GET /healthz`, then left silent; meanwhile one client times `/healthz` and one
//! times creates, each at a steady pace, for the hold. At the end every idle
//! connection must still be open and still served.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::Ctx;
use crate::http::HttpConn;
use crate::proc::{self, round};
use crate::stats;

const HEALTH: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
/// Requests per second of each timed client.
const PACE_PER_SECOND: u64 = 200;
/// Longest wait for one idle connection's answer.
const ANSWER_LIMIT: Duration = Duration::from_secs(15);

pub async fn run(ctx: &Arc<Ctx>) -> Result<Value, String> {
    let n = ctx.args.idle_rest;
    let open_started = Instant::now();
    let mut idle = Vec::with_capacity(n);
    for i in 0..n {
        let mut stream = TcpStream::connect(ctx.args.http)
            .await
            .map_err(|e| format!("idle connection {i}: connect: {e}"))?;
        health_on(&mut stream)
            .await
            .map_err(|e| format!("idle connection {i}: {e}"))?;
        idle.push(stream);
    }
    let open_seconds = open_started.elapsed().as_secs_f64();
    eprintln!("notifd-bench: idle-rest: {n} keep-alive connections open in {open_seconds:.1}s");
    let held = proc::sample(ctx.pid())?;

    let window = proc::Window::start(ctx.pid())?;
    let seconds = ctx.args.seconds as f64;
    let health = tokio::spawn(timed(ctx.clone(), seconds, false));
    let creates = tokio::spawn(timed(ctx.clone(), seconds, true));
    let health = health.await.map_err(|e| e.to_string())??;
    let creates = creates.await.map_err(|e| e.to_string())??;
    let cpu = window.finish()?;

    // Every idle connection is still open and still answers.
    let mut still_served = 0;
    for stream in &mut idle {
        if health_on(stream).await.is_ok() {
            still_served += 1;
        }
    }
    Ok(json!({
        "idle_connections": n,
        "open_seconds": round(open_seconds, 1),
        "still_served": still_served,
        "notifd_fds": proc::fds(ctx.pid()),
        "notifd_threads": held.threads,
        "notifd_rss_mib": round(held.rss_kib as f64 / 1024.0, 1),
        "healthz": stats::summary(&health),
        "create": stats::summary(&creates),
        "cpu": cpu.to_json(),
    }))
}

/// One `GET /healthz` on a raw keep-alive connection, read to the end of its body.
async fn health_on(stream: &mut TcpStream) -> Result<(), String> {
    stream.write_all(HEALTH).await.map_err(|e| e.to_string())?;
    let mut got = Vec::with_capacity(256);
    let mut chunk = [0u8; 512];
    let read = async {
        // The answer is small and has a fixed body: read until its closing brace.
        while !got.ends_with(b"}") {
            let n = stream.read(&mut chunk).await.map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("closed by notifd".to_string());
            }
            got.extend_from_slice(&chunk[..n]);
        }
        Ok(())
    };
    tokio::time::timeout(ANSWER_LIMIT, read)
        .await
        .map_err(|_| "no answer in time".to_string())??;
    if !got.starts_with(b"HTTP/1.1 200 ") {
        return Err(format!("answer: {}", String::from_utf8_lossy(&got)));
    }
    Ok(())
}

/// Times `/healthz` (or creates) at `PACE_PER_SECOND` for `seconds`.
async fn timed(
    ctx: Arc<Ctx>,
    seconds: f64,
    create: bool,
) -> Result<hdrhistogram::Histogram<u64>, String> {
    let mut conn = HttpConn::new(ctx.args.http);
    let mut histogram = stats::histogram();
    let step = Duration::from_nanos(1_000_000_000 / PACE_PER_SECOND);
    let end = Instant::now() + Duration::from_secs_f64(seconds);
    let mut next = Instant::now();
    let mut i = 0u64;
    while Instant::now() < end {
        tokio::time::sleep_until(next.into()).await;
        next += step;
        let took = if create {
            let seq = ctx.seq().ok_or("sequence numbers used up")?;
            super::create(&ctx, &mut conn, &format!("idle-{}", i % 100), seq).await?
        } else {
            super::healthz(&mut conn).await?
        };
        let _ = histogram.record(took.max(1));
        i += 1;
    }
    Ok(histogram)
}
