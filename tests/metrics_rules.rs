//! The shipped monitoring files, `scripts/notifd.rules.yml` (Prometheus alerts) and
//! `scripts/notifd.dashboard.json` (Grafana): promtool accepts the rules and their
//! unit tests, every dashboard expression is valid PromQL, and every metric and
//! label either one names is one a running notifd serves, so a renamed metric
//! cannot leave an alert that never fires. promtool comes from Debian's `prometheus`
//! package, which scripts/test installs; without it these tests fail.

mod common;
#[path = "metrics_rules/promql.rs"]
mod promql;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{new_user, next_notification, user_token, TestServer};
use promql::{label_names, selectors};
use serde_json::{json, Value};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const RULES: &str = "scripts/notifd.rules.yml";
const RULE_TESTS: &str = "scripts/notifd.rules.test.yml";
const DASHBOARD: &str = "scripts/notifd.dashboard.json";
/// Series Prometheus makes itself for each scrape, not notifd.
const SCRAPE_SERIES: [&str; 1] = ["up"];
/// Labels Prometheus adds to every scraped series.
const TARGET_LABELS: [&str; 2] = ["job", "instance"];

/// Runs promtool with these arguments in the repository; its output on failure.
fn promtool(args: &[&str]) -> Output {
    let output = Command::new("promtool")
        .args(args)
        .current_dir(ROOT)
        .output()
        .unwrap_or_else(|err| {
            panic!(
                "promtool cannot run ({err}): scripts/test installs it (Debian package prometheus)"
            )
        });
    assert!(
        output.status.success(),
        "promtool {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

#[test]
fn promtool_accepts_the_rules_and_their_unit_tests_pass() {
    let checked = promtool(&["check", "rules", RULES]);
    // The hand-read expressions below are all of them: promtool counts the rules.
    let found = format!("SUCCESS: {} rules found", rule_expressions().len());
    let said = String::from_utf8_lossy(&checked.stdout).into_owned();
    assert!(said.contains(&found), "{said}");
    promtool(&["test", "rules", RULE_TESTS]);
}

#[test]
fn every_dashboard_expression_is_valid_promql() {
    let expressions = dashboard_expressions();
    assert!(expressions.len() > 15, "{expressions:?}");
    // promtool checks PromQL only inside rule files: one recording rule each,
    // Grafana's variables replaced by what they stand for at query time.
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, expr) in expressions.iter().enumerate() {
        let expr = without_grafana_variables(expr);
        rules.push_str(&format!("      - record: dashboard:panel{i}\n"));
        rules.push_str(&format!("        expr: {}\n", Value::from(expr)));
    }
    let file = scratch_file("dashboard.rules.yml");
    std::fs::write(&file, rules).expect("write the scratch rules");
    let checked = promtool(&["check", "rules", file.to_str().expect("UTF-8 path")]);
    let found = format!("SUCCESS: {} rules found", expressions.len());
    assert!(String::from_utf8_lossy(&checked.stdout).contains(&found));
    let _ = std::fs::remove_file(file);
}

#[test]
fn rules_and_dashboard_name_only_what_a_running_server_serves() {
    let served = served_by_a_server_with_traffic();
    let mut used = BTreeSet::new();
    let in_rules = rule_expressions();
    let in_dashboard = dashboard_expressions();
    for (origin, expr) in in_rules
        .iter()
        .map(|e| (RULES, e))
        .chain(in_dashboard.iter().map(|e| (DASHBOARD, e)))
    {
        let expr = without_grafana_variables(expr);
        let selectors = selectors(&expr);
        assert!(!selectors.is_empty(), "{origin}: no metric in {expr}");
        for (metric, labels) in selectors {
            used.insert(family_of(&metric, &served));
            if SCRAPE_SERIES.contains(&metric.as_str()) {
                continue;
            }
            let Some(known) = served.get(&metric) else {
                panic!("{origin}: {metric} is not served by /metrics (in {expr})");
            };
            for label in labels {
                assert!(
                    known.contains(&label) || TARGET_LABELS.contains(&label.as_str()),
                    "{origin}: {metric} has no label {label} (in {expr}); it has {known:?}"
                );
            }
        }
    }
    // The dashboard and the rules between them show every family notifd serves.
    let families: BTreeSet<String> = served.keys().map(|m| family_of(m, &served)).collect();
    let unshown: Vec<&String> = families.difference(&used).collect();
    assert!(unshown.is_empty(), "never shown: {unshown:?}");
}

/// Every metric name `/metrics` serves (histograms as their `_bucket`, `_sum` and
/// `_count` series) with the label names its samples carry. Traffic first, so the
/// labelled families have samples: a create delivered live, a close, `/readyz`.
fn served_by_a_server_with_traffic() -> BTreeMap<String, BTreeSet<String>> {
    let server = TestServer::start();
    let user = new_user("rules");
    let token = user_token(&user, &["acme"]);
    let mut ws = server.ws(&format!("token={token}&workspaceSlug=acme"));
    let created =
        server.create(&json!({"user_id": user, "workspace": "acme", "kind": "k", "payload": {}}));
    assert_eq!(next_notification(&mut ws)["id"], created["id"]);
    assert_eq!(server.request("GET", "/readyz", &[], None).status, 200);
    ws.close(None).expect("close");
    while ws.read().is_ok() {}
    // The close is counted after the socket is gone: wait for it (bounded).
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = server.request("GET", "/metrics", &[], None).text();
        let served = served_in(&text);
        if served.contains_key("notifd_ws_closes_total") {
            return served;
        }
        assert!(Instant::now() < deadline, "no close counted:\n{text}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Names and label names of a scrape: sample lines, plus the series every
/// `# TYPE` line declares (a family with no sample yet still counts, unlabelled).
fn served_in(text: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut served: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in text.lines() {
        if let Some(declared) = line.strip_prefix("# TYPE ") {
            let (name, kind) = declared.split_once(' ').expect("# TYPE name kind");
            let series: Vec<String> = match kind {
                "histogram" => ["_bucket", "_sum", "_count"]
                    .iter()
                    .map(|s| format!("{name}{s}"))
                    .collect(),
                _ => vec![name.to_string()],
            };
            for name in series {
                served.entry(name).or_default();
            }
        } else if !line.starts_with('#') && !line.is_empty() {
            let name_end = line.find(['{', ' ']).expect("name, then labels or value");
            let labels = served.entry(line[..name_end].to_string()).or_default();
            if let Some(matchers) = line[name_end..].strip_prefix('{') {
                labels.extend(label_names(matchers));
            }
        }
    }
    served
}

/// The family a series belongs to, as the dashboard coverage counts it.
fn family_of(metric: &str, served: &BTreeMap<String, BTreeSet<String>>) -> String {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = metric.strip_suffix(suffix) {
            if served.contains_key(&format!("{base}_bucket")) {
                return base.to_string();
            }
        }
    }
    metric.to_string()
}

/// The `expr:` of every rule: one line, or a `|` block of deeper-indented lines.
fn rule_expressions() -> Vec<String> {
    let text = std::fs::read_to_string(Path::new(ROOT).join(RULES)).expect(RULES);
    let lines: Vec<&str> = text.lines().collect();
    let mut expressions = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(expr) = line.trim_start().strip_prefix("expr:") else {
            continue;
        };
        if expr.trim() != "|" {
            expressions.push(expr.trim().to_string());
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        let block: Vec<&str> = lines[i + 1..]
            .iter()
            .take_while(|l| l.len() - l.trim_start().len() > indent)
            .map(|l| l.trim())
            .collect();
        expressions.push(block.join(" "));
    }
    expressions
}

/// Every panel target's `expr`, and the metric of each `label_values(…)` variable.
fn dashboard_expressions() -> Vec<String> {
    let text = std::fs::read_to_string(Path::new(ROOT).join(DASHBOARD)).expect(DASHBOARD);
    let dashboard: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let mut expressions = Vec::new();
    collect_exprs(&dashboard["panels"], &mut expressions);
    let variables = dashboard["templating"]["list"]
        .as_array()
        .expect("variables");
    for variable in variables.iter().filter(|v| v["type"] == "query") {
        let query = variable["query"]["query"].as_str().expect("a query");
        let inner = query
            .strip_prefix("label_values(")
            .and_then(|q| q.rsplit_once(','))
            .expect("label_values(selector, label)");
        expressions.push(inner.0.to_string());
    }
    expressions
}

fn collect_exprs(value: &Value, into: &mut Vec<String>) {
    match value {
        Value::Object(fields) => {
            if let Some(Value::String(expr)) = fields.get("expr") {
                into.push(expr.clone());
            }
            fields.values().for_each(|v| collect_exprs(v, into));
        }
        Value::Array(items) => items.iter().for_each(|v| collect_exprs(v, into)),
        _ => {}
    }
}

/// Grafana's variables as they stand at query time.
fn without_grafana_variables(expr: &str) -> String {
    let expr = expr
        .replace("$__rate_interval", "5m")
        .replace("$instance", ".*");
    assert!(!expr.contains('$'), "an unknown Grafana variable in {expr}");
    expr
}

/// A path for a file this test writes, unique to this process.
fn scratch_file(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("notifd-{}-{name}", std::process::id()))
}
