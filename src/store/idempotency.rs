//! Idempotent creates: a group of creates some of which carry an idempotency key,
//! stored in one transaction that claims the keys and inserts the notifications of
//! the keys it won (and of the rows without a key).
//!
//! The primary key of `idempotency_keys` decides who wins, not a check-then-insert:
//! a concurrent create with the same key waits in its INSERT on the winner's
//! uncommitted row, then conflicts, and reads the winner's notification only after
//! the winner committed. Comes after `committer` (which groups and answers the
//! creates); the SQL is `sql/0003_idempotency_expiry.sql` and `claim_sql` below.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use postgres::types::ToSql;
use postgres::GenericClient;
use uuid::Uuid;

use super::statements::{Statements, COLUMNS, INSERTED, INSERTED_FROM, NEW_ROWS};
use super::{row_to_notification, NewRows, Store};
use crate::error::Error;
use crate::notification::Notification;

/// An idempotency key as a create carries it: whose (the service's `sub`), the key,
/// and the SHA-256 of the canonical request it came with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey {
    pub service: String,
    pub key: String,
    pub hash: [u8; 32],
}

/// What became of one row of a keyed group.
#[derive(Debug)]
pub enum Claim {
    /// Stored now (its key was new or past the window, or it had none).
    Stored,
    /// Its key was first used by row `usize` of this same group, stored now.
    SameAs(usize),
    /// Its key was used before, for this request: the original notification.
    Replayed(Box<Notification>),
    /// Its key was used, within the window, for a different request.
    Conflict,
    /// Its key was taken but the original cannot be answered (deleted between the
    /// claim and the read, or unreadable): this create fails with this error.
    Failed(Error),
}

/// The result of `Store::insert_keyed`.
#[derive(Debug)]
pub enum Created {
    /// Committed; one claim per row.
    Committed(Vec<Claim>),
    /// Rolled back, nothing stored: these rows reused a key for another request.
    Conflicts(Vec<usize>),
}

/// Claims the keys (rows `$11..$15` arrays; a key past the window `$16` seconds is
/// taken over), inserts the notifications `$1..$10` whose id is not keyed or whose
/// key it claimed, and returns the ids that claimed. The keys go in key order, so two
/// groups sharing keys wait on each other in one order and cannot deadlock.
pub(super) fn claim_sql() -> String {
    format!(
        "WITH claimed AS ( \
             INSERT INTO idempotency_keys AS k (service, key, request_hash, notification_id, created_at) \
             SELECT service, key, hash, id, now() \
             FROM UNNEST($11::text[], $12::text[], $13::bytea[], $14::uuid[]) AS c(service, key, hash, id) \
             ORDER BY service, key \
             ON CONFLICT (service, key) DO UPDATE \
                 SET request_hash = excluded.request_hash, notification_id = excluded.notification_id, \
                     created_at = excluded.created_at \
                 WHERE k.created_at <= now() - make_interval(secs => $16) \
             RETURNING notification_id), \
         stored AS ( \
             INSERT INTO notifications ({INSERTED}) SELECT {INSERTED_FROM} FROM {NEW_ROWS} \
             WHERE new.id NOT IN (SELECT unnest($15::uuid[])) \
                OR new.id IN (SELECT notification_id FROM claimed)) \
         SELECT notification_id FROM claimed"
    )
}

/// The key rows and notifications of keys a group did not claim: `$1` services,
/// `$2` keys. The notification's columns first (as `row_to_notification` reads them),
/// then the request hash, the service and the key.
pub(super) fn claimed_before_sql() -> String {
    format!(
        "SELECT n.*, k.request_hash, k.service, k.key \
         FROM UNNEST($1::text[], $2::text[]) AS w(service, key) \
         JOIN idempotency_keys k ON k.service = w.service AND k.key = w.key \
         CROSS JOIN LATERAL (SELECT {COLUMNS} FROM notifications WHERE id = k.notification_id) AS n"
    )
}

/// A group being stored: its rows, their keys, the first row of each key, and the
/// statement parameters (`claim_sql`).
struct Group<'a> {
    rows: &'a [&'a Notification],
    keys: &'a [Option<&'a IdempotencyKey>],
    first: Vec<Option<usize>>,
    /// The first row of each key, in key order.
    candidates: Vec<usize>,
}

impl Store {
    /// Stores `rows` (`keys[i]` is row i's key, if any): a keyed row only if its key
    /// is new or older than `window`. A repeat of a key answers its first row
    /// (`SameAs`, `Replayed`). `atomic` (a batch with keys is in the group): one
    /// transaction, and any reuse of a key for another request rolls everything back
    /// (`Conflicts`), so the caller can refuse those creates and store the rest
    /// again. Otherwise one statement commits at once, as a keyless group does, and
    /// a reuse is that row's `Claim::Conflict` (its row was not stored).
    pub fn insert_keyed(
        &self,
        rows: &[&Notification],
        keys: &[Option<&IdempotencyKey>],
        window: Duration,
        atomic: bool,
    ) -> Result<Created, Error> {
        let first = first_uses(keys);
        let mut candidates: Vec<usize> = (0..rows.len()).filter(|&i| first[i] == Some(i)).collect();
        candidates.sort_by(|&a, &b| keyed(keys, a).cmp(&keyed(keys, b)));
        let group = Group {
            rows,
            keys,
            first,
            candidates,
        };
        if !atomic {
            let mut conn = self.conn()?;
            let conn = &mut *conn;
            let claims = claim(&mut conn.client, &conn.statements, &group, window)?;
            return Ok(Created::Committed(claims));
        }
        let mut claims = self.transaction_if(
            |tx, statements| claim(tx, statements, &group, window),
            |claims| {
                !claims
                    .iter()
                    .any(|c| matches!(c, Claim::Conflict | Claim::Failed(_)))
            },
        )?;
        if let Some(at) = claims.iter().position(|c| matches!(c, Claim::Failed(_))) {
            if let Claim::Failed(err) = claims.swap_remove(at) {
                return Err(err);
            }
        }
        let conflicts: Vec<usize> = (0..claims.len())
            .filter(|&i| matches!(claims[i], Claim::Conflict))
            .collect();
        Ok(if conflicts.is_empty() {
            Created::Committed(claims)
        } else {
            Created::Conflicts(conflicts)
        })
    }
}

/// Runs the claim statement on `client`, then reads the originals of the keys it
/// did not claim: what became of each row.
fn claim(
    client: &mut impl GenericClient,
    statements: &Statements,
    group: &Group<'_>,
    window: Duration,
) -> Result<Vec<Claim>, postgres::Error> {
    let (rows, keys) = (group.rows, group.keys);
    let new_rows = NewRows::of(rows);
    let pick = |f: fn(&IdempotencyKey) -> &str| -> Vec<&str> {
        group.candidates.iter().map(|&i| f(key(keys, i))).collect()
    };
    let (services, names) = (pick(|k| &k.service), pick(|k| &k.key));
    let hashes: Vec<&[u8]> = group
        .candidates
        .iter()
        .map(|&i| &key(keys, i).hash[..])
        .collect();
    let ids: Vec<Uuid> = group.candidates.iter().map(|&i| rows[i].id).collect();
    let keyed_ids: Vec<Uuid> = (0..rows.len())
        .filter(|&i| keys[i].is_some())
        .map(|i| rows[i].id)
        .collect();
    let seconds = window.as_secs_f64();
    let mut params = new_rows.params();
    params.extend([
        &services as &(dyn ToSql + Sync),
        &names,
        &hashes,
        &ids,
        &keyed_ids,
        &seconds,
    ]);
    let claimed: HashSet<Uuid> = client
        .query(&statements.claim, &params)?
        .iter()
        .map(|row| row.get(0))
        .collect();
    let lost: Vec<usize> = group
        .candidates
        .iter()
        .copied()
        .filter(|&i| !claimed.contains(&rows[i].id))
        .collect();
    let before = claimed_before(client, statements, keys, &lost)?;
    Ok(resolve(
        keys,
        &group.first,
        &lost.into_iter().collect(),
        &before,
    ))
}

/// The originals of the keys of rows `lost` (first uses this group did not claim),
/// read in the group's transaction after its claim: a new statement, so it sees a
/// winner that committed while the claim waited on it.
fn claimed_before(
    client: &mut impl GenericClient,
    statements: &Statements,
    keys: &[Option<&IdempotencyKey>],
    lost: &[usize],
) -> Result<Originals, postgres::Error> {
    if lost.is_empty() {
        return Ok(HashMap::new());
    }
    let services: Vec<&str> = lost.iter().map(|&i| keyed(keys, i).0).collect();
    let names: Vec<&str> = lost.iter().map(|&i| keyed(keys, i).1).collect();
    let found = client.query(&statements.claimed_before, &[&services, &names])?;
    Ok(originals(&found))
}

/// What the rows of keys claimed before hold: (service, key) -> (request hash,
/// original notification).
type Originals = HashMap<(String, String), (Vec<u8>, Result<Notification, String>)>;

fn originals(rows: &[postgres::Row]) -> Originals {
    rows.iter()
        .map(|row| {
            let at = COLUMNS.split(',').count();
            let notification = row_to_notification(row).map_err(|e| e.to_string());
            (
                (row.get(at + 1), row.get(at + 2)),
                (row.get(at), notification),
            )
        })
        .collect()
}

/// For each row, the first row of the group with the same (service, key).
fn first_uses(keys: &[Option<&IdempotencyKey>]) -> Vec<Option<usize>> {
    let mut seen: HashMap<(&str, &str), usize> = HashMap::new();
    keys.iter()
        .enumerate()
        .map(|(i, key)| {
            key.map(|k| {
                *seen
                    .entry((k.service.as_str(), k.key.as_str()))
                    .or_insert(i)
            })
        })
        .collect()
}

/// The claim of every row, from the keys this group claimed (first uses not `lost`)
/// and the rows found for the others.
fn resolve(
    keys: &[Option<&IdempotencyKey>],
    first: &[Option<usize>],
    lost: &HashSet<usize>,
    before: &Originals,
) -> Vec<Claim> {
    let mut claims = Vec::with_capacity(keys.len());
    for (i, key) in keys.iter().enumerate() {
        let Some(key) = key else {
            claims.push(Claim::Stored);
            continue;
        };
        let claim = match before.get(&(key.service.clone(), key.key.clone())) {
            None if first[i] == Some(i) && !lost.contains(&i) => Claim::Stored,
            // Lost, yet its winner's row is gone: it was deleted between the two
            // statements (the key row is locked by the first; only a race with a
            // delete of its notification gets here). Trying again stores it anew.
            None if first[i] == Some(i) => Claim::Failed(Error::Unavailable {
                dependency: "postgresql",
                detail: format!("idempotency key {:?} went away during a create", key.key),
            }),
            None => match (first[i], claims.get(first[i].unwrap_or(i))) {
                (Some(at), Some(Claim::Stored)) if keys[at].map(|k| k.hash) == Some(key.hash) => {
                    Claim::SameAs(at)
                }
                _ => Claim::Conflict,
            },
            Some((hash, _)) if hash[..] != key.hash[..] => Claim::Conflict,
            Some((_, Ok(original))) => Claim::Replayed(Box::new(original.clone())),
            Some((_, Err(problem))) => Claim::Failed(Error::Internal(problem.clone())),
        };
        claims.push(claim);
    }
    claims
}

fn key<'a>(keys: &[Option<&'a IdempotencyKey>], i: usize) -> &'a IdempotencyKey {
    // Only called for rows that have a key (candidates are keyed rows).
    keys[i].unwrap_or_else(|| unreachable!("row {i} has no key"))
}

fn keyed<'a>(keys: &[Option<&'a IdempotencyKey>], i: usize) -> (&'a str, &'a str) {
    let k = key(keys, i);
    (k.service.as_str(), k.key.as_str())
}
