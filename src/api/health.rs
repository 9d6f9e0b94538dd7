//! `/healthz` (the process runs) and `/readyz` (PostgreSQL and Redis answer).

use serde_json::json;

use super::{Ctx, READY_TIMEOUT};
use crate::error::Error;
use crate::http::Response;

/// 200 while every essential thread runs; 503 naming the ones that stopped, in the
/// moment before the process exits for its restart (`supervise`).
pub fn healthz(_ctx: &Ctx) -> Result<Response, Error> {
    let down = crate::supervise::down_parts();
    if down.is_empty() {
        return Ok(Response::ok(&json!({"status": "ok"})));
    }
    Ok(Response::json(
        503,
        &json!({
            "status": "failing",
            "down": down,
            "error": {"code": "service_unavailable", "message": format!("essential threads stopped: {}", down.join(", "))},
        }),
    ))
}

/// Panics, for the tests of panic containment; a plain 404 unless enabled.
pub fn test_panic(ctx: &Ctx) -> Result<Response, Error> {
    if !ctx.test_faults {
        return Err(Error::NotFound);
    }
    panic!("the test panic route was called");
}

/// Prometheus text format 0.0.4.
pub fn metrics(ctx: &Ctx) -> Result<Response, Error> {
    // Moved to a private address: the public port does not have it.
    if !ctx.metrics_on_rest {
        return Err(Error::NotFound);
    }
    let mut reply = Response::json_text(200, crate::metrics::METRICS.render());
    reply.content_type = "text/plain; version=0.0.4; charset=utf-8";
    Ok(reply)
}

/// 200 when both dependencies answer; otherwise 503 naming each one that does not.
pub fn readyz(ctx: &Ctx) -> Result<Response, Error> {
    let postgresql = ctx.store.ping(READY_TIMEOUT);
    let redis = ctx.publisher.ping(READY_TIMEOUT);
    let state = |result: &Result<(), Error>| if result.is_ok() { "up" } else { "down" };
    let down: Vec<&str> = [("postgresql", &postgresql), ("redis", &redis)]
        .iter()
        .filter(|(_, r)| r.is_err())
        .map(|(name, _)| *name)
        .collect();
    let checks = json!({"postgresql": state(&postgresql), "redis": state(&redis)});
    if down.is_empty() {
        return Ok(Response::ok(&json!({"status": "ready", "checks": checks})));
    }
    Ok(Response::json(
        503,
        &json!({
            "status": "unavailable",
            "checks": checks,
            "error": {"code": "service_unavailable", "message": format!("{} unavailable", down.join(" and "))},
        }),
    ))
}
