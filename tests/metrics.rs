//! `GET /metrics`: Prometheus text format that a real parser reads, with values that
//! move as traffic flows and label sets bounded to route templates, the standard
//! `process_*` family with this process's values, and family names that OpenMetrics
//! can tell apart; with `NOTIFD_METRICS_ADDR`, served on that address only.

mod common;

use common::{new_user, next_notification, user_token, TestServer};
use prometheus_parse::{Scrape, Value as Metric};
use serde_json::json;

fn scrape(server: &TestServer) -> Scrape {
    parse(&server.request("GET", "/metrics", &[], None))
}

fn parse(response: &common::Response) -> Scrape {
    assert_eq!(response.status, 200);
    assert!(response
        .header("content-type")
        .is_some_and(|v| v.starts_with("text/plain; version=0.0.4")));
    let lines = response
        .text()
        .lines()
        .map(|l| Ok(l.to_string()))
        .collect::<Vec<_>>();
    Scrape::parse(lines.into_iter()).expect("valid Prometheus text format")
}

/// The value of a sample with these labels: a counter's, gauge's or untyped value,
/// or a histogram's observation count (its largest, the +Inf, cumulative bucket).
fn value(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match &s.value {
            Metric::Counter(v) | Metric::Gauge(v) | Metric::Untyped(v) => *v,
            Metric::Histogram(buckets) => buckets.iter().map(|b| b.count).fold(0.0, f64::max),
            Metric::Summary(_) => 0.0,
        })
        .sum()
}

#[test]
fn metrics_parse_and_move_with_traffic() {
    let server = TestServer::start();
    let before = scrape(&server);
    for name in [
        "notifd_build_info",
        "notifd_ws_connections_open",
        "notifd_ws_connections_total",
        "notifd_notifications_created_total",
        "notifd_notifications_delivered_total",
        "notifd_replayed_total",
        "notifd_redis_reconnects_total",
        "notifd_redis_publish_failures_total",
    ] {
        assert!(
            before.samples.iter().any(|s| s.metric == name),
            "{name} missing"
        );
    }
    assert_eq!(
        value(
            &before,
            "notifd_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );

    let user = new_user("metrics");
    let token = user_token(&user, &["acme"]);
    let mut ws = server.ws(&format!("token={token}&workspaceSlug=acme"));
    // Live, not caught up: the delivery histogram times the live path.
    let channel = common::user_channel(&server.config.redis_prefix, &user);
    common::wait_for_subscribers(
        &common::redis_url(),
        &channel,
        1,
        std::time::Duration::from_secs(5),
    );
    let created =
        server.create(&json!({"user_id": user, "workspace": "acme", "kind": "k", "payload": {}}));
    assert_eq!(next_notification(&mut ws)["id"], created["id"]);
    let list = format!("/v1/notifications?user={user}&token=should-not-be-a-label");
    assert_eq!(server.get(&list, &token).status, 200);
    assert_eq!(server.get("/no/such/path", &token).status, 404);
    let normal = tungstenite::protocol::CloseFrame {
        code: tungstenite::protocol::frame::coding::CloseCode::Normal,
        reason: "".into(),
    };
    ws.close(Some(normal)).expect("close");
    while ws.read().is_ok() {}

    // The server counts the close after the socket is gone: wait for it (bounded).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let after = loop {
        let after = scrape(&server);
        let closes = |s: &Scrape| value(s, "notifd_ws_closes_total", &[("code", "1000")]);
        if closes(&after) > closes(&before) || std::time::Instant::now() > deadline {
            break after;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let moved = |name: &str, labels: &[(&str, &str)]| {
        value(&after, name, labels) - value(&before, name, labels)
    };
    assert!(moved("notifd_notifications_created_total", &[]) >= 1.0);
    assert!(moved("notifd_notifications_delivered_total", &[]) >= 1.0);
    assert!(moved("notifd_ws_connections_total", &[]) >= 1.0);
    assert!(moved("notifd_ws_closes_total", &[("code", "1000")]) >= 1.0);
    let created_route = [("route", "/v1/internal/notifications"), ("status", "201")];
    assert!(moved("notifd_http_requests_total", &created_route) >= 1.0);
    assert!(
        moved(
            "notifd_http_requests_total",
            &[("route", "/v1/notifications"), ("status", "200")]
        ) >= 1.0
    );
    assert!(
        moved(
            "notifd_http_requests_total",
            &[("route", "unknown"), ("status", "404")]
        ) >= 1.0
    );
    assert!(value(&after, "notifd_delivery_seconds", &[]) >= 1.0);
    assert!(
        value(
            &after,
            "notifd_http_request_seconds",
            &[("route", "/v1/notifications")]
        ) >= 1.0
    );
    assert!(value(&after, "notifd_db_pool_wait_seconds", &[]) >= 1.0);

    // Labels are route templates only: no raw path, query, user id or token.
    let text = server.request("GET", "/metrics", &[], None).text();
    for leak in [
        user.as_str(),
        "should-not-be-a-label",
        "/no/such/path",
        token.as_str(),
    ] {
        assert!(!text.contains(leak), "metrics expose {leak:?}");
    }
}

#[test]
fn a_metrics_address_of_its_own_serves_them_there_and_not_on_the_rest_port() {
    let mut settings = common::settings();
    settings.metrics_addr = Some("127.0.0.1:0".into());
    let server = TestServer::with(settings);
    let addr = server.metrics_addr().expect("a metrics address");
    assert_ne!(addr, server.http_addr());

    // Traffic on the REST port shows on the metrics address.
    let created_201 = [("route", "/v1/internal/notifications"), ("status", "201")];
    let before = parse(&common::request_to(addr, "GET", "/metrics", &[], None));
    let user = new_user("metricsaddr");
    server.create(&json!({"user_id": user, "kind": "metrics.addr", "payload": {}}));
    let after = parse(&common::request_to(addr, "GET", "/metrics?x=1", &[], None));
    let moved = |name: &str, labels: &[(&str, &str)]| {
        value(&after, name, labels) - value(&before, name, labels)
    };
    assert!(moved("notifd_notifications_created_total", &[]) >= 1.0);
    assert!(moved("notifd_http_requests_total", &created_201) >= 1.0);

    // The public port no longer has them; the metrics address has nothing else.
    let rest = server.request("GET", "/metrics", &[], None);
    assert_eq!(rest.status, 404);
    assert_eq!(rest.error_code(), "not_found");
    assert_eq!(
        common::request_to(addr, "GET", "/healthz", &[], None).status,
        404
    );
    let post = common::request_to(addr, "POST", "/metrics", &[], Some(b"{}"));
    assert_eq!(post.status, 405);
    assert_eq!(post.header("allow"), Some("GET"));
    // A request head past the bound is refused, and the listener still answers.
    let huge = format!("GET /metrics HTTP/1.1\r\nX-Pad: {}\r\n", "a".repeat(20_000));
    assert_eq!(common::raw_to(addr, huge.as_bytes()).status, 431);
    parse(&common::request_to(addr, "GET", "/metrics", &[], None));
}

/// The `process_*` family describes this very process (the server runs in it): the
/// values are checked against what the test reads itself, not only for presence.
#[test]
fn the_process_family_reports_this_process() {
    let server = TestServer::start();
    let scrape = scrape(&server);
    let gauge = |name: &str| {
        assert!(
            scrape.samples.iter().any(|s| s.metric == name),
            "{name} missing"
        );
        value(&scrape, name, &[])
    };
    let open = gauge("process_open_fds");
    let max = gauge("process_max_fds");
    assert!(open > 0.0 && open <= max, "open {open}, max {max}");
    assert_eq!(max, notifd::process::fd_limit() as f64);
    let resident = gauge("process_resident_memory_bytes");
    assert!(resident > 1e6, "resident {resident}");
    assert!(gauge("process_virtual_memory_bytes") >= resident);
    // The server's own threads (listeners, workers, subscriber) are in this process.
    assert!(gauge("process_threads") > 4.0);
    assert!(gauge("process_cpu_seconds_total") > 0.0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64();
    let started = gauge("process_start_time_seconds");
    // Clock ticks are 10 ms; the boot time is whole seconds.
    assert!(
        started <= now + 1.0 && started > now - 3600.0,
        "started {started}, now {now}"
    );
    let text = server.request("GET", "/metrics", &[], None).text();
    for (name, kind) in [
        ("process_cpu_seconds_total", "counter"),
        ("process_open_fds", "gauge"),
        ("process_threads", "gauge"),
    ] {
        assert!(
            text.contains(&format!("# TYPE {name} {kind}\n")),
            "{name} is a {kind}"
        );
    }
}

/// OpenMetrics names a counter's family without its `_total` and a histogram's
/// series `_bucket`, `_sum` and `_count`: no other family may take those names
/// (`notifd_ws_connections` as a gauge once clashed with the connections counter).
#[test]
fn family_names_do_not_clash_under_openmetrics() {
    let server = TestServer::start();
    let text = server.request("GET", "/metrics", &[], None).text();
    let families: Vec<(&str, &str)> = text
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split_once(' '))
        .collect();
    assert!(families.len() > 10, "{families:?}");
    let names: std::collections::HashSet<&str> = families.iter().map(|(n, _)| *n).collect();
    assert_eq!(names.len(), families.len(), "a family is declared twice");
    for (name, kind) in &families {
        let taken: Vec<String> = match *kind {
            "counter" => {
                let base = name.strip_suffix("_total");
                assert!(base.is_some(), "counter {name} does not end in _total");
                base.into_iter().map(String::from).collect()
            }
            "histogram" => ["_bucket", "_sum", "_count"]
                .iter()
                .map(|suffix| format!("{name}{suffix}"))
                .collect(),
            _ => Vec::new(),
        };
        for other in taken {
            assert!(
                !names.contains(other.as_str()),
                "{other} clashes with {kind} {name}"
            );
        }
    }
    assert!(names.contains("notifd_ws_connections_open"));
}
