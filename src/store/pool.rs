//! The PostgreSQL connection pool: r2d2 over the blocking `postgres` client, with
//! every statement prepared once per connection (a prepared statement costs one round
//! trip per query; an unprepared one costs two).

use std::time::Duration;

use postgres::config::Host;
use postgres::{Client, NoTls, Statement};

use crate::error::postgres_cause;

/// The columns of a notification row, in the order `store::row_to_notification` reads.
pub const COLUMNS: &str =
    "id, user_id, workspace, kind, type, title, message, payload, read_at, created_at, updated_at";

/// The visibility rule (contract §2): $1 user id, $2 grants all workspaces,
/// $3 granted workspace slugs.
const VISIBLE: &str = "user_id = $1 AND (workspace IS NULL OR $2 OR workspace = ANY($3))";

/// Optional list filters: $4 kind, $5 workspace (that workspace plus user-level ones,
/// as a WebSocket on that workspace receives them).
const FILTERS: &str =
    "($4::text IS NULL OR kind = $4) AND ($5::text IS NULL OR workspace IS NULL OR workspace = $5)";

/// Every statement notifd runs, prepared on each pooled connection.
pub struct Statements {
    /// New notifications, many at once.
    pub insert: Statement,
    /// List pages: [unread only][after a cursor]. Separate statements because an
    /// `OR $cursor IS NULL` form stops PostgreSQL from using the keyset index.
    pub list: [[Statement; 2]; 2],
    pub mark_read: Statement,
    pub mark_all_read: Statement,
    pub unread_count: Statement,
    /// Replay for `since=`: newer than a position, oldest first.
    pub newer_than: Statement,
}

impl Statements {
    fn prepare(client: &mut Client) -> Result<Statements, postgres::Error> {
        let list = |unread: bool, after: bool| {
            format!(
                "SELECT {COLUMNS} FROM notifications WHERE {VISIBLE} AND {FILTERS}{}{} \
                 ORDER BY created_at DESC, id DESC LIMIT $6",
                if unread { " AND read_at IS NULL" } else { "" },
                if after {
                    " AND (created_at, id) < ($7, $8)"
                } else {
                    ""
                },
            )
        };
        Ok(Statements {
            // Any number of rows in one statement (one implicit transaction): a group
            // of creates commits once.
            insert: client.prepare(
                "INSERT INTO notifications \
                 (id, user_id, workspace, kind, type, title, message, payload, created_at, updated_at) \
                 SELECT id, user_id, workspace, kind, type, title, message, payload, created_at, created_at \
                 FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], \
                             $7::text[], $8::jsonb[], $9::timestamptz[]) \
                 AS new(id, user_id, workspace, kind, type, title, message, payload, created_at)",
            )?,
            list: [
                [client.prepare(&list(false, false))?, client.prepare(&list(false, true))?],
                [client.prepare(&list(true, false))?, client.prepare(&list(true, true))?],
            ],
            // Driven by the ids (a join on the primary key), so the plan PostgreSQL
            // caches for this statement cannot turn into a scan of the user's unread
            // rows, as `id = ANY($4)` did once the table grew.
            mark_read: client.prepare(&format!(
                "UPDATE notifications SET read_at = $5, updated_at = $5 \
                 FROM unnest($4::uuid[]) AS wanted(id) \
                 WHERE notifications.id = wanted.id AND {VISIBLE} AND read_at IS NULL"
            ))?,
            mark_all_read: client.prepare(&format!(
                "UPDATE notifications SET read_at = $6, updated_at = $6 \
                 WHERE {VISIBLE} AND {FILTERS} AND read_at IS NULL"
            ))?,
            unread_count: client.prepare(&format!(
                "SELECT count(*) FROM notifications WHERE {VISIBLE} AND {FILTERS} AND read_at IS NULL"
            ))?,
            newer_than: client.prepare(&format!(
                "SELECT {COLUMNS} FROM notifications \
                 WHERE user_id = $1 AND (workspace IS NULL OR workspace = $2) AND (created_at, id) > ($3, $4) \
                 ORDER BY created_at, id LIMIT $5"
            ))?,
        })
    }
}

/// A pooled connection with its prepared statements.
pub struct Connection {
    pub client: Client,
    pub statements: Statements,
}

/// Opens connections for r2d2.
pub struct Manager {
    config: postgres::Config,
    /// `server(&config)`, for error messages.
    server: String,
}

/// Why the pool could not open a connection: names the server and says what it (or
/// the OS) answered. r2d2 keeps the text of the last one for the request that times
/// out waiting, so a 503's log line says why.
#[derive(Debug)]
pub struct ConnectError(String);

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConnectError {}

impl r2d2::ManageConnection for Manager {
    type Connection = Connection;
    type Error = ConnectError;

    fn connect(&self) -> Result<Connection, ConnectError> {
        let failed = |err: postgres::Error| {
            ConnectError(format!(
                "cannot connect to {}: {}",
                self.server,
                postgres_cause(&err)
            ))
        };
        let mut client = self.config.connect(NoTls).map_err(failed)?;
        let statements = Statements::prepare(&mut client).map_err(failed)?;
        Ok(Connection { client, statements })
    }

    fn is_valid(&self, conn: &mut Connection) -> Result<(), ConnectError> {
        conn.client
            .simple_query("")
            .map(|_| ())
            .map_err(|e| ConnectError(postgres_cause(&e)))
    }

    fn has_broken(&self, conn: &mut Connection) -> bool {
        conn.client.is_closed()
    }
}

/// The pool. Building it does not connect: connections open on first use, so notifd
/// starts (and answers `/readyz` with 503) while PostgreSQL is still down.
pub fn build(url: &str, size: u32) -> Result<r2d2::Pool<Manager>, String> {
    let mut config: postgres::Config = url.parse().map_err(|e| format!("bad database URL: {e}"))?;
    config.connect_timeout(Duration::from_secs(3));
    config.application_name("notifd");
    Ok(r2d2::Pool::builder()
        .max_size(size)
        .min_idle(Some(0))
        // A checkout test costs a round trip per request; a broken connection is
        // noticed by `has_broken` instead.
        .test_on_check_out(false)
        .connection_timeout(Duration::from_secs(3))
        // Failures reach the client as 503 and the log once per request; r2d2's own
        // logging would repeat each one from its background threads.
        .error_handler(Box::new(r2d2::NopErrorHandler))
        .build_unchecked(Manager {
            server: server(&config),
            config,
        }))
}

/// The server a configuration points at, for messages: `host:port (database D,
/// user U)`. Never the password.
pub fn server(config: &postgres::Config) -> String {
    let ports = config.get_ports();
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, host)| {
            // libpq's rule: one port for all hosts, or one per host; 5432 by default.
            let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
            match host {
                Host::Tcp(name) => format!("{name}:{port}"),
                Host::Unix(dir) => format!("{}/.s.PGSQL.{port}", dir.display()),
            }
        })
        .collect();
    format!(
        "{} (database {}, user {})",
        if hosts.is_empty() {
            "no host".to_string()
        } else {
            hosts.join(",")
        },
        config.get_dbname().unwrap_or("-"),
        config.get_user().unwrap_or("-"),
    )
}
