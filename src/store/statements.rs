//! Every SQL statement notifd runs on its pool, prepared once per connection (a
//! prepared statement costs one round trip per query; an unprepared one two).
//!
//! The counters in `notification_counts` appear in no write here: the triggers of
//! `sql/0002_states.sql` keep them exact in each write's transaction, whatever path
//! the write takes.

use postgres::{Client, Statement};

use crate::events::Field;

/// The columns of a notification row, in the order `store::row_to_notification` reads.
pub const COLUMNS: &str = "id, user_id, workspace, kind, type, title, message, payload, \
     read_at, created_at, updated_at, seen_at, archived_at, expires_at";

/// The same columns of a workspace-audience row `n` as one user sees it: no user, and
/// that user's state `s` (`notification_states`, absent until they marked it).
pub const BROADCAST_COLUMNS: &str = "n.id, NULL::text, n.workspace, n.kind, n.type, n.title, \
     n.message, n.payload, s.read_at, n.created_at, greatest(n.updated_at, s.updated_at), \
     s.seen_at, s.archived_at, n.expires_at";

/// `n`'s workspace-audience rows joined to user $1's state of each.
const BROADCASTS: &str = "notifications n LEFT JOIN notification_states s \
     ON s.notification_id = n.id AND s.user_id = $1";

/// The workspaces whose broadcasts user $1 sees: $2 grants all (every workspace
/// that ever had one: its counter row, `sql/0004_workspace_audience.sql`), else the
/// slugs $3; each once.
const BROADCAST_WORKSPACES: &str = "(SELECT DISTINCT slug FROM unnest(CASE WHEN $2 \
     THEN ARRAY(SELECT workspace FROM notification_counts WHERE user_id = '') ELSE $3 END) AS slug) g";

/// Not expired: every read path says it, so an expired row is gone from the instant
/// it expires, not from when the expiry thread deletes it (`retention::expire`).
const LIVE: &str = "(expires_at IS NULL OR expires_at > now())";

/// The visibility rule (contract §2): $1 user id, $2 grants all workspaces,
/// $3 granted workspace slugs.
const VISIBLE: &str = "user_id = $1 AND (workspace IS NULL OR $2 OR workspace = ANY($3))";

/// Optional list filters: $4 kind, $5 workspace (that workspace plus user-level ones,
/// as a WebSocket on that workspace receives them).
const FILTERS: &str =
    "($4::text IS NULL OR kind = $4) AND ($5::text IS NULL OR workspace IS NULL OR workspace = $5)";

/// The marks by ids, in the order of `Statements::marks`: the field and whether the
/// mark sets it (now) or clears it (an undo).
pub const MARKS: [(Field, bool); 5] = [
    (Field::Read, true),
    (Field::Seen, true),
    (Field::Read, false),
    (Field::Archived, true),
    (Field::Archived, false),
];

/// The bulks, in the order of `Statements::bulks` (indexed by `Field as usize`);
/// each sets its field.
const BULKS: [Field; 3] = [Field::Read, Field::Seen, Field::Archived];

/// Which archived rows a list shows, in the order of `Statements::list`, as a
/// condition on the `archived_at` column named.
const ARCHIVED: [fn(&str) -> String; 3] = [
    |column| format!(" AND {column} IS NULL"),
    |column| format!(" AND {column} IS NOT NULL"),
    |_| String::new(),
];

/// Every statement notifd runs, prepared on each pooled connection.
pub struct Statements {
    /// New notifications, many at once.
    pub insert: Statement,
    /// List pages: [archived filter][unread only][after a cursor]. Separate
    /// statements because an `OR $cursor IS NULL` form stops PostgreSQL from using
    /// the keyset index, and each partial index needs its predicate in the query.
    pub list: [[[Statement; 2]; 2]; 3],
    /// By ids ($4), at $5: returns the id and workspace of every row it changed.
    pub marks: [Statement; 5],
    /// Every visible matching row, at $6: returns how many, the highest id and the
    /// workspaces changed.
    pub bulks: [Statement; 3],
    /// Counter rows of one user ($1) and workspaces ($2, '' = user-level), with
    /// those workspaces' broadcasts rows.
    pub counter_rows: Statement,
    /// Counter rows of many (user, workspace) pairs: $1 users, $2 workspaces ('' =
    /// user-level), pairwise.
    pub counter_rows_of: Statement,
    /// Summed counters of a view: $1 user, $2 every workspace, $3 these workspaces,
    /// always with the user-level row.
    pub counts: Statement,
    /// Replay for `since=`: newer than a position, oldest first.
    pub newer_than: Statement,
    /// The catch-up of fresh connections: rows of users $1 and workspace-audience
    /// rows of workspaces $2 after a position ($3, $4), oldest first, at most $5.
    pub created_after: Statement,
    /// A keyed group of creates (`idempotency::claim_sql`).
    pub claim: Statement,
    /// The originals of keys a keyed group did not claim.
    pub claimed_before: Statement,
}

impl Statements {
    pub fn prepare(client: &mut Client) -> Result<Statements, postgres::Error> {
        let page = |client: &mut Client, archived: usize| -> Result<_, postgres::Error> {
            Ok([
                [
                    client.prepare(&list_sql(archived, false, false))?,
                    client.prepare(&list_sql(archived, false, true))?,
                ],
                [
                    client.prepare(&list_sql(archived, true, false))?,
                    client.prepare(&list_sql(archived, true, true))?,
                ],
            ])
        };
        let mark =
            |client: &mut Client, i: usize| client.prepare(&mark_sql(MARKS[i].0, MARKS[i].1));
        let bulk = |client: &mut Client, i: usize| client.prepare(&bulk_sql(BULKS[i]));
        Ok(Statements {
            // Any number of rows in one statement (one implicit transaction): a group
            // of creates commits once.
            insert: client.prepare(
                &format!("INSERT INTO notifications ({INSERTED}) SELECT {INSERTED_FROM} FROM {NEW_ROWS}"),
            )?,
            list: [
                page(client, 0)?,
                page(client, 1)?,
                page(client, 2)?,
            ],
            marks: [
                mark(client, 0)?,
                mark(client, 1)?,
                mark(client, 2)?,
                mark(client, 3)?,
                mark(client, 4)?,
            ],
            bulks: [bulk(client, 0)?, bulk(client, 1)?, bulk(client, 2)?],
            counter_rows: client.prepare(
                "SELECT workspace, unread, unseen, version, user_id = '' FROM notification_counts \
                 WHERE (user_id = $1 OR user_id = '') AND workspace = ANY($2) ORDER BY workspace",
            )?,
            counter_rows_of: client.prepare(
                "SELECT c.user_id, c.workspace, c.unread, c.unseen, c.version, c.user_id = '' \
                 FROM notification_counts c \
                 JOIN unnest($1::text[], $2::text[]) AS k(user_id, workspace) \
                 USING (user_id, workspace)",
            )?,
            counts: client.prepare(
                "SELECT coalesce(sum(unread), 0)::bigint, coalesce(sum(unseen), 0)::bigint \
                 FROM notification_counts \
                 WHERE (user_id = $1 OR user_id = '') AND (workspace = '' OR $2 OR workspace = ANY($3))",
            )?,
            newer_than: client.prepare(&format!(
                "SELECT * FROM ( \
                     (SELECT {COLUMNS} FROM notifications \
                      WHERE user_id = $1 AND (workspace IS NULL OR workspace = $2) \
                      AND (created_at, id) > ($3, $4) AND {LIVE} \
                      ORDER BY created_at, id LIMIT $5) \
                     UNION ALL \
                     (SELECT {BROADCAST_COLUMNS} FROM {BROADCASTS} \
                      WHERE n.user_id IS NULL AND n.workspace = $2 \
                      AND (n.created_at, n.id) > ($3, $4) AND {LIVE} \
                      ORDER BY n.created_at, n.id LIMIT $5)) AS newer \
                 ORDER BY created_at, id LIMIT $5"
            ))?,
            created_after: client.prepare(&format!(
                "SELECT * FROM ( \
                     (SELECT {COLUMNS} FROM notifications \
                      WHERE user_id = ANY($1) AND (created_at, id) > ($3, $4) AND {LIVE} \
                      ORDER BY created_at, id LIMIT $5) \
                     UNION ALL \
                     (SELECT {COLUMNS} FROM notifications \
                      WHERE user_id IS NULL AND workspace = ANY($2) \
                      AND (created_at, id) > ($3, $4) AND {LIVE} \
                      ORDER BY created_at, id LIMIT $5)) AS fresh \
                 ORDER BY created_at, id LIMIT $5"
            ))?,
            claim: client.prepare(&super::idempotency::claim_sql())?,
            claimed_before: client.prepare(&super::idempotency::claimed_before_sql())?,
        })
    }
}

/// The columns a create writes, and where `NEW_ROWS` has them.
pub const INSERTED: &str =
    "id, user_id, workspace, kind, type, title, message, payload, created_at, updated_at, expires_at";
pub const INSERTED_FROM: &str =
    "new.id, user_id, workspace, kind, type, title, message, payload, created_at, created_at, expires_at";
/// New rows as `$1..$10` arrays (`Store::insert` binds them), one element per row.
pub const NEW_ROWS: &str = "UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], \
     $6::text[], $7::text[], $8::jsonb[], $9::timestamptz[], $10::timestamptz[]) \
     AS new(id, user_id, workspace, kind, type, title, message, payload, created_at, expires_at)";

/// A list page: the `archived` condition (an index of `ARCHIVED`), unread only or
/// not, after a cursor or not. The user's own rows and each visible workspace's
/// broadcasts are range scans from the cursor, at most a page each, merged: page
/// 200 costs what page 1 costs.
fn list_sql(archived: usize, unread: bool, after: bool) -> String {
    let unread = |column: &str| match unread {
        true => format!(" AND {column} IS NULL"),
        false => String::new(),
    };
    let after = |table: &str| match after {
        true => format!(" AND ({table}created_at, {table}id) < ($7, $8)"),
        false => String::new(),
    };
    let own = format!(
        "SELECT {COLUMNS} FROM notifications WHERE {VISIBLE} AND {LIVE} AND {FILTERS}{}{}{} \
         ORDER BY created_at DESC, id DESC LIMIT $6",
        ARCHIVED[archived]("archived_at"),
        unread("read_at"),
        after(""),
    );
    let broadcasts = format!(
        "SELECT b.* FROM {BROADCAST_WORKSPACES} CROSS JOIN LATERAL ( \
             SELECT {BROADCAST_COLUMNS} FROM {BROADCASTS} \
             WHERE n.user_id IS NULL AND n.workspace = g.slug AND {LIVE} \
             AND ($4::text IS NULL OR n.kind = $4){}{}{} \
             ORDER BY n.created_at DESC, n.id DESC LIMIT $6) AS b \
         WHERE $5::text IS NULL OR g.slug = $5",
        ARCHIVED[archived]("s.archived_at"),
        unread("s.read_at"),
        after("n."),
    );
    format!(
        "SELECT * FROM (({own}) UNION ALL ({broadcasts})) AS page \
         ORDER BY created_at DESC, id DESC LIMIT $6"
    )
}

/// A mark by ids. Driven by the ids (a join on the primary key), so the plan
/// PostgreSQL caches for it cannot turn into a scan of the user's rows, as
/// `id = ANY($4)` did once the table grew. Only rows it changes are touched (and get
/// `updated_at`): marking twice changes nothing the second time. Rows are locked in
/// id order first (`LOCKED`), as every mark and bulk does, so two of them over the
/// same rows wait for each other instead of deadlocking.
///
/// Workspace-audience rows among the ids get the user's state row: a set inserts it
/// (or sets the field of the one there), an undo only clears an existing one.
fn mark_sql(field: Field, set: bool) -> String {
    let column = field.column();
    let (value, unchanged) = if set {
        ("$5", "IS NULL")
    } else {
        ("NULL", "IS NOT NULL")
    };
    let target = format!(
        "SELECT notifications.id FROM notifications \
         JOIN unnest($4::uuid[]) AS wanted(id) ON notifications.id = wanted.id \
         WHERE {VISIBLE} AND {LIVE} AND {column} {unchanged}"
    );
    let broadcasts =
        "FROM notifications n JOIN unnest($4::uuid[]) AS wanted(id) ON n.id = wanted.id \
         WHERE n.user_id IS NULL AND ($2 OR n.workspace = ANY($3))";
    let theirs = if set {
        broadcast_states(column, "$5", &format!("{broadcasts} AND {LIVE}"))
    } else {
        format!(
            "UPDATE notification_states AS s SET {column} = NULL, updated_at = $5 \
             FROM notifications n \
             WHERE s.notification_id = n.id AND s.user_id = $1 AND s.{column} IS NOT NULL \
             AND n.id IN (SELECT n.id {broadcasts} AND {LIVE}) \
             RETURNING s.notification_id, s.workspace"
        )
    };
    format!(
        "{}, own AS ( \
             UPDATE notifications SET {column} = {value}, updated_at = $5 FROM locked \
             WHERE notifications.id = locked.id AND {column} {unchanged} \
             RETURNING notifications.id, notifications.workspace), \
         theirs AS ({theirs}) \
         SELECT id, workspace FROM own UNION ALL SELECT notification_id, workspace FROM theirs",
        locked(&target)
    )
}

/// Sets `column` to `value` in user $1's state of the workspace-audience rows `n`
/// that `from` (a FROM … WHERE … over `notifications n`) picks and whose state lacks
/// it: a new state row, or the field of the one there. The rows are share-locked in
/// id order, so one an expiry deletes meanwhile is skipped, not a foreign-key error.
/// Returns the notification id and workspace of each state it changed.
fn broadcast_states(column: &str, value: &str, from: &str) -> String {
    format!(
        "INSERT INTO notification_states AS s (notification_id, user_id, workspace, {column}, updated_at) \
         SELECT n.id, $1, n.workspace, {value}::timestamptz, {value}::timestamptz {from} \
         ORDER BY n.id FOR KEY SHARE OF n \
         ON CONFLICT (notification_id, user_id) DO UPDATE \
             SET {column} = excluded.{column}, updated_at = excluded.updated_at \
             WHERE s.{column} IS NULL \
         RETURNING s.notification_id, s.workspace"
    )
}

/// A bulk over every visible row matching the filters, locked in id order first (see
/// `mark_sql`). The highest id goes through text: canonical UUID text sorts as the
/// UUID does, and uuid has no `max` before PostgreSQL 16.
///
/// Visible workspace-audience rows get the user's state (`broadcast_states`): a
/// read-all over a workspace with N unread broadcasts writes N state rows, once.
fn bulk_sql(field: Field) -> String {
    let column = field.column();
    let target =
        format!("SELECT id FROM notifications WHERE {VISIBLE} AND {LIVE} AND {FILTERS} AND {column} IS NULL");
    let broadcasts = format!(
        "FROM {BROADCASTS} \
         WHERE n.user_id IS NULL AND ($2 OR n.workspace = ANY($3)) AND {LIVE} \
         AND ($4::text IS NULL OR n.kind = $4) AND ($5::text IS NULL OR n.workspace = $5) \
         AND s.{column} IS NULL"
    );
    format!(
        "{}, own AS ( \
             UPDATE notifications SET {column} = $6, updated_at = $6 FROM locked \
             WHERE notifications.id = locked.id AND {column} IS NULL \
             RETURNING notifications.id, notifications.workspace), \
         theirs AS ({}), \
         changed AS ( \
             SELECT id, workspace FROM own UNION ALL SELECT notification_id, workspace FROM theirs) \
         SELECT count(*), max(id::text)::uuid, array_agg(DISTINCT workspace) FROM changed",
        locked(&target),
        broadcast_states(column, "$6", &broadcasts),
    )
}

/// `WITH locked AS (…)`: the rows `target` selects (a query whose first column is the
/// id), locked in id order. Without the order, two statements over overlapping rows
/// lock them in whatever order their scans meet them, and deadlock (measured: a
/// second's wait, then an abort, many times a second under concurrent bulks).
fn locked(target: &str) -> String {
    format!("WITH locked AS ({target} ORDER BY 1 FOR UPDATE OF notifications)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bulk_statements_are_indexed_by_their_field() {
        for (i, field) in BULKS.iter().enumerate() {
            assert_eq!(*field as usize, i, "{field:?}");
        }
    }
}
