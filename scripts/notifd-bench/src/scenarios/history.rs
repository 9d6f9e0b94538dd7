//! Scenario 4: history reads against a big table. Seeds 1,000,000 notifications across
//! 10,000 users plus one heavy user with 20,000, straight into PostgreSQL, then times
//! the heavy user's page 1 and page 200, unread count (16,000 unread: read from
//! notifd's counters, checked against the seed's own count first) and mark-read, one
//! request at a time over one keep-alive connection.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::pages::{self, get_json, DEEP_PAGE, WARM_UP};
use super::seed::{self, Series};
use super::Ctx;
use crate::http::HttpConn;
use crate::proc::round;
use crate::stats::{self, Rng};

const HEAVY_USER: &str = "heavy";
const BULK_USERS: u64 = 10_000;
/// Longest seed, all statements together.
const SEED_LIMIT: Duration = Duration::from_secs(600);

pub async fn run(ctx: &Arc<Ctx>) -> Result<Value, String> {
    let seed = tokio::time::timeout(SEED_LIMIT, seed(ctx))
        .await
        .map_err(|_| format!("seeding took longer than {}s", SEED_LIMIT.as_secs()))??;

    let token = ctx.minter.user(HEAVY_USER);
    let mut conn = HttpConn::new(ctx.args.http);
    let n = ctx.args.history_requests.max(1);

    // The counters the seed's INSERTs moved (through notifd's triggers) say what a
    // count over the rows says, before anything is timed.
    let counted = get_json(&mut conn, "/v1/notifications/unread-count", &token).await?;
    if counted["unread"] != seed["heavy_user_unread"] {
        return Err(format!(
            "unread-count says {} but the heavy user has {} unread rows",
            counted["unread"], seed["heavy_user_unread"]
        ));
    }

    // The walk to page 200, collecting ids for mark-read.
    let mut ids: Vec<String> = Vec::new();
    let walk = pages::walk(&mut conn, &token, |page| collect_ids(page, &mut ids)).await?;
    eprintln!(
        "notifd-bench: history: walked to page {DEEP_PAGE} in {:.2}s; timing {n} requests each",
        walk.seconds
    );

    let mut result = pages::page_1_vs_deep(&mut conn, n, &walk.deep_path, &token).await?;
    let unread = pages::timed(
        &mut conn,
        n,
        |_| ("GET", "/v1/notifications/unread-count".to_string(), None),
        &token,
    )
    .await?;
    let mut rng = Rng::new(stats::now_ns());
    let picks: Vec<String> = (0..n + WARM_UP)
        .map(|i| {
            let k = 1 + i % 10;
            let chosen: Vec<&String> = (0..k)
                .map(|_| &ids[rng.below(ids.len() as u64) as usize])
                .collect();
            json!({ "ids": chosen }).to_string()
        })
        .collect();
    let mark = pages::timed(
        &mut conn,
        n,
        |i| {
            (
                "PATCH",
                "/v1/notifications/read".to_string(),
                Some(picks[i].clone()),
            )
        },
        &token,
    )
    .await?;

    if let Value::Object(map) = &mut result {
        map.insert("seed".into(), seed);
        map.insert("page_walk_seconds".into(), json!(round(walk.seconds, 2)));
        map.insert("unread_count".into(), stats::summary(&unread));
        map.insert("mark_read_1_to_10_ids".into(), stats::summary(&mark));
    }
    Ok(result)
}

fn collect_ids(body: &Value, ids: &mut Vec<String>) {
    if let Some(list) = body["notifications"].as_array() {
        ids.extend(
            list.iter()
                .filter_map(|n| n["id"].as_str().map(String::from)),
        );
    }
}

/// Seeds the table in SQL (unless this database already has the heavy user): the
/// bulk rows 2 ms apart, the heavy user's one a minute, all ending an hour ago.
async fn seed(ctx: &Ctx) -> Result<Value, String> {
    let pg = seed::connect(&ctx.args.database_url).await?;
    let existing: i64 = pg
        .client
        .query_one(
            "SELECT count(*) FROM notifications WHERE user_id = $1",
            &[&HEAVY_USER],
        )
        .await
        .map_err(|e| format!("count: {e}"))?
        .get(0);
    let bulk = ctx.args.history_rows;
    let heavy = ctx.args.heavy_rows;
    let started = Instant::now();
    if existing == 0 {
        pg.fast_commits().await?;
        let now_ms = (stats::now_ns() / 1_000_000) as i64;
        // One in ten rows is user-level (no workspace).
        let workspace = "CASE WHEN t.g % 10 = 0 THEN NULL ELSE 'w' END";
        if bulk > 0 {
            let bulk_user = format!("'hist' || (g % {BULK_USERS})");
            let rows = Series {
                user: &bulk_user,
                workspace,
                base_ms: now_ms - 3_600_000 - bulk as i64 * 2,
                step_ms: 2,
                from: 0,
                to: bulk - 1,
                read: "g % 2 = 0",
                salt: "b",
            };
            pg.insert(&rows, "history's bulk users").await?;
        }
        let heavy_user = format!("'{HEAVY_USER}'");
        let rows = Series {
            user: &heavy_user,
            workspace,
            base_ms: now_ms - 3_600_000 - heavy as i64 * 60_000,
            step_ms: 60_000,
            from: 0,
            to: heavy.max(1) - 1,
            read: "g % 5 = 0",
            salt: "h",
        };
        pg.insert(&rows, "history's heavy user").await?;
        eprintln!("notifd-bench: history: VACUUM ANALYZE");
        pg.vacuum().await?;
    }
    let seed_seconds = started.elapsed().as_secs_f64();
    let row = pg
        .client
        .query_one(
            "SELECT count(*), pg_total_relation_size('notifications'),
                    count(*) FILTER (WHERE user_id = $1),
                    count(*) FILTER (WHERE user_id = $1 AND read_at IS NULL)
             FROM notifications",
            &[&HEAVY_USER],
        )
        .await
        .map_err(|e| format!("count: {e}"))?;
    let mismatched = pg.mismatched_ids("user_id = $1", &[&HEAVY_USER]).await?;
    drop(pg);
    if mismatched != 0 {
        return Err(format!("{mismatched} seeded ids disagree with created_at"));
    }
    let total: i64 = row.get(0);
    let bytes: i64 = row.get(1);
    let heavy_rows: i64 = row.get(2);
    let heavy_unread: i64 = row.get(3);
    Ok(json!({
        "seeded_now": existing == 0,
        "seed_seconds": round(seed_seconds, 1),
        "rows_total": total,
        "bulk_users": BULK_USERS,
        "heavy_user_rows": heavy_rows,
        "heavy_user_unread": heavy_unread,
        "table_mib": round(bytes as f64 / 1048576.0, 1),
    }))
}
