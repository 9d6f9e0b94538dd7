//! State messages: after a mark or bulk commits, or a group of creates moved some
//! counters, each user's `events::StateMessage` goes to `{prefix}notifd:state:{user_id}`
//! for the instances holding that user's connections; a workspace's broadcasts row
//! goes to `{prefix}notifd:state:workspace:{slug}`, for every instance holding a
//! connection on that workspace.
//!
//! Best-effort exactly as notifications are: the same outage path (nothing waits on
//! a Redis known to be down; what is set aside is re-sent on recovery), which is safe
//! here because a consumer drops a counter row whose version it has already passed.

use std::sync::Arc;

use super::Publisher;
use crate::events::{CounterRow, StateMessage};

impl Publisher {
    /// Publishes one user's state message; never fails the request that made it.
    pub fn publish_state(&self, message: &StateMessage) {
        self.publish_states(std::slice::from_ref(message));
    }

    /// Publishes several users' state messages in one round trip.
    pub fn publish_states(&self, messages: &[StateMessage]) {
        if messages.is_empty() {
            return;
        }
        let jsons: Vec<Arc<String>> = messages.iter().map(|m| Arc::new(m.to_json())).collect();
        let channels: Vec<(String, &Arc<String>)> = messages
            .iter()
            .zip(&jsons)
            .map(|(m, json)| (crate::channels::user_state(&self.prefix, &m.user_id), json))
            .collect();
        self.send(&channels);
    }

    /// Publishes workspaces' broadcasts rows (creates or expiry moved them), each on
    /// its workspace's state channel, in a message without a user.
    pub fn publish_workspace_counts(&self, rows: Vec<CounterRow>) {
        if rows.is_empty() {
            return;
        }
        let messages: Vec<(String, Arc<String>)> = rows
            .into_iter()
            .filter_map(|row| {
                let channel =
                    crate::channels::workspace_state(&self.prefix, row.workspace.as_deref()?);
                let message = StateMessage {
                    user_id: String::new(),
                    change: None,
                    counters: vec![row],
                };
                Some((channel, Arc::new(message.to_json())))
            })
            .collect();
        let channels: Vec<(String, &Arc<String>)> = messages
            .iter()
            .map(|(channel, json)| (channel.clone(), json))
            .collect();
        self.send(&channels);
    }
}
