//! Read state: marks by ids, bulks (read-all, seen-all, archive-all) and the exact
//! counts. Each mark or bulk runs in a transaction of its own that also reads back
//! the counter rows it moved, so what it reports (`events::StateMessage`) is exactly
//! what it committed.
//!
//! The counters themselves are kept by the triggers of `sql/0002_states.sql`, not
//! here: no write path can forget them. `api` calls this module, then publishes.

use postgres::types::ToSql;
use postgres::Transaction;
use uuid::Uuid;

use super::statements::{Statements, MARKS};
use super::{grants, Filter, Store};
use crate::auth::{Grants, Identity};
use crate::error::Error;
use crate::events::{
    BulkFilter, ChangedId, Changes, CounterRow, Counts, Field, StateChange, StateMessage,
};

/// A mark by ids (`PATCH /v1/notifications/…`); the value indexes `MARKS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    Read = 0,
    Seen = 1,
    Unread = 2,
    Archive = 3,
    Unarchive = 4,
}

/// What a mark or bulk did: how many rows it changed and, when that is any, the
/// message the other devices need.
#[derive(Debug)]
pub struct StateResult {
    pub updated: u64,
    pub message: Option<StateMessage>,
}

const UNCHANGED: StateResult = StateResult {
    updated: 0,
    message: None,
};

/// Tries of a state transaction that PostgreSQL aborted as a deadlock or
/// serialization failure: two marks of one user over overlapping rows can lock them
/// in different orders, and PostgreSQL then aborts one; run again, it goes through.
const TRIES: usize = 3;

impl Store {
    /// Applies `mark` to those of `ids` the caller sees; others are ignored.
    pub fn mark(&self, who: &Identity, mark: Mark, ids: &[Uuid]) -> Result<StateResult, Error> {
        // Sorted and unique: concurrent marks lock shared rows in one order.
        let mut ids = ids.to_vec();
        ids.sort_unstable_by(|a, b| b.cmp(a));
        ids.dedup();
        let (field, set) = MARKS[mark as usize];
        let (all, granted) = grants(who);
        let now = crate::notification::now();
        self.transaction(|tx, statements| {
            let rows = tx.query(
                &statements.marks[mark as usize],
                &[&who.user_id, &all, &granted, &ids, &now],
            )?;
            let mut changed: Vec<ChangedId> = rows
                .iter()
                .map(|row| ChangedId {
                    id: row.get(0),
                    workspace: row.get(1),
                })
                .collect();
            if changed.is_empty() {
                return Ok(UNCHANGED);
            }
            // Oldest first, whatever order the rows were changed in.
            changed.sort_unstable_by_key(|c| c.id);
            let workspaces: Vec<Option<String>> =
                changed.iter().map(|c| c.workspace.clone()).collect();
            let counters = counter_rows(tx, statements, &who.user_id, &workspaces)?;
            let change = StateChange::Ids {
                ids: changed,
                changes: Changes::one(field, set.then_some(now)),
            };
            Ok(result(who, rows.len() as u64, change, counters))
        })
    }

    /// Sets `field` on every visible matching notification that lacks it.
    pub fn mark_all(
        &self,
        who: &Identity,
        field: Field,
        filter: &Filter,
    ) -> Result<StateResult, Error> {
        let (all, granted) = grants(who);
        let now = crate::notification::now();
        self.transaction(|tx, statements| {
            let row = tx.query_one(
                &statements.bulks[field as usize],
                &[
                    &who.user_id,
                    &all,
                    &granted,
                    &filter.kind,
                    &filter.workspace,
                    &now,
                ],
            )?;
            let updated: i64 = row.get(0);
            // No highest id: nothing matched.
            let Some(through) = row.get::<_, Option<Uuid>>(1) else {
                return Ok(UNCHANGED);
            };
            let workspaces: Vec<Option<String>> = row.get(2);
            let counters = counter_rows(tx, statements, &who.user_id, &workspaces)?;
            let change = StateChange::Bulk {
                filter: BulkFilter {
                    workspace: filter.workspace.clone(),
                    kind: filter.kind.clone(),
                },
                through,
                workspaces,
                changes: Changes::one(field, Some(now)),
            };
            Ok(result(who, updated as u64, change, counters))
        })
    }

    /// Unread and unseen of what the caller sees, from the counters (a row per
    /// workspace, never a count of notifications): with `workspace`, that one and
    /// the user-level ones; without, the user-level ones and every granted workspace.
    pub fn counts(&self, who: &Identity, workspace: Option<&str>) -> Result<Counts, Error> {
        let mut conn = self.conn()?;
        let conn = &mut *conn;
        let one: Vec<String>;
        let (all, listed): (bool, &[String]) = match (workspace, &who.grants) {
            (Some(slug), _) => {
                one = vec![slug.to_string()];
                (false, &one)
            }
            (None, Grants::All) => (true, &[]),
            (None, Grants::Only(slugs)) => (false, slugs),
        };
        let row = conn
            .client
            .query_one(&conn.statements.counts, &[&who.user_id, &all, &listed])?;
        Ok(Counts {
            unread: row.get(0),
            unseen: row.get(1),
        })
    }

    /// The counter rows of `user_id` for `workspaces` (`None` = user-level), each
    /// with its version; rows never written read as absent.
    pub fn counter_rows(
        &self,
        user_id: &str,
        workspaces: &[Option<String>],
    ) -> Result<Vec<CounterRow>, Error> {
        let mut conn = self.conn()?;
        let conn = &mut *conn;
        Ok(counter_rows(
            &mut conn.client,
            &conn.statements,
            user_id,
            workspaces,
        )?)
    }

    /// The counter rows of many (user, workspace or user-level) pairs, each with its
    /// user: what a group of creates left, for the `counts` events. Read just after
    /// the creates' commit, so each row is at least as new as that commit; its
    /// version orders it against every other message about that row.
    pub fn counter_rows_of(
        &self,
        pairs: &[(&str, Option<&str>)],
    ) -> Result<Vec<(String, CounterRow)>, Error> {
        let users: Vec<&str> = pairs.iter().map(|(user, _)| *user).collect();
        let workspaces: Vec<&str> = pairs.iter().map(|(_, w)| w.unwrap_or("")).collect();
        let mut conn = self.conn()?;
        let conn = &mut *conn;
        let rows = conn
            .client
            .query(&conn.statements.counter_rows_of, &[&users, &workspaces])?;
        Ok(rows
            .iter()
            .map(|row| (row.get(0), counter_row(row, 1)))
            .collect())
    }

    /// Runs `work` in a transaction, again (up to `TRIES`) when PostgreSQL aborted it
    /// as a deadlock or serialization failure.
    fn transaction<T>(
        &self,
        work: impl Fn(&mut Transaction<'_>, &Statements) -> Result<T, postgres::Error>,
    ) -> Result<T, Error> {
        self.transaction_if(work, |_| true)
    }

    /// `transaction`, committing only when `keep` approves what `work` returned
    /// (else rolling back, and returning it all the same).
    pub(super) fn transaction_if<T>(
        &self,
        work: impl Fn(&mut Transaction<'_>, &Statements) -> Result<T, postgres::Error>,
        keep: impl Fn(&T) -> bool,
    ) -> Result<T, Error> {
        let mut conn = self.conn()?;
        let conn = &mut *conn;
        let mut tries = 0;
        loop {
            tries += 1;
            let outcome = conn.client.transaction().and_then(|mut tx| {
                let value = work(&mut tx, &conn.statements)?;
                if keep(&value) {
                    tx.commit().map(|()| value)
                } else {
                    tx.rollback().map(|()| value)
                }
            });
            match outcome {
                Err(err) if tries < TRIES && conflict(&err) => {
                    log::debug!(tries = tries; "state transaction aborted by a lock conflict; trying again");
                }
                other => return Ok(other?),
            }
        }
    }
}

fn conflict(err: &postgres::Error) -> bool {
    use postgres::error::SqlState;
    matches!(
        err.code(),
        Some(&SqlState::T_R_DEADLOCK_DETECTED) | Some(&SqlState::T_R_SERIALIZATION_FAILURE)
    )
}

fn result(
    who: &Identity,
    updated: u64,
    change: StateChange,
    counters: Vec<CounterRow>,
) -> StateResult {
    StateResult {
        updated,
        message: (updated > 0).then(|| StateMessage {
            user_id: who.user_id.clone(),
            change: Some(change),
            counters,
        }),
    }
}

/// Reads counter rows on `client` (a transaction that changed them holds their
/// locks, so it reads exactly the values it leaves).
fn counter_rows(
    client: &mut impl postgres::GenericClient,
    statements: &Statements,
    user_id: &str,
    workspaces: &[Option<String>],
) -> Result<Vec<CounterRow>, postgres::Error> {
    let mut keys: Vec<&str> = workspaces
        .iter()
        .map(|w| w.as_deref().unwrap_or(""))
        .collect();
    keys.sort_unstable();
    keys.dedup();
    let params: [&(dyn ToSql + Sync); 2] = [&user_id, &keys];
    let rows = client.query(&statements.counter_rows, &params)?;
    Ok(rows.iter().map(|row| counter_row(row, 0)).collect())
}

/// A counter row read from `row`, its workspace in column `at` ('' = user-level) and
/// the counts, version and whether it is a workspace's broadcasts row after it.
fn counter_row(row: &postgres::Row, at: usize) -> CounterRow {
    let workspace: String = row.get(at);
    CounterRow {
        workspace: (!workspace.is_empty()).then_some(workspace),
        broadcasts: row.get(at + 4),
        unread: row.get(at + 1),
        unseen: row.get(at + 2),
        version: row.get(at + 3),
    }
}
