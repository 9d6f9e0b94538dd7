//! The catch-up of fresh connections: what was published for the connections
//! registered since the subscriber's last look, between their floor (taken before
//! their upgrade was answered) and the moment their channels were live, reached no
//! one here. One query reads it for all of them (their users' rows and their
//! workspaces' broadcasts after the oldest floor), run after the look's
//! subscriptions are confirmed, so anything later arrives live; the hub hands each
//! row to the connections owed it, and `seen` drops what a connection already has.
//!
//! One query a look, not one per connection: a storm of 10,000 connects costs a few
//! hundred queries, not 10,000 (which exhausted the PostgreSQL pool and closed
//! connections when each one read its own).

use std::collections::BTreeSet;

use crate::hub::{Frame, Fresh, Hub};
use crate::store::Store;

/// Most rows one catch-up reads. A look with more behind it (connections of busy
/// users, or a long pause) leaves each connection to read its own history.
const MAX_ROWS: i64 = 5000;

/// Catches `fresh` up; on any failure each of them reads its own (`Member::catch_up`).
pub fn catch_up(store: &Store, hub: &Hub, fresh: &[Fresh]) {
    let Some(after) = fresh.iter().map(|f| f.floor).min() else {
        return;
    };
    let users: BTreeSet<&str> = fresh.iter().map(|f| f.user_id.as_str()).collect();
    let workspaces: BTreeSet<&str> = fresh.iter().map(|f| f.workspace.as_str()).collect();
    let users: Vec<&str> = users.into_iter().collect();
    let workspaces: Vec<&str> = workspaces.into_iter().collect();
    match store.created_after(&users, &workspaces, after, MAX_ROWS) {
        Ok(rows) if (rows.len() as i64) < MAX_ROWS => {
            for n in rows {
                let frame = Frame {
                    id: n.id,
                    json: n.to_json().into(),
                    expires: n.expires_at,
                };
                hub.deliver_caught_up(n.user_id.as_deref(), n.workspace.as_deref(), &frame);
            }
        }
        Ok(_) => each_on_its_own(hub, &users),
        Err(err) => {
            log::warn!(connections = fresh.len(), error = err.to_string().as_str(); "catch-up of new connections failed; each reads its own");
            each_on_its_own(hub, &users);
        }
    }
}

fn each_on_its_own(hub: &Hub, users: &[&str]) {
    for user in users {
        hub.catch_up_user(user);
    }
}
