//! The sweeps that delete what notifd no longer keeps, on background threads:
//!
//! - expiry (`NOTIFD_*`-free, always on): a thread on every instance deletes
//!   notifications whose `expires_at` has come, as soon as it comes (it sleeps until
//!   the next one is due, at most a second). The DELETE moves the unread/unseen
//!   counters in its own transaction (the triggers of `sql/0002_states.sql`), so
//!   counts follow at expiry, and it publishes the counter rows it moved (the
//!   `counts` events of connected clients); the read paths also hide expired rows
//!   themselves (`store::statements`), so nothing shows in between.
//! - the hourly pass, on one instance at a time (a PostgreSQL advisory lock), in
//!   small batches so no delete holds locks for long: notifications older than
//!   `NOTIFD_RETENTION_DAYS` (when set), expired ones the expiry thread missed (all
//!   instances down at the time), and idempotency keys older than
//!   `NOTIFD_IDEMPOTENCY_WINDOW`. It runs even without a retention period, for those.

use std::collections::BTreeSet;
use std::thread::JoinHandle;
use std::time::Duration;

use postgres::{Client, NoTls};

use crate::config::Config;
use crate::error::Error;
use crate::metrics::METRICS;
use crate::publisher::Publisher;
use crate::shutdown::Shutdown;
use crate::store::Store;

/// Rows per DELETE: each batch is one short transaction.
const BATCH: i64 = 1000;
/// Most batches one pass may run before yielding until the next pass.
const MAX_BATCHES: usize = 10_000;
/// Time between passes.
const EVERY: Duration = Duration::from_secs(3600);
/// Longest sleep of the expiry thread: a notification created to expire sooner than
/// the one it waits for is deleted at most this late (and hidden meanwhile).
const EXPIRY_TICK: Duration = Duration::from_secs(1);
/// How long the expiry thread waits for PostgreSQL to accept a connection: bounded,
/// so a shutdown never waits on an unreachable server for the OS's TCP timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Key of the advisory lock that elects the one instance running a pass.
pub const RETENTION_LOCK: i64 = 0x6e6f_7469_6672; // "notifr"

/// What an hourly pass deletes.
#[derive(Debug, Clone, Copy)]
pub struct Sweep {
    /// Notifications older than this many days; `None`: kept forever.
    pub retention_days: Option<u32>,
    /// Idempotency keys older than this.
    pub idempotency_window: Duration,
}

/// What a pass deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Swept {
    pub old: u64,
    pub expired: u64,
    pub keys: u64,
}

/// Deletes notifications older than `days` now (and expired ones, and keys older than
/// the default window); returns how many notifications were deleted for their age,
/// or `None` when another instance holds the lock.
pub fn run_once(database_url: &str, days: u32) -> Result<Option<u64>, Error> {
    let sweep = Sweep {
        retention_days: Some(days),
        idempotency_window: crate::config::DEFAULT_IDEMPOTENCY_WINDOW,
    };
    Ok(sweep_once(database_url, &sweep)?.map(|swept| swept.old))
}

/// Runs one pass now; `None` when another instance holds the lock.
pub fn sweep_once(database_url: &str, sweep: &Sweep) -> Result<Option<Swept>, Error> {
    let mut client = Client::connect(database_url, NoTls)?;
    let locked: bool = client
        .query_one("SELECT pg_try_advisory_lock($1)", &[&RETENTION_LOCK])?
        .get(0);
    if !locked {
        return Ok(None);
    }
    let result = sweep_with(&mut client, sweep);
    let _ = client.execute("SELECT pg_advisory_unlock($1)", &[&RETENTION_LOCK]);
    result.map(Some)
}

fn sweep_with(client: &mut Client, sweep: &Sweep) -> Result<Swept, Error> {
    let old = match sweep.retention_days {
        // Config caps it at MAX_RETENTION_DAYS, far inside an i32.
        Some(days) => {
            let days = i32::try_from(days)
                .map_err(|_| Error::Internal(format!("retention of {days} days")))?;
            in_batches(
                client,
                "DELETE FROM notifications WHERE id IN ( \
                     SELECT id FROM notifications \
                     WHERE created_at < now() - make_interval(days => $1) LIMIT $2) \
                 RETURNING 1",
                &[&days],
                |_| (),
            )?
        }
        None => 0,
    };
    METRICS
        .retention_deleted
        .fetch_add(old, std::sync::atomic::Ordering::Relaxed);
    let (expired, _) = expire_due(client)?;
    let seconds = sweep.idempotency_window.as_secs_f64();
    let keys = in_batches(
        client,
        "DELETE FROM idempotency_keys WHERE ctid = ANY(ARRAY( \
             SELECT ctid FROM idempotency_keys \
             WHERE created_at < now() - make_interval(secs => $1) LIMIT $2)) \
         RETURNING 1",
        &[&seconds],
        |_| (),
    )?;
    Ok(Swept { old, expired, keys })
}

/// Runs a DELETE … RETURNING taking `params` then the batch size until a batch
/// deletes less than a batch (or `MAX_BATCHES` ran), handing each batch's rows to
/// `each`; returns how many rows it deleted.
fn in_batches(
    client: &mut Client,
    sql: &str,
    params: &[&(dyn postgres::types::ToSql + Sync)],
    mut each: impl FnMut(&[postgres::Row]),
) -> Result<u64, Error> {
    let statement = client.prepare(sql)?;
    let mut params = params.to_vec();
    params.push(&BATCH);
    let mut total = 0;
    for _ in 0..MAX_BATCHES {
        let rows = client.query(&statement, &params)?;
        each(&rows);
        total += rows.len() as u64;
        if rows.len() < BATCH as usize {
            break;
        }
    }
    Ok(total)
}

/// The (user, workspace or user-level) counter rows a delete moved.
pub type Moved = BTreeSet<(String, Option<String>)>;

/// Deletes every notification whose `expires_at` has come, in batches; rows another
/// instance is deleting at the same moment are skipped, not waited for. Returns how
/// many, and the counter rows the deletes moved: the owner's, or for a
/// workspace-audience row its workspace's broadcasts row ('' user) and the row of
/// every user who had marked it (their state rows go in the same statement, which
/// returns them, rather than by the cascade, which would not).
pub fn expire_due(client: &mut Client) -> Result<(u64, Moved), Error> {
    let mut moved = Moved::new();
    let mut deleted = 0;
    in_batches(
        client,
        "WITH due AS ( \
             SELECT id FROM notifications WHERE expires_at <= now() \
             ORDER BY expires_at LIMIT $1 FOR UPDATE SKIP LOCKED), \
         states AS ( \
             DELETE FROM notification_states WHERE notification_id IN (SELECT id FROM due) \
             RETURNING user_id, workspace), \
         gone AS ( \
             DELETE FROM notifications WHERE id IN (SELECT id FROM due) \
             RETURNING coalesce(user_id, '') AS user_id, workspace) \
         SELECT user_id, workspace, true FROM gone \
         UNION ALL SELECT user_id, workspace, false FROM states",
        &[],
        |rows| {
            for row in rows {
                let notification: bool = row.get(2);
                deleted += u64::from(notification);
                moved.insert((row.get(0), row.get(1)));
            }
        },
    )?;
    Ok((deleted, moved))
}

/// How long until the next notification expires, at most `EXPIRY_TICK`.
fn until_next_expiry(client: &mut Client) -> Result<Duration, Error> {
    let seconds: Option<f64> = client
        .query_one(
            "SELECT extract(epoch FROM min(expires_at) - now())::float8 \
             FROM notifications WHERE expires_at IS NOT NULL",
            &[],
        )?
        .get(0);
    Ok(seconds.map_or(EXPIRY_TICK, |s| {
        Duration::from_secs_f64(s.clamp(0.0, EXPIRY_TICK.as_secs_f64()))
    }))
}

/// Starts the sweeps: the hourly pass (`spawn`) and the expiry thread (essential: expiry is part of what every read relies on).
pub fn start(
    config: &Config,
    shutdown: &Shutdown,
    store: &Store,
    publisher: &Publisher,
) -> Result<Vec<JoinHandle<()>>, Error> {
    let sweep = Sweep {
        retention_days: config.retention_days,
        idempotency_window: config.idempotency_window,
    };
    let hourly = spawn(config.database_url.clone(), sweep, shutdown.clone())
        .map_err(|e| Error::Startup(format!("cannot start retention: {e}")))?;
    let (url, stop) = (config.database_url.clone(), shutdown.clone());
    let (store, publisher) = (store.clone(), publisher.clone());
    let expiry =
        crate::supervise::spawn_essential("notifd-expiry", 512 * 1024, move || stop.is_fired(), {
            let shutdown = shutdown.clone();
            move || expire_until_shutdown(&url, &shutdown, &store, &publisher)
        })
        .map_err(|e| Error::Startup(format!("cannot start the expiry thread: {e}")))?;
    Ok(vec![hourly, expiry])
}

/// The expiry thread's loop: delete what is due, tell the instances the counters it
/// moved (`counts` events, as after creates), sleep until the next is due (or a
/// tick), on a connection of its own, reconnecting after a failure.
fn expire_until_shutdown(
    database_url: &str,
    shutdown: &Shutdown,
    store: &Store,
    publisher: &Publisher,
) {
    let mut client: Option<Client> = None;
    let mut failing = false;
    loop {
        crate::supervise::fault_point("notifd-expiry");
        let turn = (|| {
            let conn = match &mut client {
                Some(conn) => conn,
                None => client.insert(
                    database_url
                        .parse::<postgres::Config>()?
                        .connect_timeout(CONNECT_TIMEOUT)
                        .connect(NoTls)?,
                ),
            };
            let (_, moved) = expire_due(conn)?;
            if !moved.is_empty() {
                let pairs: Vec<(String, Option<String>)> = moved.into_iter().collect();
                crate::committer::publish_counts(store, publisher, &pairs);
            }
            until_next_expiry(conn)
        })();
        let pause = match turn {
            Ok(pause) => {
                failing = false;
                pause
            }
            Err(err) => {
                if !failing {
                    log::warn!(error = err.to_string().as_str(); "expiry pass failed; retrying every second");
                }
                failing = true;
                client = None;
                EXPIRY_TICK
            }
        };
        if shutdown.wait(pause) {
            return;
        }
    }
}

/// Starts the hourly pass thread. With a retention period the first pass runs at
/// start (old rows may have piled up while notifd was down); without one, after the
/// first hour: keys and missed expired rows can wait, and a fleet starting up does
/// not contend for the lock.
fn spawn(
    database_url: String,
    sweep: Sweep,
    shutdown: Shutdown,
) -> std::io::Result<JoinHandle<()>> {
    let mut pause = match sweep.retention_days {
        Some(_) => Duration::ZERO,
        None => EVERY,
    };
    std::thread::Builder::new()
        .name("notifd-retention".into())
        .stack_size(512 * 1024)
        .spawn(move || loop {
            if shutdown.wait(pause) {
                return;
            }
            pause = EVERY;
            match sweep_once(&database_url, &sweep) {
                Ok(Some(swept)) => log::info!(
                    deleted = swept.old, expired = swept.expired, idempotency_keys = swept.keys;
                    "retention pass done"
                ),
                Ok(None) => log::debug!("retention pass skipped: another instance runs it"),
                Err(err) => log::warn!(error = err.to_string().as_str(); "retention pass failed"),
            }
        })
}
