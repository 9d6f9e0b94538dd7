//! Retention (`NOTIFD_RETENTION_DAYS`, off by default): a background thread deletes
//! notifications older than the period, in small batches so no delete holds locks for
//! long, on one instance at a time (a PostgreSQL advisory lock). Each DELETE moves
//! the unread/unseen counters in its own transaction (the triggers of
//! `sql/0002_states.sql`), so counts stay exact through a pass.

use std::thread::JoinHandle;
use std::time::Duration;

use postgres::{Client, NoTls};

use crate::error::Error;
use crate::metrics::METRICS;
use crate::shutdown::Shutdown;

/// Rows per DELETE: each batch is one short transaction.
const BATCH: i64 = 1000;
/// Most batches one pass may run before yielding until the next pass.
const MAX_BATCHES: usize = 10_000;
/// Time between passes.
const EVERY: Duration = Duration::from_secs(3600);
/// Key of the advisory lock that elects the one instance running a pass.
pub const RETENTION_LOCK: i64 = 0x6e6f_7469_6672; // "notifr"

/// Deletes notifications older than `days` now; returns how many were deleted, or
/// `None` when another instance holds the retention lock.
pub fn run_once(database_url: &str, days: u32) -> Result<Option<u64>, Error> {
    let mut client = Client::connect(database_url, NoTls)?;
    let locked: bool = client
        .query_one("SELECT pg_try_advisory_lock($1)", &[&RETENTION_LOCK])?
        .get(0);
    if !locked {
        return Ok(None);
    }
    let result = delete_old(&mut client, days);
    let _ = client.execute("SELECT pg_advisory_unlock($1)", &[&RETENTION_LOCK]);
    result.map(Some)
}

fn delete_old(client: &mut Client, days: u32) -> Result<u64, Error> {
    let statement = client.prepare(
        "DELETE FROM notifications WHERE id IN ( \
             SELECT id FROM notifications \
             WHERE created_at < now() - make_interval(days => $1) LIMIT $2)",
    )?;
    // Config caps it at MAX_RETENTION_DAYS, far inside an i32.
    let days =
        i32::try_from(days).map_err(|_| Error::Internal(format!("retention of {days} days")))?;
    let mut total = 0;
    for _ in 0..MAX_BATCHES {
        let deleted = client.execute(&statement, &[&days, &BATCH])?;
        total += deleted;
        METRICS
            .retention_deleted
            .fetch_add(deleted, std::sync::atomic::Ordering::Relaxed);
        if deleted < BATCH as u64 {
            break;
        }
    }
    Ok(total)
}

/// Starts the retention thread: a pass at start, then one every hour.
pub fn spawn(
    database_url: String,
    days: u32,
    shutdown: Shutdown,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("notifd-retention".into())
        .stack_size(512 * 1024)
        .spawn(move || loop {
            match run_once(&database_url, days) {
                Ok(Some(deleted)) => {
                    log::info!(deleted = deleted, days = days; "retention pass done")
                }
                Ok(None) => log::debug!("retention pass skipped: another instance runs it"),
                Err(err) => log::warn!(error = err.to_string().as_str(); "retention pass failed"),
            }
            if shutdown.wait(EVERY) {
                return;
            }
        })
}
