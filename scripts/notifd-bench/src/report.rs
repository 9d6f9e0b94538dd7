//! Merges the per-scenario results into one JSON report and prints the table, every
//! figure beside its target (issue 4's; events.rs, broadcast.rs and instances.rs
//! hold the rows of issues 12, 13 and 15).

use std::fs;
use std::path::Path;

use serde_json::{json, Map, Value};

use crate::ReportArgs;

mod broadcast;
mod events;
mod instances;

struct Row {
    scenario: &'static str,
    metric: String,
    value: String,
    target: &'static str,
    met: Option<bool>,
}

/// Writes the report and prints the table; Ok(true) when every target was met.
pub fn write(args: &ReportArgs) -> Result<bool, String> {
    let mut scenarios = Map::new();
    let mut rows = Vec::new();
    for name in args
        .scenarios
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        let path = args.dir.join(format!("{name}.json"));
        let mut value: Value = match fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text)
                .unwrap_or_else(|e| json!({"error": format!("unreadable result: {e}")})),
            Err(e) => json!({"error": format!("no result ({}): {e}", path.display())}),
        };
        // A scenario's notifd; state-fanout's second one, B, writes `-b` files, and
        // instances' third, C, `-c` files.
        for (instance, suffix) in [("", ""), (" B", "-b"), (" C", "-c")] {
            let stop_path = args.dir.join(format!("{name}{suffix}.stop"));
            if !suffix.is_empty() && !stop_path.exists() {
                continue;
            }
            let stop = read_stop(&stop_path);
            let log = read_log(&args.dir.join(format!("notifd-{name}{suffix}.log")));
            if let Value::Object(map) = &mut value {
                map.insert(format!("notifd{suffix}_stop"), stop.clone());
                map.insert(format!("notifd{suffix}_log"), log.clone());
            }
            if suffix.is_empty() {
                rows.extend(table_rows(name, &value));
            }
            rows.extend(process_rows(leak(name), instance, &stop, &log));
        }
        scenarios.insert(name.to_string(), value);
    }
    if let (Some(plain), Some(v1)) = (scenarios.get("latency"), scenarios.get("latency-v1")) {
        rows.extend(events::latency_rows(plain, v1));
    }
    let all_met = rows.iter().all(|r| r.met != Some(false));
    let report = json!({
        "date": now_rfc3339(),
        "command": args.command,
        "git_commit": std::env::var("BENCH_GIT_COMMIT").unwrap_or_default(),
        "machine": machine(),
        "note": "generator and notifd (with PostgreSQL and Redis) share the same cores",
        "all_targets_met": all_met,
        "scenarios": scenarios,
    });
    fs::write(
        &args.out,
        serde_json::to_string_pretty(&report).unwrap_or_default() + "\n",
    )
    .map_err(|e| format!("cannot write {}: {e}", args.out.display()))?;
    print_table(&rows);
    println!(
        "\n{} — report: {}",
        if all_met {
            "every target met"
        } else {
            "some targets missed"
        },
        args.out.display()
    );
    Ok(all_met)
}

/// A notifd's exit after SIGTERM and its log's problems.
fn process_rows(scenario: &'static str, instance: &str, stop: &Value, log: &Value) -> Vec<Row> {
    let exit = stop["exit_code"].as_i64();
    let problems = log["warn_or_error_lines"].as_u64().unwrap_or(0);
    vec![
        Row {
            scenario,
            metric: format!("notifd{instance} SIGTERM -> exit"),
            value: format!(
                "code {}, {} s",
                exit.map_or("?".into(), |c| c.to_string()),
                stop["seconds"]
                    .as_f64()
                    .map_or("?".into(), |s| format!("{s:.1}"))
            ),
            target: "0",
            met: exit.map(|c| c == 0),
        },
        Row {
            scenario,
            metric: format!("notifd{instance} WARN/ERROR log lines"),
            value: problems.to_string(),
            target: "0",
            met: Some(problems == 0),
        },
    ]
}

fn leak(s: &str) -> &'static str {
    match s {
        "connections" => "connections",
        "latency" => "latency",
        "throughput" => "throughput",
        "history" => "history",
        "idle-rest" => "idle-rest",
        "connections-v1" => "connections-v1",
        "latency-v1" => "latency-v1",
        "throughput-v1" => "throughput-v1",
        "state-fanout" => "state-fanout",
        "broadcast" => "broadcast",
        "broadcast-history" => "broadcast-history",
        "instances" => "instances",
        _ => "other",
    }
}

/// The sum of a `{reason: count}` map's counts.
fn total(map: &Value) -> u64 {
    map.as_object()
        .map_or(0, |m| m.values().filter_map(Value::as_u64).sum())
}

fn f(v: &Value) -> Option<f64> {
    v.as_f64()
}

fn fmt(v: &Value, digits: usize) -> String {
    match v {
        Value::Number(n) => match n.as_f64() {
            Some(x) if n.is_f64() => format!("{x:.digits$}"),
            _ => n.to_string(),
        },
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A throughput step's name: "16 clients", or "16 clients x batch 100".
fn step_label(step: &Value) -> String {
    match step["label"].as_str() {
        Some(label) => label.to_string(),
        None => format!("{} clients", step["clients"]),
    }
}

fn table_rows(name: &str, v: &Value) -> Vec<Row> {
    let s = leak(name);
    let mut rows = Vec::new();
    let mut row = |metric: &str, value: String, target: &'static str, met: Option<bool>| {
        rows.push(Row {
            scenario: s,
            metric: metric.to_string(),
            value,
            target,
            met,
        })
    };
    if let Some(err) = v.get("error") {
        row("error", fmt(err, 0), "", Some(false));
        return rows;
    }
    match name {
        "state-fanout" => return events::fanout_rows(v),
        "broadcast" => return broadcast::broadcast_rows(v),
        "broadcast-history" => return broadcast::history_rows(v),
        "instances" => return instances::instances_rows(v),
        _ => {}
    }
    // A `-v1` run (BENCH_PROTOCOL=v1) has its plain twin's rows.
    match name.strip_suffix("-v1").unwrap_or(name) {
        "connections" => {
            let asked = v["connections_asked"].as_u64().unwrap_or(0);
            let held = v["connections_held"].as_u64().unwrap_or(0);
            row(
                "connections held",
                format!("{held} of {asked}"),
                "all 15,000",
                Some(held == asked && asked >= 15_000),
            );
            row(
                "connect rate (/s)",
                fmt(&v["connect_rate_per_s"], 0),
                "",
                None,
            );
            row(
                "connect failures",
                fmt(&v["connect_failures"], 0),
                "0",
                Some(v["connect_failures"] == 0),
            );
            row(
                "dropped during hold",
                fmt(&v["dropped_during_hold"], 0),
                "0",
                Some(v["dropped_during_hold"] == 0),
            );
            let rss = f(&v["rss_per_connection_kib"]);
            row(
                "RSS per connection (KiB)",
                fmt(&v["rss_per_connection_kib"], 2),
                "<= 24",
                rss.map(|x| x <= 24.0),
            );
            row(
                "RSS before / connected / after hold (MiB)",
                format!(
                    "{:.1} / {:.1} / {:.1}",
                    f(&v["rss_before_kib"]).unwrap_or(0.0) / 1024.0,
                    f(&v["rss_connected_kib"]).unwrap_or(0.0) / 1024.0,
                    f(&v["rss_after_hold_kib"]).unwrap_or(0.0) / 1024.0
                ),
                "",
                None,
            );
            row(
                "threads (before / connected)",
                format!("{} / {}", v["threads_before"], v["threads_connected"]),
                "",
                None,
            );
            row(
                "fds (before / connected)",
                format!("{} / {}", v["fds_before"], v["fds_connected"]),
                "",
                None,
            );
            let idle = f(&v["idle_cpu_pct_of_core"]);
            row(
                &format!("idle CPU over {} s hold (% of a core)", v["hold_seconds"]),
                fmt(&v["idle_cpu_pct_of_core"], 2),
                "< 2",
                idle.map(|x| x < 2.0),
            );
            row(
                "other processes' CPU over the hold (% of a core)",
                fmt(&v["cpu"]["other_cpu_pct_of_core"], 1),
                "~0",
                None,
            );
            row(
                "delivery check after hold",
                fmt(&v["delivery_check"], 0),
                "delivered",
                Some(v["delivery_check"] == "delivered"),
            );
        }
        "latency" => {
            let e = &v["end_to_end"];
            row(
                "rate achieved (/s)",
                format!(
                    "{} of {}",
                    fmt(&v["achieved_rate_per_s"], 0),
                    v["target_rate_per_s"]
                ),
                "1,000",
                None,
            );
            row(
                "end-to-end p50 (ms)",
                fmt(&e["p50_ms"], 3),
                "<= 1",
                f(&e["p50_ms"]).map(|x| x <= 1.0),
            );
            row("end-to-end p90 (ms)", fmt(&e["p90_ms"], 3), "", None);
            row(
                "end-to-end p99 (ms)",
                fmt(&e["p99_ms"], 3),
                "<= 2",
                f(&e["p99_ms"]).map(|x| x <= 2.0),
            );
            row("end-to-end p99.9 (ms)", fmt(&e["p99_9_ms"], 3), "", None);
            row("end-to-end max (ms)", fmt(&e["max_ms"], 3), "", None);
            row(
                "lost (created, not delivered)",
                fmt(&v["lost"], 0),
                "0",
                Some(v["lost"] == 0),
            );
            let errors = total(&v["create_errors"]);
            row("create errors", errors.to_string(), "0", Some(errors == 0));
            row(
                "REST create p50 / p99 (ms)",
                format!(
                    "{} / {}",
                    fmt(&v["rest_create"]["p50_ms"], 3),
                    fmt(&v["rest_create"]["p99_ms"], 3)
                ),
                "",
                None,
            );
            row(
                "notifd CPU (% of a core)",
                fmt(&v["cpu"]["notifd_cpu_pct_of_core"], 1),
                "",
                None,
            );
            row(
                "other processes' CPU (% of a core)",
                fmt(&v["cpu"]["other_cpu_pct_of_core"], 1),
                "~0",
                None,
            );
            row(
                "I/O stall, all tasks waiting (% of the time)",
                fmt(&v["cpu"]["io_stall_pct"], 2),
                "~0",
                None,
            );
        }
        "throughput" => {
            if let Some(steps) = v["steps"].as_array() {
                for st in steps {
                    let label = step_label(st);
                    row(
                        &format!("{label}: creates/s, deliveries/s, lost"),
                        format!(
                            "{}, {}, {}",
                            fmt(&st["creates_per_s"], 0),
                            fmt(&st["deliveries_per_s"], 0),
                            st["lost"]
                        ),
                        "",
                        None,
                    );
                    row(
                        &format!(
                            "{label}: CPU us/notif, e2e p50/p99 ms, other procs %, I/O stall %"
                        ),
                        format!(
                            "{}, {} / {}, {}, {}",
                            fmt(&st["notifd_cpu_us_per_notification"], 1),
                            fmt(&st["end_to_end"]["p50_ms"], 2),
                            fmt(&st["end_to_end"]["p99_ms"], 2),
                            fmt(&st["cpu"]["other_cpu_pct_of_core"], 0),
                            fmt(&st["cpu"]["io_stall_pct"], 1)
                        ),
                        "",
                        None,
                    );
                }
            }
            let b = &v["best"];
            let clients = step_label(b);
            row(
                &format!("best ({clients}): creates/s"),
                fmt(&b["creates_per_s"], 0),
                ">= 10,000",
                f(&b["creates_per_s"]).map(|x| x >= 10_000.0),
            );
            row(
                &format!("best ({clients}): deliveries/s"),
                fmt(&b["deliveries_per_s"], 0),
                ">= 10,000",
                f(&b["deliveries_per_s"]).map(|x| x >= 10_000.0),
            );
            row(
                &format!("best ({clients}): lost"),
                fmt(&b["lost"], 0),
                "0",
                Some(b["lost"] == 0),
            );
            row(
                &format!("best ({clients}): notifd CPU us/notification"),
                fmt(&b["notifd_cpu_us_per_notification"], 1),
                "<= 30",
                f(&b["notifd_cpu_us_per_notification"]).map(|x| x <= 30.0),
            );
            let c = &b["cpu"];
            row(
                "best: CPU % of a core notifd / postgres / redis / generator",
                format!(
                    "{} / {} / {} / {}",
                    fmt(&c["notifd_cpu_pct_of_core"], 0),
                    fmt(&c["postgres_cpu_pct_of_core"], 0),
                    fmt(&c["redis_cpu_pct_of_core"], 0),
                    fmt(&c["generator_cpu_pct_of_core"], 0)
                ),
                "",
                None,
            );
            row(
                "best: machine busy (% of all cores)",
                fmt(&c["machine_busy_pct_of_all_cores"], 0),
                "",
                None,
            );
        }
        "history" => {
            let seed = &v["seed"];
            row(
                "seeded rows (heavy user)",
                format!("{} ({})", seed["rows_total"], seed["heavy_user_rows"]),
                "1,020,000 (20,000)",
                None,
            );
            for r in depth_rows(s, v) {
                row(&r.metric, r.value, r.target, r.met);
            }
            let u = &v["unread_count"];
            row(
                "unread-count p50 / p99 (ms)",
                format!("{} / {}", fmt(&u["p50_ms"], 3), fmt(&u["p99_ms"], 3)),
                "p99 <= 0.5",
                f(&u["p99_ms"]).map(|x| x <= 0.5),
            );
            let m = &v["mark_read_1_to_10_ids"];
            row(
                "mark-read (1-10 ids) p50 / p99 (ms)",
                format!("{} / {}", fmt(&m["p50_ms"], 3), fmt(&m["p99_ms"], 3)),
                "",
                None,
            );
        }
        "idle-rest" => {
            row(
                "idle keep-alive connections held (still served)",
                format!("{} ({})", v["idle_connections"], v["still_served"]),
                "10,000 (all)",
                Some(v["still_served"] == v["idle_connections"]),
            );
            for (key, label) in [("healthz", "/healthz"), ("create", "create")] {
                let h = &v[key];
                row(
                    &format!("{label} meanwhile p50 / p99 (ms)"),
                    format!("{} / {}", fmt(&h["p50_ms"], 3), fmt(&h["p99_ms"], 3)),
                    "p99 <= 5",
                    f(&h["p99_ms"]).map(|x| x <= 5.0),
                );
            }
            row(
                "notifd threads / fds / RSS (MiB)",
                format!(
                    "{} / {} / {}",
                    v["notifd_threads"],
                    v["notifd_fds"],
                    fmt(&v["notifd_rss_mib"], 1)
                ),
                "",
                None,
            );
        }
        _ => {}
    }
    rows
}

/// Page 1 against page 200 (scenarios/pages.rs's keys): history's and
/// broadcast-history's.
fn depth_rows(scenario: &'static str, v: &Value) -> Vec<Row> {
    let mut rows = Vec::new();
    for (key, label) in [("page_1", "page 1"), ("page_200", "page 200")] {
        let h = &v[key];
        rows.push(Row {
            scenario,
            metric: format!("{label} p50 / p99 (ms)"),
            value: format!("{} / {}", fmt(&h["p50_ms"], 3), fmt(&h["p99_ms"], 3)),
            target: "p99 <= 2",
            met: f(&h["p99_ms"]).map(|x| x <= 2.0),
        });
    }
    rows.push(Row {
        scenario,
        metric: "page 200 / page 1 (p50, p99)".into(),
        value: format!(
            "x{} , x{}",
            fmt(&v["page_200_vs_1_p50"], 2),
            fmt(&v["page_200_vs_1_p99"], 2)
        ),
        target: "<= x1.2",
        met: f(&v["page_200_vs_1_p50"]).map(|x| x <= 1.2),
    });
    rows
}

fn print_table(rows: &[Row]) {
    let w0 = rows
        .iter()
        .map(|r| r.scenario.len())
        .max()
        .unwrap_or(8)
        .max(8);
    let w1 = rows
        .iter()
        .map(|r| r.metric.chars().count())
        .max()
        .unwrap_or(6)
        .max(6);
    let w2 = rows
        .iter()
        .map(|r| r.value.chars().count())
        .max()
        .unwrap_or(5)
        .max(5);
    let w3 = rows
        .iter()
        .map(|r| r.target.chars().count())
        .max()
        .unwrap_or(6)
        .max(6);
    println!(
        "{:<w0$}  {:<w1$}  {:>w2$}  {:<w3$}  met",
        "scenario", "metric", "value", "target"
    );
    println!("{}", "-".repeat(w0 + w1 + w2 + w3 + 13));
    let mut last = "";
    for r in rows {
        let scenario = if r.scenario == last { "" } else { r.scenario };
        last = r.scenario;
        let met = match r.met {
            Some(true) => "yes",
            Some(false) => "NO",
            None => "",
        };
        println!(
            "{:<w0$}  {:<w1$}  {:>w2$}  {:<w3$}  {met}",
            scenario, r.metric, r.value, r.target
        );
    }
}

fn read_stop(path: &Path) -> Value {
    let Ok(text) = fs::read_to_string(path) else {
        return Value::Null;
    };
    let mut parts = text.split_whitespace();
    json!({
        "exit_code": parts.next().and_then(|s| s.parse::<i64>().ok()),
        "seconds": parts.next().and_then(|s| s.parse::<f64>().ok()),
    })
}

fn read_log(path: &Path) -> Value {
    let Ok(text) = fs::read_to_string(path) else {
        return json!({"path": path.display().to_string(), "missing": true});
    };
    let problems: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR ") || l.contains("panicked"))
        .collect();
    json!({
        "path": path.display().to_string(),
        "lines": text.lines().count(),
        "warn_or_error_lines": problems.len(),
        "first_problems": problems.iter().take(10).collect::<Vec<_>>(),
    })
}

fn machine() -> Value {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|r| r.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_default();
    let mem_kib: u64 = fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    json!({
        "cpus": crate::proc::cpus(),
        "cpu_model": model,
        "memory_gib": crate::proc::round(mem_kib as f64 / 1048576.0, 1),
        "kernel": kernel.trim(),
        "load_average_at_report": fs::read_to_string("/proc/loadavg").unwrap_or_default().trim(),
    })
}

fn now_rfc3339() -> String {
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let secs = (crate::stats::now_ns() / 1_000_000_000) as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}
