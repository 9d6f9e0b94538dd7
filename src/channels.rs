//! Redis channel names: the one place that spells them (contract §5).
//!
//! The publisher (any instance) sends on them and the subscriber (every instance)
//! listens on them; neither knows the other, both know this module.

/// `{prefix}notifications:{user_id}`: one user's notifications, the JSON of §1
/// (seed-compatible: outside consumers may subscribe to it too).
pub fn user_notifications(prefix: &str, user_id: &str) -> String {
    format!("{prefix}notifications:{user_id}")
}

/// The pattern matching every user's notification channel.
pub fn all_user_notifications(prefix: &str) -> String {
    user_notifications(prefix, "*")
}

/// `{prefix}notifd:control`: messages between instances ("newest connection wins").
pub fn control(prefix: &str) -> String {
    format!("{prefix}notifd:control")
}

/// `{prefix}notifd:state:{user_id}`: one user's state changes and counters
/// (`events::StateMessage`), for every instance holding a connection of that user.
pub fn user_state(prefix: &str, user_id: &str) -> String {
    format!("{prefix}notifd:state:{user_id}")
}

/// The pattern matching every user's state channel.
pub fn all_user_states(prefix: &str) -> String {
    user_state(prefix, "*")
}

/// The user whose state channel `channel` is, if it is one.
pub fn state_user<'a>(prefix: &str, channel: &'a str) -> Option<&'a str> {
    channel.strip_prefix(prefix)?.strip_prefix("notifd:state:")
}
