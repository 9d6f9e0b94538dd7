//! History for one connection: the `since` replay at connect and the catch-up after a
//! Redis outage, both read from PostgreSQL oldest first and de-duplicated by `seen`.

use uuid::Uuid;

use super::{Done, Session, Step, CLOSE_INTERNAL, MAX_REPLAY_PAGES, REPLAY_PAGE};
use crate::hub::{Frame, CLOSE_TOO_SLOW};
use crate::metrics::{self, METRICS};
use crate::notification::{floor_id, id_millis};
use crate::websocket::seen::WINDOW_MS;

impl Session<'_> {
    /// Sends what PostgreSQL holds after `after` for this user and workspace, oldest
    /// first, skipping what this connection already sent.
    pub(super) fn replay(&mut self, after: Uuid) -> Step {
        let mut after = after;
        for _ in 0..MAX_REPLAY_PAGES {
            let rows = match self.ctx.store.newer_than(
                &self.user_id,
                &self.workspace,
                after,
                REPLAY_PAGE,
            ) {
                Ok(rows) => rows,
                Err(err) => {
                    log::error!(user = self.user_id.as_str(), error = err.to_string().as_str(); "replay failed");
                    return self.begin_close(
                        CLOSE_INTERNAL,
                        "cannot read history now; reconnect with since",
                    );
                }
            };
            let full = rows.len() as i64 == REPLAY_PAGE;
            for notification in rows {
                after = notification.id;
                if !self.seen.contains(&notification.id) {
                    metrics::inc(&METRICS.replayed);
                }
                let frame = Frame {
                    id: notification.id,
                    json: notification.to_json().into(),
                };
                self.send(frame, false)?;
                // A blocking write that timed out: the client stopped reading its
                // history, and waiting on it would pin this thread.
                if self.blocking && self.flush_pending {
                    return Err(Done(CLOSE_TOO_SLOW));
                }
            }
            if !full {
                return Ok(());
            }
        }
        self.begin_close(
            CLOSE_INTERNAL,
            "history too long to replay: page through the REST API, then reconnect with since",
        )
    }

    /// After a Redis outage: everything since shortly before the newest id sent (or
    /// since the connection's floor), de-duplicated by `seen`.
    pub(super) fn catch_up(&mut self) -> Step {
        let from = match self.seen.newest() {
            Some(newest) => floor_id(id_millis(&newest).saturating_sub(WINDOW_MS)).max(self.floor),
            None => self.floor,
        };
        self.replay(from)?;
        self.flush()
    }
}
