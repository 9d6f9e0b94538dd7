//! History for one connection: the `since` replay at connect and the catch-up after a
//! Redis outage, both read from PostgreSQL oldest first, a page at a time, and sent
//! from the live loop like everything else: a client that stops reading its history
//! leaves its thread parked (timers, shutdown and 4005 still apply), never pinned in a
//! blocking write. Live frames wait in the queue until the history is out.

use uuid::Uuid;

use super::{Session, Step, CLOSE_INTERNAL, MAX_REPLAY_PAGES, REPLAY_PAGE};
use crate::hub::Frame;
use crate::metrics::{self, METRICS};
use crate::notification::{floor_id, id_millis};
use crate::websocket::seen::WINDOW_MS;

impl Session<'_> {
    /// Starts sending what PostgreSQL holds after `after` (unless a replay runs).
    pub(super) fn replay_from(&mut self, after: Uuid) {
        if self.history.is_none() && self.backlog.is_empty() {
            self.history = Some(after);
            self.history_pages = 0;
        }
    }

    /// True while history remains to be sent.
    pub(super) fn replaying(&self) -> bool {
        self.history.is_some() || !self.backlog.is_empty()
    }

    /// Sends history until the socket would block, a page at a time.
    pub(super) fn send_history(&mut self) -> Step {
        for _ in 0..super::BATCH {
            if self.flush_pending || self.closing.is_some() {
                return Ok(());
            }
            if let Some(frame) = self.backlog.pop_front() {
                if !self.link.seen().contains(&frame.id) {
                    metrics::inc(&METRICS.replayed);
                }
                self.send(frame, false)?;
                continue;
            }
            let Some(after) = self.history else {
                return Ok(());
            };
            self.next_page(after)?;
        }
        // More to send and the socket takes it: another turn before parking.
        std::thread::current().unpark();
        Ok(())
    }

    fn next_page(&mut self, after: Uuid) -> Step {
        self.history_pages += 1;
        if self.history_pages > MAX_REPLAY_PAGES {
            self.history = None;
            return self.begin_close(
                CLOSE_INTERNAL,
                "history too long to replay: page through the REST API, then reconnect with since",
            );
        }
        let rows = match self.ctx.store.newer_than(
            &self.user_id,
            &self.workspace,
            after,
            REPLAY_PAGE,
        ) {
            Ok(rows) => rows,
            Err(err) => {
                log::error!(user = self.user_id.as_str(), error = err.to_string().as_str(); "replay failed");
                self.history = None;
                return self.begin_close(
                    CLOSE_INTERNAL,
                    "cannot read history now; reconnect with since",
                );
            }
        };
        self.history = match rows.last() {
            Some(last) if rows.len() as i64 == REPLAY_PAGE => Some(last.id),
            _ => None,
        };
        self.backlog.extend(rows.into_iter().map(|n| Frame {
            id: n.id,
            json: n.to_json().into(),
        }));
        Ok(())
    }

    /// After a Redis outage: everything since shortly before the newest id sent (or
    /// since the connection's floor), de-duplicated by `seen`.
    pub(super) fn catch_up(&mut self) {
        let newest = self.link.seen().newest();
        let from = match newest {
            Some(newest) => floor_id(id_millis(&newest).saturating_sub(WINDOW_MS)).max(self.floor),
            None => self.floor,
        };
        self.replay_from(from);
    }
}
