//! Rows written straight into PostgreSQL for the read scenarios (history,
//! broadcast-history): the connection, INSERT … SELECT over generate_series in
//! chunks, and the check that every seeded id is a UUIDv7 whose first 48 bits are
//! its `created_at` millisecond, as notifd itself stores them. The INSERTs fire
//! notifd's counter triggers, so `notification_counts` agrees with the rows.

use std::time::Instant;

use tokio::task::JoinHandle;
use tokio_postgres::types::ToSql;
use tokio_postgres::Client;

/// Rows per INSERT of a seed.
const CHUNK: u64 = 100_000;

/// A PostgreSQL session on notifd's database; its connection task ends on drop.
pub struct Pg {
    pub client: Client,
    driver: JoinHandle<Result<(), tokio_postgres::Error>>,
}

impl Drop for Pg {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

pub async fn connect(url: &str) -> Result<Pg, String> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .map_err(|e| format!("cannot connect to PostgreSQL: {e}"))?;
    Ok(Pg {
        client,
        driver: tokio::spawn(connection),
    })
}

/// Rows `from..=to` of a seed, as SQL expressions over the row number `g` (and, for
/// `user` and `workspace`, the other columns of `t`: `t.g`).
pub struct Series<'a> {
    /// `user_id`: `'heavy'`, `'hist' || (g % 10000)`, or `NULL` (workspace audience).
    pub user: &'a str,
    /// `workspace`, over `t.g`: `'w'`, or NULL for user-level rows.
    pub workspace: &'a str,
    /// Row `g` is created at `base_ms + g * step_ms` (ms since the epoch).
    pub base_ms: i64,
    pub step_ms: i64,
    pub from: u64,
    pub to: u64,
    /// True for a row seeded read (a minute after its creation); `false`: all unread.
    pub read: &'a str,
    /// Salts the random bits of the ids: one per series of a database.
    pub salt: &'a str,
}

impl Pg {
    /// Lets the seed's commits skip the wait for the disk (this session only).
    pub async fn fast_commits(&self) -> Result<(), String> {
        self.client
            .batch_execute("SET synchronous_commit = off")
            .await
            .map_err(|e| format!("seed: {e}"))
    }

    /// Inserts `series` in chunks of `CHUNK` rows, logging each as `what`.
    pub async fn insert(&self, series: &Series<'_>, what: &str) -> Result<(), String> {
        let started = Instant::now();
        let total = series.to + 1 - series.from;
        let mut from = series.from;
        while from <= series.to {
            let to = (from + CHUNK - 1).min(series.to);
            let chunk = Series {
                from,
                to,
                ..*series
            };
            self.client
                .batch_execute(&insert_sql(&chunk))
                .await
                .map_err(|e| format!("seed {what}: {e}"))?;
            from = to + 1;
            eprintln!(
                "notifd-bench: seeded {} of {total} rows of {what} ({:.0}s)",
                from - series.from,
                started.elapsed().as_secs_f64()
            );
        }
        Ok(())
    }

    /// So the planner knows the seed's rows before anything is timed.
    pub async fn vacuum(&self) -> Result<(), String> {
        self.client
            .batch_execute("VACUUM (ANALYZE) notifications")
            .await
            .map_err(|e| format!("vacuum: {e}"))
    }

    /// Of up to 1,000 rows `WHERE {filter}`, how many have an id whose first 48 bits
    /// are not their `created_at` millisecond (0 for a good seed).
    pub async fn mismatched_ids(
        &self,
        filter: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<i64, String> {
        let sql = format!(
            "SELECT count(*) FROM (SELECT id, created_at FROM notifications WHERE {filter} LIMIT 1000) s
             WHERE ('x' || substr(replace(id::text, '-', ''), 1, 12))::bit(48)::bigint
                   <> (extract(epoch FROM created_at) * 1000)::bigint"
        );
        let row = self
            .client
            .query_one(&sql, params)
            .await
            .map_err(|e| format!("check ids: {e}"))?;
        Ok(row.get(0))
    }
}

/// One INSERT … SELECT over generate_series(from, to). UUIDv7: 48 bits of ms, version
/// 7, 12 random bits, variant 10xx, 62 random bits (from md5 of the row number).
fn insert_sql(s: &Series) -> String {
    let Series {
        user,
        workspace,
        base_ms,
        step_ms,
        from,
        to,
        read,
        salt,
    } = s;
    format!(
        "INSERT INTO notifications
            (id, user_id, workspace, kind, type, title, message, payload, read_at, created_at, updated_at)
         SELECT (lpad(to_hex(t.ms), 12, '0') || '7' || substr(t.h, 1, 3)
                 || substr('89ab', 1 + (t.g % 4)::int, 1) || substr(t.h, 4, 15))::uuid,
                t.user_id,
                {workspace},
                (ARRAY['JOB_FAILED','record_created','comment.added','deploy:done','invoice.paid'])[1 + (t.g % 5)::int],
                (ARRAY['info','success','warning','error','alert'])[1 + (t.g % 7 % 5)::int],
                'Seeded notification ' || t.g,
                'history benchmark row ' || t.g || ' for ' || coalesce(t.user_id, 'the workspace'),
                jsonb_build_object('seed', t.g, 'source', 'notifd-bench'),
                CASE WHEN t.read THEN t.at + interval '1 minute' END,
                t.at,
                CASE WHEN t.read THEN t.at + interval '1 minute' ELSE t.at END
         FROM (SELECT g,
                      ({user})::text AS user_id,
                      {base_ms}::bigint + g * {step_ms} AS ms,
                      timestamptz 'epoch' + ({base_ms}::bigint + g * {step_ms}) * interval '1 millisecond' AS at,
                      md5('{salt}' || g::text) AS h,
                      ({read}) AS read
               FROM generate_series({from}::bigint, {to}::bigint) AS g) t"
    )
}
