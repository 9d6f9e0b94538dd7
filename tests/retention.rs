//! Retention: notifications older than `NOTIFD_RETENTION_DAYS` are deleted (in
//! batches, by one instance at a time); recent ones and other users' recent ones stay.

mod common;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{new_user, settings, TestServer};
use serde_json::json;
use uuid::Uuid;

/// The tests share one database and the retention lock: run them one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// Inserts a notification created `days_ago` days ago, as notifd would have stored it.
fn insert_backdated(client: &mut postgres::Client, user: &str, days_ago: u64) -> Uuid {
    // A fresh UUIDv7 (random low bits, so ids never collide) moved back in time.
    let fresh = Uuid::now_v7();
    let millis = notifd::notification::id_millis(&fresh) - days_ago * 86_400_000;
    let low_bits = fresh.as_u128() & ((1u128 << 80) - 1);
    let id = Uuid::from_u128((u128::from(millis) << 80) | low_bits);
    let created_at = notifd::notification::created_at_of(&id);
    client
        .execute(
            "INSERT INTO notifications (id, user_id, workspace, kind, type, title, message, payload, read_at, created_at, updated_at) \
             VALUES ($1, $2, NULL, 'old', 'info', 'old', '', '{}'::jsonb, NULL, $3, $3)",
            &[&id, &user, &created_at],
        )
        .expect("insert backdated row");
    id
}

fn count(client: &mut postgres::Client, user: &str) -> i64 {
    client
        .query_one(
            "SELECT count(*) FROM notifications WHERE user_id = $1",
            &[&user],
        )
        .expect("count")
        .get(0)
}

#[test]
fn old_notifications_go_recent_ones_stay() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let server = TestServer::start();
    let mut client =
        postgres::Client::connect(&common::database_url(), postgres::NoTls).expect("connect");
    let (user, other) = (new_user("ret"), new_user("ret_other"));
    for _ in 0..3 {
        insert_backdated(&mut client, &user, 40);
    }
    insert_backdated(&mut client, &user, 10);
    insert_backdated(&mut client, &other, 10);
    server.create(&json!({"user_id": user, "kind": "fresh", "payload": {}}));

    let deleted = notifd::retention::run_once(&common::database_url(), 30).expect("pass runs");
    assert!(deleted.is_some_and(|n| n >= 3), "{deleted:?}");
    assert_eq!(
        count(&mut client, &user),
        2,
        "the 10-day-old and the fresh one stay"
    );
    assert_eq!(count(&mut client, &other), 1);
}

#[test]
fn one_instance_at_a_time() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut holder =
        postgres::Client::connect(&common::database_url(), postgres::NoTls).expect("connect");
    holder
        .execute(
            "SELECT pg_advisory_lock($1)",
            &[&notifd::retention::RETENTION_LOCK],
        )
        .expect("lock");
    assert_eq!(
        notifd::retention::run_once(&common::database_url(), 30).expect("runs"),
        None
    );
    holder
        .execute(
            "SELECT pg_advisory_unlock($1)",
            &[&notifd::retention::RETENTION_LOCK],
        )
        .expect("unlock");
}

#[test]
fn the_server_runs_a_pass_at_start_when_configured() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut client =
        postgres::Client::connect(&common::database_url(), postgres::NoTls).expect("connect");
    // The schema must exist before inserting: a first server applies it.
    drop(TestServer::start());
    let user = new_user("ret_start");
    insert_backdated(&mut client, &user, 400);
    let mut settings = settings();
    settings.retention_days = Some("365".into());
    let _server = TestServer::with(settings);
    let deadline = Instant::now() + Duration::from_secs(10);
    while count(&mut client, &user) > 0 {
        assert!(Instant::now() < deadline, "retention did not run at start");
        std::thread::sleep(Duration::from_millis(50));
    }
}
