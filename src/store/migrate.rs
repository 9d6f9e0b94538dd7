//! Schema migrations: the numbered files of `sql/`, embedded in the binary and applied
//! in order inside one transaction under an advisory lock, so two instances starting
//! together never both apply, and applying twice is a no-op.

use postgres::{Client, NoTls};

use crate::error::{postgres_cause, Error};

/// Every migration, in order: (version, name, SQL).
const MIGRATIONS: &[(i32, &str, &str)] = &[
    (
        1,
        "notifications",
        include_str!("../../sql/0001_notifications.sql"),
    ),
    (2, "states", include_str!("../../sql/0002_states.sql")),
    (
        3,
        "idempotency_expiry",
        include_str!("../../sql/0003_idempotency_expiry.sql"),
    ),
    (
        4,
        "workspace_audience",
        include_str!("../../sql/0004_workspace_audience.sql"),
    ),
];

/// Key of the advisory lock that serializes migrations across instances.
const MIGRATION_LOCK: i64 = 0x6e6f_7469_6664; // "notifd"

/// Applies pending migrations; returns how many were applied.
pub fn migrate(client: &mut Client) -> Result<usize, Error> {
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS notifd_migrations (
            version    integer     PRIMARY KEY,
            name       text        NOT NULL,
            applied_at timestamptz NOT NULL DEFAULT now()
        )",
    )?;
    let applied: Vec<i32> = tx
        .query("SELECT version FROM notifd_migrations", &[])?
        .iter()
        .map(|row| row.get(0))
        .collect();
    let mut count = 0;
    for (version, name, sql) in MIGRATIONS {
        if applied.contains(version) {
            continue;
        }
        tx.batch_execute(sql)
            .map_err(|e| Error::Internal(format!("migration {version} ({name}) failed: {e}")))?;
        tx.execute(
            "INSERT INTO notifd_migrations (version, name) VALUES ($1, $2)",
            &[version, name],
        )?;
        log::info!(version = *version, name = *name; "migration applied");
        count += 1;
    }
    tx.commit()?;
    Ok(count)
}

/// Connects to the configured database, creating it first when it does not exist
/// (connecting to the `postgres` maintenance database on the same server to do so).
/// A failure names the server and says what it answered: "password authentication
/// failed", "connection refused", "permission denied to create database".
pub fn connect_creating(url: &str) -> Result<Client, Error> {
    let mut config: postgres::Config = url
        .parse()
        .map_err(|e| Error::Internal(format!("bad database URL: {e}")))?;
    config.notice_callback(log_notice);
    match config.connect(NoTls) {
        Ok(client) => Ok(client),
        Err(err) if err.code() == Some(&postgres::error::SqlState::INVALID_CATALOG_NAME) => {
            let name = config.get_dbname().unwrap_or("notifd").to_string();
            let mut admin = config.clone();
            admin.dbname("postgres");
            let mut client = admin.connect(NoTls).map_err(|e| {
                unavailable(
                    format!("database {name:?} does not exist; to create it, connect to"),
                    &admin,
                    &e,
                )
            })?;
            let quoted = format!("\"{}\"", name.replace('"', "\"\""));
            match client.batch_execute(&format!("CREATE DATABASE {quoted}")) {
                Ok(()) => log::info!(database = name.as_str(); "database created"),
                // Another instance created it first: fine.
                Err(e) if e.code() == Some(&postgres::error::SqlState::DUPLICATE_DATABASE) => {}
                Err(e) => {
                    return Err(unavailable(
                        format!("database {name:?} does not exist, and cannot create it on"),
                        &admin,
                        &e,
                    ))
                }
            }
            config
                .connect(NoTls)
                .map_err(|e| unavailable("cannot connect to".into(), &config, &e))
        }
        Err(err) => Err(unavailable("cannot connect to".into(), &config, &err)),
    }
}

/// For `notifd check-config`: connects within `timeout` and runs `SELECT 1`,
/// creating nothing. A missing database is fine when the server answers, since
/// `serve` and `migrate` create it. Ok and Err both name the server, never the
/// password.
pub fn check(url: &str, timeout: std::time::Duration) -> Result<String, String> {
    let mut config: postgres::Config = url.parse().map_err(|e| format!("bad database URL: {e}"))?;
    config.connect_timeout(timeout).notice_callback(log_notice);
    let server = super::pool::server(&config);
    let failed = |e: &postgres::Error| format!("{server}: {}", postgres_cause(e));
    match config.connect(NoTls) {
        Ok(mut client) => {
            client.simple_query("SELECT 1").map_err(|e| failed(&e))?;
            Ok(format!("{server}: ok"))
        }
        Err(err) if err.code() == Some(&postgres::error::SqlState::INVALID_CATALOG_NAME) => {
            let mut admin = config.clone();
            admin.dbname("postgres");
            admin.connect(NoTls).map_err(|e| failed(&e))?;
            Ok(format!(
                "{server}: ok (the database does not exist yet; serve and migrate create it)"
            ))
        }
        Err(err) => Err(failed(&err)),
    }
}

/// PostgreSQL notices (`relation "notifd_migrations" already exists, skipping` on
/// every start) at debug: they are routine, and the postgres crate logs them at info.
fn log_notice(notice: postgres::error::DbError) {
    log::debug!(severity = notice.severity(), code = notice.code().code(); "postgresql notice: {}", notice.message());
}

/// "`what` `server`: `cause`", as a 503-class error: a database notifd cannot use.
fn unavailable(what: String, config: &postgres::Config, err: &postgres::Error) -> Error {
    Error::Unavailable {
        dependency: "postgresql",
        detail: format!(
            "{what} {}: {}",
            super::pool::server(config),
            postgres_cause(err)
        ),
    }
}
