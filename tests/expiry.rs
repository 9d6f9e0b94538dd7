//! Expiry: `expires_at` on create (RFC 3339, in the future, within the retention
//! period); from that instant the notification is not listed, not counted and not
//! replayed by `since`, the counters equal a count of the unexpired rows, and the
//! rows are deleted (by the expiry thread, and by the sweep when it runs first).

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{assert_error, new_user, service_token, user_token, TestServer};
use serde_json::{json, Value};
use time::OffsetDateTime;

const CREATE: &str = "/v1/internal/notifications";

/// `at` as RFC 3339 UTC with milliseconds.
fn rfc3339(at: OffsetDateTime) -> String {
    notifd::notification::format_timestamp(at)
}

fn in_ms(ms: i64) -> OffsetDateTime {
    OffsetDateTime::now_utc() + time::Duration::milliseconds(ms)
}

fn create_expiring(
    server: &TestServer,
    user: &str,
    kind: &str,
    expires: Option<OffsetDateTime>,
) -> Value {
    let mut body = json!({"user_id": user, "kind": kind, "payload": {}});
    if let Some(at) = expires {
        body["expires_at"] = json!(rfc3339(at));
    }
    server.create(&body)
}

fn listed_kinds(server: &TestServer, token: &str) -> Vec<String> {
    let page = server.get("/v1/notifications", token).json();
    page["notifications"]
        .as_array()
        .expect("a list")
        .iter()
        .map(|n| n["kind"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn unread(server: &TestServer, token: &str) -> i64 {
    server.get("/v1/notifications/unread-count", token).json()["unread"]
        .as_i64()
        .expect("unread")
}

/// Unread and unseen per workspace ('' = user-level).
type Counts = BTreeMap<String, (i64, i64)>;

/// Unread/unseen per workspace ('' = user-level), from the counters and from a count
/// of the rows that are not expired: the two must agree (rows at zero left out).
fn counters_and_counted(client: &mut postgres::Client, user: &str) -> (Counts, Counts) {
    let collect = |rows: Vec<postgres::Row>| {
        rows.iter()
            .map(|r| {
                (
                    r.get::<_, String>(0),
                    (r.get::<_, i64>(1), r.get::<_, i64>(2)),
                )
            })
            .filter(|(_, counts)| *counts != (0, 0))
            .collect::<Counts>()
    };
    let counters = client
        .query(
            "SELECT workspace, unread, unseen FROM notification_counts WHERE user_id = $1",
            &[&user],
        )
        .expect("counters");
    let counted = client
        .query(
            "SELECT coalesce(workspace, ''), \
                    count(*) FILTER (WHERE read_at IS NULL AND archived_at IS NULL), \
                    count(*) FILTER (WHERE seen_at IS NULL AND archived_at IS NULL) \
             FROM notifications WHERE user_id = $1 AND (expires_at IS NULL OR expires_at > now()) \
             GROUP BY 1",
            &[&user],
        )
        .expect("count");
    (collect(counters), collect(counted))
}

fn connect() -> postgres::Client {
    postgres::Client::connect(&common::database_url(), postgres::NoTls).expect("connect")
}

#[test]
fn expires_at_must_be_a_future_rfc3339_instant_within_the_retention_period() {
    let mut settings = common::settings();
    settings.retention_days = Some("1".into());
    let server = TestServer::with(settings);
    let user = new_user("exp_valid");
    let token = service_token();
    let with = |value: Value| {
        let body = json!({"user_id": user, "kind": "K", "payload": {}, "expires_at": value});
        server.send_json("POST", CREATE, &token, &body)
    };
    let cases = [
        (
            json!(rfc3339(in_ms(-1000))),
            "expires_at: must be in the future",
            "past",
        ),
        (
            json!("tomorrow"),
            "expires_at: must be an RFC 3339 timestamp",
            "not a timestamp",
        ),
        (
            json!("2099-01-01T00:00:00"),
            "expires_at: must be an RFC 3339 timestamp",
            "no offset",
        ),
        (
            json!(1_900_000_000),
            "expires_at: must be a string",
            "a number",
        ),
        (
            json!(rfc3339(in_ms(2 * 86_400_000))),
            "expires_at: must be at most the retention period (1 days)",
            "beyond retention",
        ),
    ];
    for (value, message, what) in cases {
        assert_error(&with(value), 400, "invalid_field", message, what);
    }
    let ahead = in_ms(3_600_000).to_offset(time::macros::offset!(+2));
    let text = ahead
        .format(&time::format_description::well_known::Rfc3339)
        .expect("format");
    let created = with(json!(text));
    assert_eq!(created.status, 201, "{}", created.text());
    assert_eq!(
        created.json()["expires_at"],
        json!(rfc3339(ahead)),
        "UTC with milliseconds"
    );
    let listed = server
        .get("/v1/notifications", &user_token(&user, &[]))
        .json();
    assert_eq!(
        listed["notifications"][0]["expires_at"],
        created.json()["expires_at"]
    );
    let plain = server.create(&json!({"user_id": user, "kind": "K", "payload": {}}));
    assert_eq!(plain["expires_at"], Value::Null);
}

#[test]
fn an_expiring_notification_leaves_the_list_and_the_counts_at_its_instant() {
    let server = TestServer::start();
    let user = new_user("exp_list");
    let token = user_token(&user, &[]);
    let expires = in_ms(1500);
    create_expiring(&server, &user, "STAYS", None);
    let soon = create_expiring(&server, &user, "EXPIRES", Some(expires));
    assert_eq!(soon["expires_at"], json!(rfc3339(expires)));
    assert_eq!(listed_kinds(&server, &token), vec!["EXPIRES", "STAYS"]);
    assert_eq!(unread(&server, &token), 2);

    let deadline = expires + time::Duration::milliseconds(1500);
    loop {
        let (kinds, count) = (listed_kinds(&server, &token), unread(&server, &token));
        let now = OffsetDateTime::now_utc();
        if kinds == ["STAYS"] && count == 1 {
            // The list and the count agree only once it expired (same host clock).
            assert!(
                now >= expires - time::Duration::milliseconds(50),
                "gone early, at {now}"
            );
            break;
        }
        assert!(
            now < deadline,
            "still there at {now}: {kinds:?}, unread {count}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut client = connect();
    let (counters, counted) = counters_and_counted(&mut client, &user);
    assert_eq!(counters, counted);
    assert_eq!(counted.get(""), Some(&(1, 1)));
    let rows: i64 = client
        .query_one(
            "SELECT count(*) FROM notifications WHERE user_id = $1",
            &[&user],
        )
        .expect("count")
        .get(0);
    assert_eq!(rows, 1, "the expired row is deleted, not just hidden");
}

/// A database for one test, named after this binary's (so `scripts/test` drops it).
fn own_database(suffix: &str) -> String {
    let url = format!("{}_{suffix}", common::database_url());
    notifd::store::connect_creating(&url).expect("create database");
    url
}

/// The next event of a `notifd.v1` connection.
fn next_event(ws: &mut common::Ws) -> Value {
    let text = common::next_text(ws).expect("an event before the deadline");
    serde_json::from_str(&text).expect("event JSON")
}

#[test]
fn connected_clients_get_the_counts_at_expiry() {
    // A database of its own: the other tests' servers (each with its own Redis
    // prefix) run expiry threads too, and one of them could delete this row and
    // publish its counts where this server does not listen.
    let mut settings = common::settings();
    settings.database_url = Some(own_database("live"));
    let server = TestServer::with(settings);
    let user = new_user("exp_live");
    let query = format!("token={}&workspaceSlug=acme", user_token(&user, &["acme"]));
    let mut ws = common::ws_connect(
        server.ws_addr(),
        &query,
        &[("Sec-WebSocket-Protocol", "notifd.v1")],
    );
    assert_eq!(next_event(&mut ws)["event"], "synced");
    assert_eq!(next_event(&mut ws)["unread"], 0);
    let expires = in_ms(700);
    create_expiring(&server, &user, "LIVE", Some(expires));
    let counts_of = |event: &Value| (event["unread"].as_i64(), event["unseen"].as_i64());
    let mut seen = Vec::new();
    loop {
        let event = next_event(&mut ws);
        if event["event"] == "counts" {
            seen.push(counts_of(&event));
            if counts_of(&event) == (Some(0), Some(0)) {
                break;
            }
        }
    }
    let late = OffsetDateTime::now_utc() - expires;
    assert_eq!(seen.first(), Some(&(Some(1), Some(1))), "{seen:?}");
    assert!(
        late < time::Duration::milliseconds(1500),
        "counts came {late} after the expiry"
    );
    assert!(
        late > time::Duration::milliseconds(-50),
        "counts moved before the expiry: {late}"
    );
}

#[test]
fn since_replay_skips_expired_ones() {
    let server = TestServer::start();
    let user = new_user("exp_since");
    let token = user_token(&user, &["acme"]);
    let first = create_expiring(&server, &user, "A", None);
    create_expiring(&server, &user, "B", Some(in_ms(800)));
    create_expiring(&server, &user, "C", None);
    let started = Instant::now();
    while listed_kinds(&server, &token).contains(&"B".to_string()) {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "B never expired"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let id = first["id"].as_str().expect("id");
    let mut ws = server.ws(&format!("token={token}&workspaceSlug=acme&since={id}"));
    assert_eq!(
        common::next_notification(&mut ws)["kind"],
        "C",
        "B is not replayed"
    );
    create_expiring(&server, &user, "D", None);
    assert_eq!(common::next_notification(&mut ws)["kind"], "D");
}

#[test]
fn the_sweep_deletes_expired_rows_and_the_counters_follow() {
    // A database of its own, with no notifd running on it: only the sweep deletes.
    let url = own_database("sweep");
    let mut client = notifd::store::connect_creating(&url).expect("connect");
    notifd::store::migrate(&mut client).expect("migrate");
    let user = new_user("exp_sweep");
    let insert = "INSERT INTO notifications (id, user_id, workspace, kind, type, title, message, payload, created_at, updated_at, expires_at) \
                  VALUES ($1, $2, NULL, 'K', 'info', 'K', '', '{}'::jsonb, now(), now(), now() + make_interval(secs => $3))";
    for seconds in [-60.0f64, -1.0, 3600.0] {
        client
            .execute(insert, &[&uuid::Uuid::now_v7(), &user, &seconds])
            .expect("insert");
    }
    let (counters, _) = counters_and_counted(&mut client, &user);
    assert_eq!(
        counters.get(""),
        Some(&(3, 3)),
        "the counters do not know the clock"
    );
    let sweep = notifd::retention::Sweep {
        retention_days: None,
        idempotency_window: Duration::from_secs(86_400),
    };
    let swept = notifd::retention::sweep_once(&url, &sweep)
        .expect("runs")
        .expect("not locked");
    assert_eq!(swept.expired, 2);
    let (counters, counted) = counters_and_counted(&mut client, &user);
    assert_eq!(counters, counted);
    assert_eq!(counted.get(""), Some(&(1, 1)));
    let left: i64 = client
        .query_one("SELECT count(*) FROM notifications", &[])
        .expect("count")
        .get(0);
    assert_eq!(left, 1);
}
