//! The report's rows for the workspace audience (issue 13): the broadcast scenario
//! (time from a broadcast's create to its last client's frame, frames lost, notifd's
//! CPU) and broadcast-history (page 1 against page 200 with the broadcasts merged
//! into the list). report.rs prints them.

use serde_json::Value;

use super::{depth_rows, f, fmt, total, Row};

/// A `p50 / p99` pair of a summary, in ms.
fn p50_p99(h: &Value) -> String {
    format!("{} / {}", fmt(&h["p50_ms"], 1), fmt(&h["p99_ms"], 1))
}

pub(super) fn broadcast_rows(v: &Value) -> Vec<Row> {
    let mut rows = Vec::new();
    let mut row = |metric: &str, value: String, target: &'static str, met: Option<bool>| {
        rows.push(Row {
            scenario: "broadcast",
            metric: metric.to_string(),
            value,
            target,
            met,
        })
    };
    let connected = v["users_connected"].as_u64().unwrap_or(0);
    row(
        "clients on the workspace (warm-up reached)",
        format!(
            "{connected} of {} ({})",
            v["users_asked"], v["warm_up"]["reached"]
        ),
        "all",
        Some(v["users_asked"] == connected && v["warm_up"]["reached"] == connected),
    );
    row(
        "broadcasts timed, one at a time",
        format!("{} of {}", v["broadcasts_sent"], v["broadcasts_asked"]),
        "",
        None,
    );
    let last = &v["time_to_last_frame"];
    let complete = v["incomplete_broadcasts"] == 0;
    row(
        "create -> last frame p50 (ms)",
        fmt(&last["p50_ms"], 1),
        "",
        None,
    );
    row(
        "create -> last frame p99 (ms)",
        fmt(&last["p99_ms"], 1),
        "<= 1000",
        f(&last["p99_ms"]).map(|x| x <= 1000.0 && complete),
    );
    row(
        "create -> last frame max (ms)",
        fmt(&last["max_ms"], 1),
        "",
        None,
    );
    row(
        "create -> first frame p50 / p99 (ms)",
        p50_p99(&v["time_to_first_frame"]),
        "",
        None,
    );
    row(
        "frames lost (of expected = clients x broadcasts)",
        format!("{} of {}", v["frames_lost"], v["expected_frames"]),
        "0",
        Some(v["frames_lost"] == 0),
    );
    row(
        "duplicates, WebSockets dropped",
        format!("{}, {}", v["duplicates"], v["ws_dropped"]),
        "0, 0",
        Some(v["duplicates"] == 0 && v["ws_dropped"] == 0),
    );
    let errors = total(&v["create_errors"]);
    row("create errors", errors.to_string(), "0", Some(errors == 0));
    let cpu = &v["cpu"];
    row(
        "notifd CPU over the broadcasts (s, % of a core)",
        format!(
            "{} s over {} s, {} %",
            fmt(&v["notifd_cpu_seconds"], 2),
            fmt(&cpu["seconds"], 2),
            fmt(&cpu["notifd_cpu_pct_of_core"], 1)
        ),
        "report",
        None,
    );
    row(
        "notifd CPU per broadcast (ms) / per frame (us)",
        format!(
            "{} / {}",
            fmt(&v["notifd_cpu_ms_per_broadcast"], 1),
            fmt(&v["notifd_cpu_us_per_frame"], 2)
        ),
        "",
        None,
    );
    row(
        "CPU % of a core postgres / redis / generator / other",
        format!(
            "{} / {} / {} / {}",
            fmt(&cpu["postgres_cpu_pct_of_core"], 0),
            fmt(&cpu["redis_cpu_pct_of_core"], 0),
            fmt(&cpu["generator_cpu_pct_of_core"], 0),
            fmt(&cpu["other_cpu_pct_of_core"], 0)
        ),
        "",
        None,
    );
    row(
        "REST create p50 / p99 (ms)",
        p50_p99(&v["rest_create"]),
        "",
        None,
    );
    rows
}

pub(super) fn history_rows(v: &Value) -> Vec<Row> {
    let seed = &v["seed"];
    let mut rows = vec![Row {
        scenario: "broadcast-history",
        metric: "seeded broadcasts (reader's own rows)".into(),
        value: format!("{} ({})", seed["workspace_rows"], seed["reader_own_rows"]),
        target: "100,000 (a few)",
        met: None,
    }];
    rows.extend(depth_rows("broadcast-history", v));
    rows.push(Row {
        scenario: "broadcast-history",
        metric: "walk to page 200 (s)".into(),
        value: fmt(&v["page_walk_seconds"], 2),
        target: "",
        met: None,
    });
    rows
}
