//! PostgreSQL going away under load: while the server's connections are terminated
//! (`pg_terminate_backend`, what a restart or a failover does to them) with creates
//! in flight, every create answers 201 or 503 `service_unavailable`, never 500, and
//! every 201 is stored. The machine's PostgreSQL itself keeps running: only this test
//! database's notifd connections are cut.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{new_user, service_token, TestServer};
use serde_json::json;
use uuid::Uuid;

/// Creating threads: more than the server's pool (4), so some wait on it.
const CREATORS: usize = 8;
/// The test stops once this many creates were refused (the cut hit them in flight).
const REFUSED_WANTED: usize = 5;
const DEADLINE: Duration = Duration::from_secs(30);

/// Terminates every notifd connection to `database`; returns how many.
fn cut(admin: &mut postgres::Client, database: &str) -> i64 {
    admin
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE datname = $1 AND application_name = 'notifd' AND pid <> pg_backend_pid()",
            &[&database],
        )
        .expect("pg_terminate_backend")
        .get(0)
}

#[test]
fn creates_in_flight_when_postgresql_cuts_connections_answer_201_or_503() {
    let server = TestServer::start();
    let url = common::database_url();
    let database = url.rsplit('/').next().expect("database name").to_string();
    let user = new_user("pgcut");
    let token = service_token();
    let refused = AtomicUsize::new(0);
    let done = AtomicBool::new(false);
    let started = Instant::now();

    let (answers, cuts) = std::thread::scope(|scope| {
        let creators: Vec<_> = (0..CREATORS)
            .map(|t| {
                let (server, user, token, refused, done) =
                    (&server, &user, &token, &refused, &done);
                scope.spawn(move || {
                    let mut answers = Vec::new();
                    let mut n = 0;
                    while !done.load(Ordering::Relaxed) {
                        let body =
                            json!({"user_id": user, "kind": "k", "payload": {"t": t, "n": n}});
                        let response =
                            server.send_json("POST", "/v1/internal/notifications", token, &body);
                        if response.status != 201 {
                            refused.fetch_add(1, Ordering::Relaxed);
                        }
                        answers.push((response.status, response.text()));
                        n += 1;
                    }
                    answers
                })
            })
            .collect();
        let mut admin = common::admin_client();
        let mut cuts = 0;
        while refused.load(Ordering::Relaxed) < REFUSED_WANTED && started.elapsed() < DEADLINE {
            cuts += cut(&mut admin, &database);
            std::thread::sleep(Duration::from_millis(25));
        }
        done.store(true, Ordering::Relaxed);
        let answers: Vec<(u16, String)> = creators
            .into_iter()
            .flat_map(|c| c.join().expect("creator"))
            .collect();
        (answers, cuts)
    });

    let mut statuses: HashMap<u16, usize> = HashMap::new();
    for (status, _) in &answers {
        *statuses.entry(*status).or_default() += 1;
    }
    eprintln!("{cuts} connections cut; answers by status: {statuses:?}");
    for (status, text) in &answers {
        assert!(
            *status == 201 || *status == 503,
            "only 201 or 503 while PostgreSQL cuts connections; got {status}: {text}"
        );
        if *status == 503 {
            let body: serde_json::Value = serde_json::from_str(text).expect("JSON error body");
            assert_eq!(body["error"]["code"], "service_unavailable", "{text}");
        }
    }
    assert!(
        statuses.get(&503).copied().unwrap_or(0) >= 1,
        "the cuts hit creates in flight within {DEADLINE:?} ({cuts} cut): {statuses:?}"
    );

    // Every 201 is stored (read straight from the database, on a fresh connection).
    let ids: Vec<Uuid> = answers
        .iter()
        .filter(|(status, _)| *status == 201)
        .map(|(_, text)| {
            let body: serde_json::Value = serde_json::from_str(text).expect("JSON");
            Uuid::parse_str(body["id"].as_str().expect("id")).expect("UUID")
        })
        .collect();
    let mut db = url
        .parse::<postgres::Config>()
        .expect("URL")
        .connect(postgres::NoTls)
        .expect("test database");
    let stored: i64 = db
        .query_one(
            "SELECT count(*) FROM notifications WHERE id = ANY($1)",
            &[&ids],
        )
        .expect("count")
        .get(0);
    assert_eq!(stored as usize, ids.len(), "every 201 is stored");
    // And PostgreSQL serves creates again once the cuts stop.
    server.create(&json!({"user_id": user, "kind": "after", "payload": {}}));
}
