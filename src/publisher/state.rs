//! State messages: after a mark or bulk commits, its `events::StateMessage` goes to
//! `{prefix}notifd:state:{user_id}` for the instances holding that user's connections.
//!
//! Best-effort exactly as notifications are: the same outage path (nothing waits on
//! a Redis known to be down; what is set aside is re-sent on recovery), which is safe
//! here because a consumer drops a counter row whose version it has already passed.

use std::sync::Arc;

use super::{pipeline, Publisher, CONNECTION_TIMEOUT};
use crate::events::StateMessage;

impl Publisher {
    /// Publishes one user's state message; never fails the request that made it.
    pub fn publish_state(&self, user_id: &str, message: &StateMessage) {
        let json = Arc::new(message.to_json());
        let channels = [(crate::channels::user_state(&self.prefix, user_id), &json)];
        if self.outage.set_aside_if_down(&channels) {
            return;
        }
        if let Err(err) = self.run(&pipeline(&channels), CONNECTION_TIMEOUT) {
            self.outage.begin(&channels, &err, &self.client);
        }
    }
}
