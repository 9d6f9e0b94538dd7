//! The store: notifications in PostgreSQL. Creates, keyset-paginated reads, read
//! state (`state`: marks, bulks, exact counts), every read and write filtered by the
//! visibility rule in SQL.
//!
//! Comes after `validate` (creates) and `api` (reads); publishing to Redis after a
//! create commits is `publisher`'s job, not this module's.

mod cursor;
mod idempotency;
mod migrate;
mod pool;
mod state;
mod statements;

use std::time::Duration;

use postgres::types::{Json, ToSql};
use postgres::Row;
use serde_json::Value;
use time::OffsetDateTime;
use uuid::Uuid;

pub use cursor::Cursor;
pub use idempotency::{Claim, Created, IdempotencyKey};
pub use migrate::{check, connect_creating, migrate};
pub use state::{Mark, StateResult};

use crate::auth::{Grants, Identity};
use crate::error::Error;
use crate::notification::{Level, Notification};

/// Largest page a client may ask for.
pub const MAX_PAGE: i64 = 100;

/// Filters of a list or a bulk (read-all, seen-all, archive-all).
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub kind: Option<String>,
    /// That workspace and user-level notifications.
    pub workspace: Option<String>,
    /// Lists only: unread ones only.
    pub unread_only: bool,
    /// Lists only: which archived ones to show.
    pub archived: Archived,
}

/// The list's `archived` filter (its value indexes `Statements::list`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Archived {
    /// `false`, the default: archived ones are hidden.
    #[default]
    Hide = 0,
    /// `true`: archived ones only.
    Only = 1,
    /// `any`: both.
    Any = 2,
}

/// One page of a list, newest first, and the cursor of the next page if any.
#[derive(Debug)]
pub struct Page {
    pub notifications: Vec<Notification>,
    pub next: Option<Cursor>,
}

/// A handle on the database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: r2d2::Pool<pool::Manager>,
}

impl Store {
    pub fn new(url: &str, pool_size: u32) -> Result<Store, Error> {
        let pool = pool::build(url, pool_size).map_err(Error::Internal)?;
        Ok(Store { pool })
    }

    fn conn(&self) -> Result<r2d2::PooledConnection<pool::Manager>, Error> {
        let started = std::time::Instant::now();
        let conn = self.pool.get();
        crate::metrics::METRICS
            .db_pool_wait
            .observe(started.elapsed());
        Ok(conn?)
    }

    /// True when PostgreSQL answers within `timeout`.
    pub fn ping(&self, timeout: Duration) -> Result<(), Error> {
        let mut conn = self.pool.get_timeout(timeout)?;
        conn.client.simple_query("SELECT 1")?;
        Ok(())
    }

    /// Stores new notifications: all of them or none (one statement).
    pub fn insert(&self, batch: &[&Notification]) -> Result<(), Error> {
        let mut conn = self.conn()?;
        let conn = &mut *conn;
        let rows = NewRows::of(batch);
        conn.client
            .execute(&conn.statements.insert, &rows.params())?;
        Ok(())
    }

    /// One page of the caller's visible notifications, newest first.
    pub fn list(
        &self,
        who: &Identity,
        filter: &Filter,
        limit: i64,
        after: Option<Cursor>,
    ) -> Result<Page, Error> {
        let mut conn = self.conn()?;
        let conn = &mut *conn;
        let (all, granted) = grants(who);
        // One extra row tells whether a next page exists without a count.
        let fetch = limit + 1;
        let statement = &conn.statements.list[filter.archived as usize]
            [usize::from(filter.unread_only)][usize::from(after.is_some())];
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![
            &who.user_id,
            &all,
            &granted,
            &filter.kind,
            &filter.workspace,
            &fetch,
        ];
        if let Some(cursor) = &after {
            params.extend([&cursor.created_at as &(dyn ToSql + Sync), &cursor.id]);
        }
        let rows = conn.client.query(statement, &params)?;
        let mut notifications = rows
            .iter()
            .map(row_to_notification)
            .collect::<Result<Vec<_>, _>>()?;
        let next = if notifications.len() as i64 > limit {
            notifications.truncate(limit as usize);
            notifications.last().map(|n| Cursor {
                created_at: n.created_at,
                id: n.id,
            })
        } else {
            None
        };
        Ok(Page {
            notifications,
            next,
        })
    }

    /// Up to `limit` notifications of `user_id` for `workspace` (and user-level ones)
    /// with ids after `after`, oldest first: WebSocket replay and catch-up.
    pub fn newer_than(
        &self,
        user_id: &str,
        workspace: &str,
        after: Uuid,
        limit: i64,
    ) -> Result<Vec<Notification>, Error> {
        self.after(|s| &s.newer_than, &user_id, &workspace, after, limit)
    }

    /// Up to `limit` notifications created after `after`, oldest first, of `users`
    /// (every workspace and user-level) and of `workspaces`' audience: what the
    /// connections registered since the subscriber's last look may have missed.
    /// Workspace-audience rows come without any user's state (they are moments old).
    pub fn created_after(
        &self,
        users: &[&str],
        workspaces: &[&str],
        after: Uuid,
        limit: i64,
    ) -> Result<Vec<Notification>, Error> {
        self.after(|s| &s.created_after, &users, &workspaces, after, limit)
    }

    /// Runs a statement taking (who, where, position after `after`, limit), as
    /// `newer_than` and `created_after` do, and reads its rows.
    fn after(
        &self,
        statement: impl Fn(&statements::Statements) -> &postgres::Statement,
        who: &(dyn ToSql + Sync),
        place: &(dyn ToSql + Sync),
        after: Uuid,
        limit: i64,
    ) -> Result<Vec<Notification>, Error> {
        let mut conn = self.conn()?;
        let conn = &mut *conn;
        let created_at = crate::notification::created_at_of(&after);
        let rows = conn.client.query(
            statement(&conn.statements),
            &[who, place, &created_at, &after, &limit],
        )?;
        rows.iter().map(row_to_notification).collect()
    }
}

/// New rows as the column arrays `statements::NEW_ROWS` binds ($1..$10).
struct NewRows<'a> {
    ids: Vec<Uuid>,
    users: Vec<Option<&'a str>>,
    workspaces: Vec<Option<&'a str>>,
    kinds: Vec<&'a str>,
    levels: Vec<&'a str>,
    titles: Vec<&'a str>,
    messages: Vec<&'a str>,
    payloads: Vec<Json<&'a serde_json::Map<String, Value>>>,
    created: Vec<OffsetDateTime>,
    expires: Vec<Option<OffsetDateTime>>,
}

impl<'a> NewRows<'a> {
    fn of(batch: &[&'a Notification]) -> NewRows<'a> {
        let column = |f: fn(&'a Notification) -> &'a str| batch.iter().map(|n| f(n)).collect();
        NewRows {
            ids: batch.iter().map(|n| n.id).collect(),
            users: batch.iter().map(|n| n.user_id.as_deref()).collect(),
            workspaces: batch.iter().map(|n| n.workspace.as_deref()).collect(),
            kinds: column(|n| &n.kind),
            levels: column(|n| n.level.as_str()),
            titles: column(|n| &n.title),
            messages: column(|n| &n.message),
            payloads: batch.iter().map(|n| Json(&n.payload)).collect(),
            created: batch.iter().map(|n| n.created_at).collect(),
            expires: batch.iter().map(|n| n.expires_at).collect(),
        }
    }

    fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        vec![
            &self.ids,
            &self.users,
            &self.workspaces,
            &self.kinds,
            &self.levels,
            &self.titles,
            &self.messages,
            &self.payloads,
            &self.created,
            &self.expires,
        ]
    }
}

/// The grant parameters of the visibility rule: (all workspaces, granted slugs).
fn grants(who: &Identity) -> (bool, &[String]) {
    match &who.grants {
        Grants::All => (true, &[]),
        Grants::Only(slugs) => (false, slugs.as_slice()),
    }
}

fn row_to_notification(row: &Row) -> Result<Notification, Error> {
    let level: &str = row.get(4);
    let payload: Value = row.get(7);
    let Value::Object(payload) = payload else {
        return Err(Error::Internal("stored payload is not an object".into()));
    };
    Ok(Notification {
        id: row.get(0),
        user_id: row.get(1),
        workspace: row.get(2),
        kind: row.get(3),
        level: Level::parse(level)
            .ok_or_else(|| Error::Internal(format!("stored type {level:?}")))?,
        title: row.get(5),
        message: row.get(6),
        payload,
        read_at: row.get::<_, Option<OffsetDateTime>>(8),
        created_at: row.get(9),
        updated_at: row.get(10),
        seen_at: row.get::<_, Option<OffsetDateTime>>(11),
        archived_at: row.get::<_, Option<OffsetDateTime>>(12),
        expires_at: row.get::<_, Option<OffsetDateTime>>(13),
    })
}
