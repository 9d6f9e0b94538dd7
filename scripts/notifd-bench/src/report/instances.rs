//! The report's rows for issue 15's targeted subscriptions: the instances scenario
//! (three notifd on one Redis, each user on one of them): per instance, the share
//! of the published messages its subscriber received, the bytes it received from
//! Redis against the pattern tap's, its CPU and its clients' deliveries; then the
//! run's losses and latency. report.rs prints them.

use serde_json::Value;

use super::{f, fmt, total, Row};

/// A targeted instance's share of the messages (one third) with room for the
/// state messages, which follow the users the creates picked at random.
const SHARE_MAX: f64 = 0.40;

pub(super) fn instances_rows(v: &Value) -> Vec<Row> {
    let mut rows = Vec::new();
    let mut row = |metric: String, value: String, target: &'static str, met: Option<bool>| {
        rows.push(Row {
            scenario: "instances",
            metric,
            value,
            target,
            met,
        })
    };
    let list = v["instances"].as_array().cloned().unwrap_or_default();
    let held: Vec<String> = list
        .iter()
        .map(|i| i["users_connected"].to_string())
        .collect();
    row(
        "users connected per instance".into(),
        format!("{} of {}", held.join(" / "), v["users"]),
        "all",
        Some(v["users_connected"] == v["users"]),
    );
    row(
        "rate achieved (/s)".into(),
        format!(
            "{} of {}",
            fmt(&v["achieved_rate_per_s"], 0),
            v["target_rate_per_s"]
        ),
        "",
        None,
    );
    let published = &v["published"];
    row(
        "messages published (the pattern tap's, bytes)".into(),
        match published.get("error") {
            Some(e) => format!("n/a ({})", fmt(e, 0)),
            None => format!("{} ({})", published["messages"], published["bytes"]),
        },
        "",
        None,
    );
    for i in &list {
        let name = fmt(&i["instance"], 0);
        let share = f(&i["messages_share_of_published"]);
        row(
            format!("{name}: Redis messages received (share of published)"),
            match &i["redis_messages_received"] {
                Value::Null => "n/a (pattern: every message)".into(),
                n => format!("{n} ({})", fmt(&i["messages_share_of_published"], 3)),
            },
            "~1/3",
            share.map(|s| s <= SHARE_MAX),
        );
        row(
            format!("{name}: bytes received from Redis / pattern tap's"),
            fmt(&i["redis_bytes_vs_pattern_tap"], 3),
            "~1/3",
            None,
        );
        row(
            format!("{name}: notifd CPU (s, % of a core)"),
            format!(
                "{} s, {} %",
                fmt(&i["notifd_cpu_seconds"], 2),
                fmt(&i["notifd_cpu_pct_of_core"], 1)
            ),
            "",
            None,
        );
        row(
            format!("{name}: frames received, e2e p50 / p99 (ms)"),
            format!(
                "{}, {} / {}",
                i["frames_received"],
                fmt(&i["end_to_end"]["p50_ms"], 2),
                fmt(&i["end_to_end"]["p99_ms"], 2)
            ),
            "",
            None,
        );
    }
    row(
        "notifd CPU, all three (s)".into(),
        fmt(&v["notifd_cpu_seconds_all"], 2),
        "",
        None,
    );
    row(
        "end-to-end p50 / p99 (ms)".into(),
        format!(
            "{} / {}",
            fmt(&v["end_to_end"]["p50_ms"], 2),
            fmt(&v["end_to_end"]["p99_ms"], 2)
        ),
        "",
        None,
    );
    let errors = total(&v["create_errors"]);
    row(
        "delivered, lost, create errors".into(),
        format!("{}, {}, {errors}", v["delivered"], v["lost"]),
        "lost 0",
        Some(v["lost"] == 0 && errors == 0),
    );
    rows
}
