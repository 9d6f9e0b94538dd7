//! History for one connection: the `since` replay at connect and the catch-up after a
//! Redis outage, both read from PostgreSQL oldest first, a page at a time, and handed
//! to the session one frame at a time, so that a client that stops reading its
//! history leaves its thread parked (timers, shutdown and 4005 still apply), never
//! pinned in a blocking write. Live frames wait until the history is out.

use std::collections::VecDeque;

use uuid::Uuid;

use crate::hub::Frame;
use crate::notification::{floor_id, id_millis};
use crate::store::Store;
use crate::websocket::seen::WINDOW_MS;

/// Rows per replay query, and how many pages one replay may take.
const PAGE: i64 = 100;
const MAX_PAGES: usize = 1000;

/// Whose history, and where it stands.
pub struct History {
    user_id: String,
    workspace: String,
    /// Catch-up never goes further back than this: `since`, or the connect moment.
    floor: Uuid,
    /// Where the history being sent continues, if any is.
    next: Option<Uuid>,
    /// Pages read for the current replay.
    pages: usize,
    /// Read from PostgreSQL, not yet sent.
    backlog: VecDeque<Frame>,
}

impl History {
    pub fn new(user_id: String, workspace: String, floor: Uuid) -> History {
        History {
            user_id,
            workspace,
            floor,
            next: None,
            pages: 0,
            backlog: VecDeque::new(),
        }
    }

    pub fn user_id(&self) -> &str {
        &self.user_id
    }

    pub fn workspace(&self) -> &str {
        &self.workspace
    }

    /// Starts sending what PostgreSQL holds after `after` (unless a replay runs).
    /// A replay that has read its last page but not sent it all reads once more
    /// after that page: its last read may predate what the caller is owed.
    pub fn replay_from(&mut self, after: Uuid) {
        if self.next.is_some() {
            return;
        }
        match self.backlog.back() {
            Some(last) => self.next = Some(last.id),
            None => {
                self.next = Some(after);
                self.pages = 0;
            }
        }
    }

    /// After a Redis outage: everything since shortly before the newest id sent (or
    /// since the connection's floor); what was sent already is skipped by `seen`.
    pub fn catch_up(&mut self, newest_sent: Option<Uuid>) {
        let from = match newest_sent {
            Some(newest) => floor_id(id_millis(&newest).saturating_sub(WINDOW_MS)).max(self.floor),
            None => self.floor,
        };
        self.replay_from(from);
    }

    /// True while history remains to be sent.
    pub fn replaying(&self) -> bool {
        self.next.is_some() || !self.backlog.is_empty()
    }

    /// The next frame of history, reading a page when the last one is used up; `None`
    /// once it is all out. An error is the close reason: the history cannot be sent.
    pub fn next(&mut self, store: &Store) -> Result<Option<Frame>, &'static str> {
        if self.backlog.is_empty() {
            if let Some(after) = self.next {
                self.read_page(store, after)?;
            }
        }
        Ok(self.backlog.pop_front())
    }

    fn read_page(&mut self, store: &Store, after: Uuid) -> Result<(), &'static str> {
        self.pages += 1;
        if self.pages > MAX_PAGES {
            self.next = None;
            return Err(
                "history too long to replay: page through the REST API, then reconnect with since",
            );
        }
        let rows = match store.newer_than(&self.user_id, &self.workspace, after, PAGE) {
            Ok(rows) => rows,
            Err(err) => {
                log::error!(user = self.user_id.as_str(), error = err.to_string().as_str(); "replay failed");
                self.next = None;
                return Err("cannot read history now; reconnect with since");
            }
        };
        self.next = match rows.last() {
            Some(last) if rows.len() as i64 == PAGE => Some(last.id),
            _ => None,
        };
        self.backlog.extend(rows.into_iter().map(|n| Frame {
            id: n.id,
            json: n.to_json().into(),
            expires: n.expires_at,
        }));
        Ok(())
    }
}
