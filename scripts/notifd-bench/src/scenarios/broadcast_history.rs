//! Scenario broadcast-history (issue 13): list depth with a workspace's broadcasts
//! merged into a user's list. Seeds BENCH_BROADCAST_ROWS (100,000) workspace-audience
//! rows for one workspace, one a second ending an hour ago, and `OWN_ROWS` of one
//! user's own in that workspace spread evenly among them, straight into PostgreSQL
//! (seed.rs). Checks the user's unread count on the workspace (notifd's counters,
//! moved by the seed's INSERTs) against the rows, walks to page 200 with a token
//! granting the workspace, then times page 1 and page 200 (pages.rs),
//! BENCH_HISTORY_REQUESTS each, one at a time over one keep-alive connection.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::pages::{self, get_json, DEEP_PAGE};
use super::seed::{self, Series};
use super::Ctx;
use crate::http::HttpConn;
use crate::proc::round;
use crate::stats;

/// The scenario's workspace: no other scenario's rows are on it.
const WORKSPACE: &str = "bench-broadcast-history";
/// The user who reads the list: granted the workspace, with rows of their own in it.
const READER: &str = "bh-reader";
/// The reader's own rows, half of them read.
const OWN_ROWS: u64 = 20;
/// Between two seeded broadcasts.
const STEP_MS: i64 = 1_000;
/// Longest seed, all statements together.
const SEED_LIMIT: Duration = Duration::from_secs(600);

pub async fn run(ctx: &Arc<Ctx>) -> Result<Value, String> {
    let seed = tokio::time::timeout(SEED_LIMIT, seed(ctx))
        .await
        .map_err(|_| format!("seeding took longer than {}s", SEED_LIMIT.as_secs()))??;

    let token = ctx.minter.user_in(READER, WORKSPACE);
    let mut conn = HttpConn::new(ctx.args.http);
    let n = ctx.args.history_requests.max(1);

    // Every broadcast is unread for the reader (no state row), plus their own unread.
    let path = format!("/v1/notifications/unread-count?workspace={WORKSPACE}");
    let counted = get_json(&mut conn, &path, &token).await?;
    if counted["unread"] != seed["reader_unread"] {
        return Err(format!(
            "unread-count says {} but the reader has {} unread (broadcasts and own rows)",
            counted["unread"], seed["reader_unread"]
        ));
    }

    let mut seen = Seen::default();
    let walk = pages::walk(&mut conn, &token, |page| seen.count(page)).await?;
    if seen.broadcasts == 0 || seen.other > 0 {
        return Err(format!(
            "the walk to page {DEEP_PAGE} saw {} broadcasts of {WORKSPACE}, {} own rows and \
             {} other rows",
            seen.broadcasts, seen.own, seen.other
        ));
    }
    eprintln!(
        "notifd-bench: broadcast-history: walked to page {DEEP_PAGE} in {:.2}s ({} own rows \
         among {} broadcasts); timing {n} requests each",
        walk.seconds, seen.own, seen.broadcasts
    );
    let mut result = pages::page_1_vs_deep(&mut conn, n, &walk.deep_path, &token).await?;
    if let Value::Object(map) = &mut result {
        map.insert("seed".into(), seed);
        map.insert("page_walk_seconds".into(), json!(round(walk.seconds, 2)));
        map.insert(
            "walk_rows".into(),
            json!({"broadcasts": seen.broadcasts, "own": seen.own}),
        );
    }
    Ok(result)
}

/// The rows the walk saw, by audience.
#[derive(Default)]
struct Seen {
    broadcasts: u64,
    own: u64,
    /// Neither: the list showed something it should not have.
    other: u64,
}

impl Seen {
    fn count(&mut self, page: &Value) {
        for n in page["notifications"].as_array().into_iter().flatten() {
            let counter = match (n["audience"].as_str(), n["user_id"].as_str()) {
                (Some("workspace"), None) if n["workspace"] == WORKSPACE => &mut self.broadcasts,
                (Some("user"), Some(READER)) => &mut self.own,
                _ => &mut self.other,
            };
            *counter += 1;
        }
    }
}

/// Seeds the workspace's broadcasts and the reader's own rows (unless this database
/// already has the broadcasts).
async fn seed(ctx: &Ctx) -> Result<Value, String> {
    let pg = seed::connect(&ctx.args.database_url).await?;
    let existing: i64 = pg
        .client
        .query_one(
            "SELECT count(*) FROM notifications WHERE user_id IS NULL AND workspace = $1",
            &[&WORKSPACE],
        )
        .await
        .map_err(|e| format!("count: {e}"))?
        .get(0);
    let rows = ctx.args.broadcast_rows.max(1);
    let started = Instant::now();
    if existing == 0 {
        pg.fast_commits().await?;
        let now_ms = (stats::now_ns() / 1_000_000) as i64;
        let base_ms = now_ms - 3_600_000 - rows as i64 * STEP_MS;
        let workspace = format!("'{WORKSPACE}'");
        let broadcasts = Series {
            user: "NULL",
            workspace: &workspace,
            base_ms,
            step_ms: STEP_MS,
            from: 0,
            to: rows - 1,
            read: "false",
            salt: "bw",
        };
        pg.insert(&broadcasts, "the workspace's broadcasts").await?;
        // Evenly among the broadcasts, half a step off theirs (no equal created_at).
        let reader = format!("'{READER}'");
        let own_step = (rows as i64 * STEP_MS / OWN_ROWS as i64).max(STEP_MS);
        let own = Series {
            user: &reader,
            base_ms: base_ms + own_step / 2 + STEP_MS / 2,
            step_ms: own_step,
            to: OWN_ROWS - 1,
            read: "g % 2 = 0",
            salt: "bo",
            ..broadcasts
        };
        pg.insert(&own, "the reader's own rows").await?;
        eprintln!("notifd-bench: broadcast-history: VACUUM ANALYZE");
        pg.vacuum().await?;
    }
    let seed_seconds = started.elapsed().as_secs_f64();
    let row = pg
        .client
        .query_one(
            "SELECT count(*) FILTER (WHERE user_id IS NULL),
                    count(*) FILTER (WHERE user_id = $2),
                    count(*) FILTER (WHERE user_id = $2 AND read_at IS NULL)
             FROM notifications WHERE workspace = $1",
            &[&WORKSPACE, &READER],
        )
        .await
        .map_err(|e| format!("count: {e}"))?;
    let mismatched = pg.mismatched_ids("workspace = $1", &[&WORKSPACE]).await?;
    drop(pg);
    if mismatched != 0 {
        return Err(format!("{mismatched} seeded ids disagree with created_at"));
    }
    let broadcasts: i64 = row.get(0);
    let own: i64 = row.get(1);
    let own_unread: i64 = row.get(2);
    Ok(json!({
        "seeded_now": existing == 0,
        "seed_seconds": round(seed_seconds, 1),
        "workspace": WORKSPACE,
        "workspace_rows": broadcasts,
        "reader_own_rows": own,
        "reader_unread": broadcasts + own_unread,
    }))
}
