//! The list as a client reads it, for the read scenarios (history, broadcast-history):
//! one `GET` answered 200 as JSON, the 50-row check, the walk by cursors to page 200,
//! and a request timed many times over one keep-alive connection. Both scenarios time
//! page 1 against page 200 with it and report them under the same keys, which the
//! report reads.

use std::time::Instant;

use hdrhistogram::Histogram;
use serde_json::{json, Value};

use crate::http::HttpConn;
use crate::proc::round;
use crate::stats;

/// Page 1 of the list, 50 rows (notifd's default page, named so the walk's pages
/// and the timed ones are alike).
pub const FIRST_PAGE: &str = "/v1/notifications?limit=50";
const PAGE_SIZE: usize = 50;
/// The page the issues compare with page 1.
pub const DEEP_PAGE: usize = 200;
/// Untimed requests before each timed series.
pub const WARM_UP: usize = 20;

/// Where the walk to `DEEP_PAGE` ended.
pub struct Walk {
    /// The request of page `DEEP_PAGE` (page 199's cursor).
    pub deep_path: String,
    pub seconds: f64,
}

/// Walks from page 1 to page `DEEP_PAGE` by following each page's cursor, every page
/// 50 rows, and hands each page's body to `each`.
pub async fn walk(
    conn: &mut HttpConn,
    token: &str,
    mut each: impl FnMut(&Value),
) -> Result<Walk, String> {
    let started = Instant::now();
    let mut path = FIRST_PAGE.to_string();
    for page in 1..=DEEP_PAGE {
        let body = get_json(conn, &path, token).await?;
        check_page(&body, page)?;
        each(&body);
        if page == DEEP_PAGE {
            break;
        }
        let Some(cursor) = body["cursor"].as_str() else {
            return Err(format!(
                "page {page} has no cursor: there is no page {}",
                page + 1
            ));
        };
        path = format!("{FIRST_PAGE}&cursor={cursor}");
    }
    Ok(Walk {
        deep_path: path,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Times `n` sequential requests after `WARM_UP` untimed ones; any status but 200 is
/// an error.
pub async fn timed<F>(
    conn: &mut HttpConn,
    n: usize,
    mut build: F,
    token: &str,
) -> Result<Histogram<u64>, String>
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

/// Times page 1 and page `DEEP_PAGE` (at `deep_path`), `n` requests each; returns
/// them as the report reads them: `page_1`, `page_200` and the ratios of their p50
/// and p99.
pub async fn page_1_vs_deep(
    conn: &mut HttpConn,
    n: usize,
    deep_path: &str,
    token: &str,
) -> Result<Value, String> {
    let get = |path: &str| ("GET", path.to_string(), None);
    let page1 = timed(conn, n, |_| get(FIRST_PAGE), token).await?;
    let deep = timed(conn, n, |_| get(deep_path), token).await?;
    let q = |h: &Histogram<u64>, p: f64| h.value_at_quantile(p) as f64 / 1e6;
    let ratio = |p: f64| round(q(&deep, p) / q(&page1, p).max(1e-9), 3);
    Ok(json!({
        "requests_each": n,
        "page_size": PAGE_SIZE,
        "deep_page": DEEP_PAGE,
        "page_1": stats::summary(&page1),
        "page_200": stats::summary(&deep),
        "page_200_vs_1_p50": ratio(0.5),
        "page_200_vs_1_p99": ratio(0.99),
    }))
}

pub async fn get_json(conn: &mut HttpConn, path: &str, token: &str) -> Result<Value, String> {
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
    if count != PAGE_SIZE {
        return Err(format!(
            "page {page} holds {count} notifications, not {PAGE_SIZE}"
        ));
    }
    Ok(())
}
