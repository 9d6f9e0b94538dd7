-- Workspace audience (issue 13): one notification for every user granted a workspace.
--
-- Such a row has no user (`user_id` NULL) and a workspace. Its read/seen/archived
-- state is per user, in `notification_states` below; its own state columns stay
-- NULL. Dropping NOT NULL only changes the catalog; the CHECK is NOT VALID because
-- every row already there has a user (the column was NOT NULL), so nothing is scanned.
ALTER TABLE notifications ALTER COLUMN user_id DROP NOT NULL;
ALTER TABLE notifications ADD CONSTRAINT recipient_is_known
    CHECK (user_id IS NOT NULL OR workspace IS NOT NULL) NOT VALID;

-- A workspace's broadcasts, newest first: a list page range-scans this from its
-- cursor for each workspace it shows, so page 200 costs what page 1 costs.
CREATE INDEX notifications_workspace_audience ON notifications (workspace, created_at DESC, id DESC)
    WHERE user_id IS NULL;

-- One user's state of one workspace-audience notification: a row only once the user
-- marked it (no row = unread, unseen, not archived). `workspace` is the
-- notification's, copied so the counters below need no join. The key leads with the
-- notification: the list's lookup of "my state of this one" and the cascade of a
-- delete (expiry, retention) both go by it.
CREATE TABLE notification_states (
    notification_id uuid        NOT NULL REFERENCES notifications (id) ON DELETE CASCADE,
    user_id         text        NOT NULL,
    workspace       text        NOT NULL,
    read_at         timestamptz,
    seen_at         timestamptz,
    archived_at     timestamptz,
    updated_at      timestamptz NOT NULL,
    PRIMARY KEY (notification_id, user_id)
);

-- The counters (0002) stay exact with one row per workspace for its broadcasts and a
-- per-user correction:
--
--   unread(user, workspace) = counts(user, workspace)   -- their own, less the
--                                                        -- broadcasts they read
--                           + counts('', workspace)      -- every live broadcast
--
-- The workspace-audience rows count in ('', workspace) (no user id is empty), +1
-- each while unread and unarchived, as any row. A state row counts -1 in (user,
-- workspace) once it takes the broadcast out of that user's unread (read or
-- archived) and 0 otherwise: contribution = notifd_unread(...) - 1. A delete of the
-- notification cascades to its state rows, so both sides move in one transaction.
-- A broadcast to 10,000 users is one counter update, not 10,000. The function of
-- 0002 is replaced for both tables (user '' for workspace-audience rows, and the
-- state rows' base).
CREATE OR REPLACE FUNCTION notifd_count_rows() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    -- What a row counts less than its flags: 1 for a state row (its -1 correction),
    -- 0 for a notification.
    base int := (TG_TABLE_NAME = 'notification_states')::int;
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO notification_counts AS c (user_id, workspace, unread, unseen, version)
        SELECT coalesce(user_id, ''), coalesce(workspace, ''),
               sum(notifd_unread(read_at, archived_at) - base),
               sum(notifd_unseen(seen_at, archived_at) - base), 1
        FROM new_rows
        GROUP BY 1, 2
        HAVING sum(notifd_unread(read_at, archived_at) - base) <> 0
            OR sum(notifd_unseen(seen_at, archived_at) - base) <> 0
        ORDER BY 1, 2
        ON CONFLICT (user_id, workspace) DO UPDATE
            SET unread = c.unread + excluded.unread, unseen = c.unseen + excluded.unseen,
                version = c.version + 1;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO notification_counts AS c (user_id, workspace, unread, unseen, version)
        SELECT coalesce(user_id, ''), coalesce(workspace, ''),
               -sum(notifd_unread(read_at, archived_at) - base),
               -sum(notifd_unseen(seen_at, archived_at) - base), 1
        FROM old_rows
        GROUP BY 1, 2
        HAVING sum(notifd_unread(read_at, archived_at) - base) <> 0
            OR sum(notifd_unseen(seen_at, archived_at) - base) <> 0
        ORDER BY 1, 2
        ON CONFLICT (user_id, workspace) DO UPDATE
            SET unread = c.unread + excluded.unread, unseen = c.unseen + excluded.unseen,
                version = c.version + 1;
    ELSE
        -- The bases of old and new cancel: the change is the difference of the flags.
        INSERT INTO notification_counts AS c (user_id, workspace, unread, unseen, version)
        SELECT user_id, workspace, sum(unread), sum(unseen), 1
        FROM (SELECT coalesce(user_id, '') AS user_id, coalesce(workspace, '') AS workspace,
                     notifd_unread(read_at, archived_at) AS unread,
                     notifd_unseen(seen_at, archived_at) AS unseen
              FROM new_rows
              UNION ALL
              SELECT coalesce(user_id, ''), coalesce(workspace, ''),
                     -notifd_unread(read_at, archived_at), -notifd_unseen(seen_at, archived_at)
              FROM old_rows) AS delta
        GROUP BY 1, 2
        HAVING sum(unread) <> 0 OR sum(unseen) <> 0
        ORDER BY 1, 2
        ON CONFLICT (user_id, workspace) DO UPDATE
            SET unread = c.unread + excluded.unread, unseen = c.unseen + excluded.unseen,
                version = c.version + 1;
    END IF;
    RETURN NULL;
END
$$;

-- The state rows' triggers run the same function (its `base` tells the tables apart):
-- one definition of how a row moves the counters.
CREATE TRIGGER notification_states_count_insert AFTER INSERT ON notification_states
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION notifd_count_rows();
CREATE TRIGGER notification_states_count_update AFTER UPDATE ON notification_states
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION notifd_count_rows();
CREATE TRIGGER notification_states_count_delete AFTER DELETE ON notification_states
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION notifd_count_rows();

-- TRUNCATE of the state rows alone (by hand; a TRUNCATE of notifications must
-- CASCADE to them and zeroes every counter, 0002) drops every correction: the users'
-- counters are counted again from their own rows.
CREATE FUNCTION notifd_count_states_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE notification_counts AS c
    SET unread = own.unread, unseen = own.unseen, version = c.version + 1
    FROM (SELECT k.user_id, k.workspace,
                 coalesce(sum(notifd_unread(n.read_at, n.archived_at)), 0) AS unread,
                 coalesce(sum(notifd_unseen(n.seen_at, n.archived_at)), 0) AS unseen
          FROM notification_counts k
          LEFT JOIN notifications n
              ON n.user_id = k.user_id AND coalesce(n.workspace, '') = k.workspace
          WHERE k.user_id <> ''
          GROUP BY 1, 2) AS own
    WHERE c.user_id = own.user_id AND c.workspace = own.workspace
      AND (c.unread, c.unseen) <> (own.unread, own.unseen);
    RETURN NULL;
END
$$;
CREATE TRIGGER notification_states_count_truncate AFTER TRUNCATE ON notification_states
    FOR EACH STATEMENT EXECUTE FUNCTION notifd_count_states_truncate();
