//! What an event-protocol connection's client knows beyond its notifications: whether
//! it was told `synced`, and the counter rows its `counts` are the sum of (the
//! user-level row, its own row of the workspace and the workspace's broadcasts row),
//! each at the newest version seen.
//!
//! The session (before) hands it the rows read at connect and every state message
//! from the queue; it answers which frames to send. Versions make the order of
//! arrival irrelevant: a row older than the one known is dropped, so counts never
//! step back, whichever instance or path (create, mark, bulk) moved them.

use tungstenite::Utf8Bytes;
use uuid::Uuid;

use crate::events::{CounterRow, Counts, Event, StateMessage};

/// One counter row as this connection last saw it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Known {
    counts: Counts,
    version: i64,
}

/// An event-protocol connection's view of its user's state.
#[derive(Debug)]
pub struct View {
    workspace: String,
    /// The `since` the client connected with: `synced` names it when nothing newer
    /// was sent.
    since: Option<Uuid>,
    synced: bool,
    /// Set by a catch-up after a Redis outage: state messages may have been lost, so
    /// the counts are read again.
    stale: bool,
    user_level: Known,
    in_workspace: Known,
    /// The workspace's workspace-audience notifications (shared by its users).
    broadcasts: Known,
}

impl View {
    pub fn new(workspace: &str, since: Option<Uuid>) -> View {
        View {
            workspace: workspace.to_string(),
            since,
            synced: false,
            stale: false,
            user_level: Known::default(),
            in_workspace: Known::default(),
            broadcasts: Known::default(),
        }
    }

    pub fn synced(&self) -> bool {
        self.synced
    }

    /// State messages may have been lost (Redis was away): read the counts again.
    pub fn mark_stale(&mut self) {
        self.stale = true;
    }

    /// Whether the counter rows must be read (once history is out): for `synced`, or
    /// after a catch-up.
    pub fn wants_rows(&self) -> bool {
        !self.synced || self.stale
    }

    /// The frames the counter rows read now mean: the first time, `synced` (history
    /// complete up to the newest notification sent, or the `since` asked for) and
    /// `counts`; after a catch-up, `counts` if they moved.
    pub fn rows_read(&mut self, newest_sent: Option<Uuid>, rows: &[CounterRow]) -> Vec<Utf8Bytes> {
        self.stale = false;
        if self.synced {
            return match self.absorb(rows) {
                true => vec![self.counts_frame()],
                false => Vec::new(),
            };
        }
        self.synced = true;
        self.absorb(rows);
        let through = newest_sent.or(self.since);
        vec![super::super::protocol::synced(through), self.counts_frame()]
    }

    /// The frames a state message means for this view: `updated` when the change
    /// touched it, then `counts` when its counts moved.
    pub fn apply(&mut self, message: &StateMessage) -> Vec<Utf8Bytes> {
        let mut frames = Vec::with_capacity(2);
        if let Some(updated) = message
            .change
            .as_ref()
            .and_then(|change| change.updated_for(&self.workspace))
        {
            frames.push(json(&updated));
        }
        if self.absorb(&message.counters) {
            frames.push(self.counts_frame());
        }
        frames
    }

    /// Takes the rows of this view newer than the ones known; true when the sum moved.
    pub fn absorb(&mut self, rows: &[CounterRow]) -> bool {
        let before = self.counts();
        for row in rows {
            let known = match (row.workspace.as_deref(), row.broadcasts) {
                (None, false) => &mut self.user_level,
                (Some(w), false) if w == self.workspace => &mut self.in_workspace,
                (Some(w), true) if w == self.workspace => &mut self.broadcasts,
                _ => continue,
            };
            if row.version > known.version {
                *known = Known {
                    counts: Counts {
                        unread: row.unread,
                        unseen: row.unseen,
                    },
                    version: row.version,
                };
            }
        }
        self.counts() != before
    }

    fn counts(&self) -> Counts {
        let rows = [self.user_level, self.in_workspace, self.broadcasts];
        Counts {
            unread: rows.iter().map(|row| row.counts.unread).sum(),
            unseen: rows.iter().map(|row| row.counts.unseen).sum(),
        }
    }

    pub fn counts_frame(&self) -> Utf8Bytes {
        json(&Event::Counts(self.counts()))
    }
}

fn json(event: &Event) -> Utf8Bytes {
    // Strings, numbers and ids only: serializing cannot fail.
    serde_json::to_string(event).unwrap_or_default().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(workspace: Option<&str>, unread: i64, version: i64) -> CounterRow {
        CounterRow {
            workspace: workspace.map(str::to_string),
            broadcasts: false,
            unread,
            unseen: unread,
            version,
        }
    }

    #[test]
    fn counts_sum_the_views_rows_and_never_step_back() {
        let mut view = View::new("acme", None);
        assert!(view.wants_rows());
        let frames = view.rows_read(None, &[row(None, 1, 3), row(Some("acme"), 2, 5)]);
        assert_eq!(frames[0].as_str(), r#"{"event":"synced","through":null}"#);
        assert_eq!(
            frames[1].as_str(),
            r#"{"event":"counts","unread":3,"unseen":3}"#
        );
        assert!(!view.wants_rows());
        assert!(
            !view.absorb(&[row(Some("acme"), 9, 4)]),
            "an older version is dropped"
        );
        assert!(
            !view.absorb(&[row(Some("beta"), 9, 9)]),
            "another workspace is not in view"
        );
        assert!(view.absorb(&[row(Some("acme"), 1, 6)]));
        let counts = view.counts_frame();
        assert_eq!(
            counts.as_str(),
            r#"{"event":"counts","unread":2,"unseen":2}"#
        );
        view.mark_stale();
        assert!(view.wants_rows());
        let unchanged = view.rows_read(None, &[row(Some("acme"), 1, 6)]);
        assert!(unchanged.is_empty(), "nothing moved: nothing sent");
        let moved = view.rows_read(None, &[row(Some("acme"), 4, 7)]);
        assert_eq!(moved.len(), 1, "counts only, no second synced");
    }

    #[test]
    fn a_workspaces_broadcasts_add_to_the_users_own_row() {
        let mut view = View::new("acme", None);
        view.rows_read(None, &[row(Some("acme"), -1, 2)]);
        let broadcasts = |unread, version| CounterRow {
            broadcasts: true,
            ..row(Some("acme"), unread, version)
        };
        assert!(view.absorb(&[broadcasts(3, 1)]));
        assert_eq!(
            view.counts_frame().as_str(),
            r#"{"event":"counts","unread":2,"unseen":2}"#,
            "three broadcasts, one of them read"
        );
        assert!(!view.absorb(&[broadcasts(7, 1)]), "same version: dropped");
        assert!(
            !view.absorb(&[CounterRow {
                broadcasts: true,
                ..row(Some("beta"), 9, 9)
            }]),
            "another workspace's broadcasts"
        );
    }

    #[test]
    fn synced_names_the_newest_sent_or_else_the_since() {
        let since = Uuid::now_v7();
        let newer = Uuid::now_v7();
        let mut view = View::new("acme", Some(since));
        let frames = view.rows_read(None, &[]);
        assert!(frames[0].as_str().contains(&since.to_string()));
        let mut view = View::new("acme", Some(since));
        let frames = view.rows_read(Some(newer), &[]);
        assert!(frames[0].as_str().contains(&newer.to_string()));
    }
}
