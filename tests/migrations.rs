//! Schema migrations: a missing database is created, applying twice is a no-op, and
//! two instances migrating at once apply each migration exactly once.

mod common;

use notifd::server::apply_migrations;

fn fresh_database_url(tag: &str) -> String {
    let mut url = common::admin_database_url();
    let cut = url.rfind('/').expect("URL has a database part");
    url.truncate(cut + 1);
    url.push_str(&common::new_user(&format!("notifd_t_{tag}")));
    url
}

#[test]
fn a_missing_database_is_created_and_applying_twice_is_a_no_op() {
    let url = fresh_database_url("mig");
    let first = apply_migrations(&url).expect("first run applies");
    assert!(first >= 1, "the first run applies every migration");
    assert_eq!(apply_migrations(&url).expect("second run"), 0);
    let mut client = postgres::Client::connect(&url, postgres::NoTls).expect("connect");
    let recorded: i64 = client
        .query_one("SELECT count(*) FROM notifd_migrations", &[])
        .expect("tracking table")
        .get(0);
    assert_eq!(recorded, first as i64);
}

#[test]
fn concurrent_instances_apply_each_migration_once() {
    let url = fresh_database_url("race");
    // Create the database first so both threads race on the migrations themselves.
    let mut client = notifd::store::connect_creating(&url).expect("database created");
    let runs: Vec<usize> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|_| scope.spawn(|| apply_migrations(&url).expect("migrate")))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });
    let total: usize = runs.iter().sum();
    let recorded: i64 = client
        .query_one("SELECT count(*) FROM notifd_migrations", &[])
        .expect("tracking table")
        .get(0);
    assert!(recorded >= 1, "the migrations were applied");
    assert_eq!(
        total as i64, recorded,
        "each migration applied by exactly one instance: {runs:?}"
    );
}
