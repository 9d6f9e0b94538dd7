//! The PostgreSQL connection pool: r2d2 over the blocking `postgres` client, with
//! every statement of `statements` prepared once per connection.

use std::time::Duration;

use postgres::config::Host;
use postgres::{Client, NoTls};

pub use super::statements::Statements;

use crate::error::postgres_cause;

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
