//! A connection's seat in the cluster-wide roster (`NOTIFD_CONNECTIONS_PER_USER`):
//! taken when the session opens, replacing (4005) the oldest connections beyond the
//! limit wherever they are, and left when the session ends.
//!
//! Comes after the hub registration (a newer connection's admission may evict this
//! one at once, and must find it) and talks to `roster`; the evictions of other
//! instances' connections travel on the control channel, which their subscribers read.

use super::super::shared::Ctx;
use crate::hub::Registration;
use crate::roster::{Admission, Conn, Evict, Roster};

/// A connection's place in the roster (`NOTIFD_CONNECTIONS_PER_USER`); leaves it on
/// drop, through the roster's own thread.
pub struct Seat {
    roster: Roster,
    user_id: String,
    workspace: String,
    conn: Conn,
}

impl Drop for Seat {
    fn drop(&mut self) {
        self.roster
            .leave_later(&self.user_id, &self.workspace, &self.conn);
    }
}

/// Admits the connection to the roster and replaces (4005) the ones it pushed past
/// the limit: this instance's at once, the others' through the control channel.
/// Without Redis, the limit holds among this instance's connections.
pub fn take_seat(ctx: &Ctx, registration: &Registration, user_id: &str, workspace: &str) -> Seat {
    let conn = Conn::from(registration.key());
    match ctx.roster.admit(user_id, workspace, &conn) {
        Admission::Admitted { evicted } if !evicted.is_empty() => {
            let evict = Evict {
                user_id: user_id.to_string(),
                workspace: workspace.to_string(),
                close: evicted,
            };
            let here: Vec<u64> = evict.ids_on(ctx.hub.instance()).collect();
            ctx.hub.replace(user_id, workspace, &here);
            if here.len() < evict.close.len() {
                let json = serde_json::to_string(&evict).unwrap_or_default();
                if let Err(err) = ctx.publisher.publish_control(user_id, &json) {
                    log::warn!(error = err.to_string().as_str(); "cannot tell other instances of replaced connections");
                }
            }
        }
        Admission::Admitted { .. } => {}
        Admission::Unavailable => ctx.hub.keep_newest(user_id, workspace, ctx.roster.limit()),
    }
    Seat {
        roster: ctx.roster.clone(),
        user_id: user_id.to_string(),
        workspace: workspace.to_string(),
        conn,
    }
}
