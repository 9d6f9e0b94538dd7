//! The report's rows for the event protocol (issue 12): the state-fanout scenario,
//! and the latency scenario's end-to-end figures with v1 clients beside plain ones
//! (when one report holds both `latency` and `latency-v1`). report.rs prints them.

use serde_json::Value;

use super::{fmt, total, Row};

/// A `p50 / p99` pair of a summary, in ms.
fn p50_p99(h: &Value) -> String {
    format!("{} / {}", fmt(&h["p50_ms"], 3), fmt(&h["p99_ms"], 3))
}

pub(super) fn fanout_rows(v: &Value) -> Vec<Row> {
    let mut rows = Vec::new();
    let mut row = |metric: &str, value: String, target: &'static str, met: Option<bool>| {
        rows.push(Row {
            scenario: "state-fanout",
            metric: metric.to_string(),
            value,
            target,
            met,
        })
    };
    row(
        "v1 clients on B (notifications seen on B)",
        format!(
            "{} of {} ({})",
            v["users_connected"], v["users"], v["notifications_seen_on_b"]
        ),
        "all",
        Some(v["users_connected"] == v["users"] && v["notifications_seen_on_b"] == v["users"]),
    );
    row(
        "marks through A: rate achieved (/s)",
        format!(
            "{} of {}",
            fmt(&v["achieved_rate_per_s"], 0),
            v["target_rate_per_s"]
        ),
        "",
        None,
    );
    let f = &v["answer_to_updated"];
    row(
        "fan-out 200 on A -> updated on B p50 / p90 (ms)",
        format!("{} / {}", fmt(&f["p50_ms"], 3), fmt(&f["p90_ms"], 3)),
        "report",
        None,
    );
    row(
        "fan-out 200 on A -> updated on B p99 / max (ms)",
        format!("{} / {}", fmt(&f["p99_ms"], 3), fmt(&f["max_ms"], 3)),
        "report",
        None,
    );
    row(
        "fan-out PATCH sent -> updated on B p50 / p99 (ms)",
        p50_p99(&v["sent_to_updated"]),
        "",
        None,
    );
    row(
        "updated on B before A's 200 was read",
        fmt(&v["updated_before_answer"], 0),
        "",
        None,
    );
    row(
        "lost (no updated within 5 s of the 200)",
        fmt(&v["lost"], 0),
        "0",
        Some(v["lost"] == 0),
    );
    let errors = total(&v["mark_errors"]);
    row("mark errors", errors.to_string(), "0", Some(errors == 0));
    row(
        "updated frames naming no mark in flight",
        fmt(&v["unmatched_updated"], 0),
        "0",
        Some(v["unmatched_updated"] == 0),
    );
    row(
        "mark-read PATCH p50 / p99 (ms)",
        p50_p99(&v["mark_read"]),
        "report",
        None,
    );
    row(
        "mark-unread PATCH p50 / p99 (ms)",
        p50_p99(&v["mark_unread"]),
        "",
        None,
    );
    row(
        "notifd CPU A / B (% of a core)",
        format!(
            "{} / {}",
            fmt(&v["cpu_a"]["notifd_cpu_pct_of_core"], 1),
            fmt(&v["cpu_b"]["notifd_cpu_pct_of_core"], 1)
        ),
        "",
        None,
    );
    rows
}

/// The latency scenario's end-to-end p50 / p99 with v1 clients beside plain ones.
pub(super) fn latency_rows(plain: &Value, v1: &Value) -> Vec<Row> {
    let (p, e) = (&plain["end_to_end"], &v1["end_to_end"]);
    let ratio = match (e["p99_ms"].as_f64(), p["p99_ms"].as_f64()) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    };
    vec![
        Row {
            scenario: "latency-v1",
            metric: "end-to-end p50 / p99 (ms), plain vs v1".into(),
            value: format!("{} vs {}", p50_p99(p), p50_p99(e)),
            target: "v1 unchanged within noise",
            met: None,
        },
        Row {
            scenario: "latency-v1",
            metric: "end-to-end p99 v1 / plain".into(),
            value: ratio.map_or("-".into(), |r| format!("x{r:.2}")),
            target: "~x1",
            met: None,
        },
    ]
}
