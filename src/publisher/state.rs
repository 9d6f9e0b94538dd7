//! State messages: after a mark or bulk commits, or a group of creates moved some
//! counters, each user's `events::StateMessage` goes to `{prefix}notifd:state:{user_id}`
//! for the instances holding that user's connections.
//!
//! Best-effort exactly as notifications are: the same outage path (nothing waits on
//! a Redis known to be down; what is set aside is re-sent on recovery), which is safe
//! here because a consumer drops a counter row whose version it has already passed.

use std::sync::Arc;

use super::Publisher;
use crate::events::StateMessage;

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
}
