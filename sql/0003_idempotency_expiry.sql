-- Idempotent create and expiry (issue 13).
--
-- ADD COLUMN without a default only changes the catalog (no rewrite).
ALTER TABLE notifications
    ADD COLUMN expires_at timestamptz;           -- gone from every read path from this instant

-- What the expiry thread and the retention sweep look for: rows that expire, soonest
-- first. Rows without expiry (most) are not in it, so a create without one pays nothing.
CREATE INDEX notifications_expiring ON notifications (expires_at)
    WHERE expires_at IS NOT NULL;

-- One row per idempotency key a service (its token's `sub`) used within the window.
-- The primary key is what makes concurrent creates with one key store one
-- notification: the second INSERT waits on the first's uncommitted row and then
-- conflicts, never a check-then-insert. `request_hash` is the SHA-256 of the
-- canonical request (the validated fields a client gave), to tell a retry from a
-- different create reusing the key.
--
-- The key goes with its notification (ON DELETE CASCADE: expiry, retention, a delete
-- by hand): a key always names a row a replay can answer with. Deferred, because the
-- key and its notification are inserted by one statement of the group commit.
CREATE TABLE idempotency_keys (
    service         text        NOT NULL,
    key             text        NOT NULL,
    request_hash    bytea       NOT NULL,
    notification_id uuid        NOT NULL
        REFERENCES notifications (id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
    created_at      timestamptz NOT NULL,
    PRIMARY KEY (service, key)
);
-- The cascade finds a deleted notification's key here, not by a scan.
CREATE INDEX idempotency_keys_notification ON idempotency_keys (notification_id);
-- The sweep purges keys past the window by age. Rows arrive in time order, so a BRIN
-- index (a few pages, next to nothing per insert) narrows the purge to old blocks.
CREATE INDEX idempotency_keys_created ON idempotency_keys USING brin (created_at);
