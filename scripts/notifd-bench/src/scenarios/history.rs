//! Scenario 4: history reads against a big table. Seeds 1,000,000 notifications across
//! 10,000 users plus one heavy user with 20,000, straight into PostgreSQL, then times
//! the heavy user's page 1 and page 200, unread count (16,000 unread: read from
//! notifd's counters, checked against the seed's own count first) and mark-read, one
//! request at a time over one keep-alive connection.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::Ctx;
use crate::http::HttpConn;
use crate::proc::round;
use crate::stats::{self, Rng};

const HEAVY_USER: &str = "heavy";
const BULK_USERS: u64 = 10_000;
/// Rows per INSERT of the seed.
const SEED_CHUNK: u64 = 100_000;
/// Untimed requests before each timed series.
const WARM_UP: usize = 20;
/// The page the issue compares with page 1 (default page size 50).
const DEEP_PAGE: usize = 200;
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

    // Page 1, and the walk to page 200 (collecting ids for mark-read).
    let first = get_json(&mut conn, "/v1/notifications", &token).await?;
    check_page(&first, 1)?;
    let mut ids: Vec<String> = Vec::new();
    let mut cursor = first["cursor"].as_str().map(String::from);
    collect_ids(&first, &mut ids);
    let walk_started = Instant::now();
    for page in 2..=DEEP_PAGE {
        let Some(c) = cursor.clone() else {
            return Err(format!("the heavy user has no page {page}"));
        };
        let body = get_json(&mut conn, &format!("/v1/notifications?cursor={c}"), &token).await?;
        check_page(&body, page)?;
        collect_ids(&body, &mut ids);
        if page == DEEP_PAGE {
            break;
        }
        cursor = body["cursor"].as_str().map(String::from);
    }
    let walk_seconds = walk_started.elapsed().as_secs_f64();
    let deep_cursor = cursor.ok_or("no cursor for the deep page")?;
    let deep_path = format!("/v1/notifications?cursor={deep_cursor}");
    eprintln!(
        "notifd-bench: history: walked to page {DEEP_PAGE} in {walk_seconds:.2}s; timing {n} requests each"
    );

    let page1 = timed(
        &mut conn,
        n,
        |_| ("GET", "/v1/notifications".to_string(), None),
        &token,
    )
    .await?;
    let deep = timed(&mut conn, n, |_| ("GET", deep_path.clone(), None), &token).await?;
    let unread = timed(
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
    let mark = timed(
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

    let q = |h: &hdrhistogram::Histogram<u64>, p: f64| h.value_at_quantile(p) as f64 / 1e6;
    let ratio_p50 = q(&deep, 0.5) / q(&page1, 0.5).max(1e-9);
    let ratio_p99 = q(&deep, 0.99) / q(&page1, 0.99).max(1e-9);
    Ok(json!({
        "seed": seed,
        "requests_each": n,
        "page_size": 50,
        "deep_page": DEEP_PAGE,
        "page_walk_seconds": round(walk_seconds, 2),
        "page_1": stats::summary(&page1),
        "page_200": stats::summary(&deep),
        "page_200_vs_1_p50": round(ratio_p50, 3),
        "page_200_vs_1_p99": round(ratio_p99, 3),
        "unread_count": stats::summary(&unread),
        "mark_read_1_to_10_ids": stats::summary(&mark),
    }))
}

/// Times `n` sequential requests after `WARM_UP` untimed ones; any status but 200 is
/// an error.
async fn timed<F>(
    conn: &mut HttpConn,
    n: usize,
    mut build: F,
    token: &str,
) -> Result<hdrhistogram::Histogram<u64>, String>
where
    F: FnMut(usize) -> (&'static str, String, Option<String>),
{
    let mut h = stats::histogram();
    for i in 0..n + WARM_UP {
        let (method, path, body) = build(i);
        conn.ready().await.map_err(|e| format!("connect: {e}"))?;
        let started = Instant::now();
        let response = conn
            .request(method, &path, token, body.as_deref().map(str::as_bytes))
            .await
            .map_err(|e| format!("{method} {path}: {e}"))?;
        let took = started.elapsed().as_nanos() as u64;
        if response.status != 200 {
            return Err(format!(
                "{method} {path}: status {}: {}",
                response.status,
                String::from_utf8_lossy(&response.body)
                    .chars()
                    .take(200)
                    .collect::<String>()
            ));
        }
        if i >= WARM_UP {
            let _ = h.record(took.clamp(1, stats::HIST_MAX));
        }
    }
    Ok(h)
}

async fn get_json(conn: &mut HttpConn, path: &str, token: &str) -> Result<Value, String> {
    let response = conn
        .request("GET", path, token, None)
        .await
        .map_err(|e| format!("GET {path}: {e}"))?;
    if response.status != 200 {
        return Err(format!("GET {path}: status {}", response.status));
    }
    serde_json::from_slice(&response.body).map_err(|e| format!("GET {path}: {e}"))
}

fn check_page(body: &Value, page: usize) -> Result<(), String> {
    let count = body["notifications"].as_array().map_or(0, Vec::len);
    if count != 50 {
        return Err(format!("page {page} holds {count} notifications, not 50"));
    }
    Ok(())
}

fn collect_ids(body: &Value, ids: &mut Vec<String>) {
    if let Some(list) = body["notifications"].as_array() {
        ids.extend(
            list.iter()
                .filter_map(|n| n["id"].as_str().map(String::from)),
        );
    }
}

/// Seeds the table in SQL (unless this database already has the heavy user). Ids are
/// UUIDv7 whose first 48 bits are the creation millisecond, and `created_at` is exactly
/// that millisecond, as notifd itself stores them.
async fn seed(ctx: &Ctx) -> Result<Value, String> {
    let (client, connection) =
        tokio_postgres::connect(&ctx.args.database_url, tokio_postgres::NoTls)
            .await
            .map_err(|e| format!("cannot connect to PostgreSQL: {e}"))?;
    let driver = tokio::spawn(connection);
    let existing: i64 = client
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
        client
            .batch_execute("SET synchronous_commit = off")
            .await
            .map_err(|e| e.to_string())?;
        let now_ms = (stats::now_ns() / 1_000_000) as i64;
        // Bulk rows: 2 ms apart, ending an hour ago; the heavy user: one a minute.
        let bulk_base = now_ms - 3_600_000 - bulk as i64 * 2;
        let heavy_base = now_ms - 3_600_000 - heavy as i64 * 60_000;
        let mut from = 0u64;
        while from < bulk {
            let to = (from + SEED_CHUNK).min(bulk) - 1;
            let sql = insert_sql(
                &format!("'hist' || (g % {BULK_USERS})"),
                bulk_base,
                2,
                from,
                to,
                "g % 2 = 0",
                "b",
            );
            client
                .batch_execute(&sql)
                .await
                .map_err(|e| format!("seed: {e}"))?;
            from = to + 1;
            eprintln!(
                "notifd-bench: history: seeded {from} of {bulk} rows ({:.0}s)",
                started.elapsed().as_secs_f64()
            );
        }
        let sql = insert_sql(
            &format!("'{HEAVY_USER}'"),
            heavy_base,
            60_000,
            0,
            heavy.max(1) - 1,
            "g % 5 = 0",
            "h",
        );
        client
            .batch_execute(&sql)
            .await
            .map_err(|e| format!("seed heavy user: {e}"))?;
        eprintln!("notifd-bench: history: seeded the heavy user; VACUUM ANALYZE");
        client
            .batch_execute("VACUUM (ANALYZE) notifications")
            .await
            .map_err(|e| format!("vacuum: {e}"))?;
    }
    let seed_seconds = started.elapsed().as_secs_f64();
    let row = client
        .query_one(
            "SELECT count(*), pg_total_relation_size('notifications'),
                    count(*) FILTER (WHERE user_id = $1),
                    count(*) FILTER (WHERE user_id = $1 AND read_at IS NULL)
             FROM notifications",
            &[&HEAVY_USER],
        )
        .await
        .map_err(|e| format!("count: {e}"))?;
    // Ids and created_at agree: the first 48 bits of the id are created_at's ms.
    let mismatched: i64 = client
        .query_one(
            "SELECT count(*) FROM (SELECT id, created_at FROM notifications WHERE user_id = $1 LIMIT 1000) s
             WHERE ('x' || substr(replace(id::text, '-', ''), 1, 12))::bit(48)::bigint
                   <> (extract(epoch FROM created_at) * 1000)::bigint",
            &[&HEAVY_USER],
        )
        .await
        .map_err(|e| format!("check ids: {e}"))?
        .get(0);
    drop(client);
    driver.abort();
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

/// One INSERT … SELECT over generate_series(from, to). UUIDv7: 48 bits of ms, version
/// 7, 12 random bits, variant 10xx, 62 random bits (from md5 of the row number).
fn insert_sql(
    user: &str,
    base_ms: i64,
    step_ms: i64,
    from: u64,
    to: u64,
    read: &str,
    salt: &str,
) -> String {
    format!(
        "INSERT INTO notifications
            (id, user_id, workspace, kind, type, title, message, payload, read_at, created_at, updated_at)
         SELECT (lpad(to_hex(t.ms), 12, '0') || '7' || substr(t.h, 1, 3)
                 || substr('89ab', 1 + (t.g % 4)::int, 1) || substr(t.h, 4, 15))::uuid,
                t.user_id,
                CASE WHEN t.g % 10 = 0 THEN NULL ELSE 'w' END,
                (ARRAY['JOB_FAILED','record_created','comment.added','deploy:done','invoice.paid'])[1 + (t.g % 5)::int],
                (ARRAY['info','success','warning','error','alert'])[1 + (t.g % 7 % 5)::int],
                'Seeded notification ' || t.g,
                'history benchmark row ' || t.g || ' for ' || t.user_id,
                jsonb_build_object('seed', t.g, 'source', 'notifd-bench'),
                CASE WHEN t.read THEN t.at + interval '1 minute' END,
                t.at,
                CASE WHEN t.read THEN t.at + interval '1 minute' ELSE t.at END
         FROM (SELECT g,
                      {user} AS user_id,
                      {base_ms}::bigint + g * {step_ms} AS ms,
                      timestamptz 'epoch' + ({base_ms}::bigint + g * {step_ms}) * interval '1 millisecond' AS at,
                      md5('{salt}' || g::text) AS h,
                      ({read}) AS read
               FROM generate_series({from}::bigint, {to}::bigint) AS g) t"
    )
}
