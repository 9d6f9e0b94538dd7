//! Redis channel names: the one place that spells them (contract §5).
//!
//! The publisher (any instance) sends on them and the subscriber (every instance)
//! listens on them; neither knows the other, both know this module.

/// What follows `notifications:` or `notifd:state:` in a workspace's channel. No user
/// id starts with it (`validate` refuses such a create), so a user's channel and a
/// workspace's never meet.
pub const WORKSPACE_MARK: &str = "workspace:";

/// `{prefix}notifications:{user_id}`: one user's notifications, the JSON of §1
/// (seed-compatible: outside consumers may subscribe to it too).
pub fn user_notifications(prefix: &str, user_id: &str) -> String {
    format!("{prefix}notifications:{user_id}")
}

/// `{prefix}notifications:workspace:{slug}`: a workspace's workspace-audience
/// notifications, the JSON of §1.
pub fn workspace_notifications(prefix: &str, slug: &str) -> String {
    format!("{prefix}notifications:{WORKSPACE_MARK}{slug}")
}

/// `{prefix}notifd:state:{user_id}`: one user's state changes and counters
/// (`events::StateMessage`) and the roster's evictions of their connections
/// (`roster::Evict`), for every instance holding a connection of that user.
pub fn user_state(prefix: &str, user_id: &str) -> String {
    format!("{prefix}notifd:state:{user_id}")
}

/// `{prefix}notifd:state:workspace:{slug}`: the counter row of a workspace's
/// workspace-audience notifications (`events::StateMessage` without a user), for
/// every instance holding a connection on that workspace.
pub fn workspace_state(prefix: &str, slug: &str) -> String {
    format!("{prefix}notifd:state:{WORKSPACE_MARK}{slug}")
}

/// What a channel carries, from its name.
#[derive(Debug, PartialEq, Eq)]
pub enum Channel<'a> {
    /// A user's notifications (the message names the user).
    UserNotifications,
    WorkspaceNotifications(&'a str),
    UserState(&'a str),
    WorkspaceState(&'a str),
}

/// The kind of `channel`, one of the names above; `None` for any other.
pub fn parse<'a>(prefix: &str, channel: &'a str) -> Option<Channel<'a>> {
    let rest = channel.strip_prefix(prefix)?;
    if let Some(name) = rest.strip_prefix("notifd:state:") {
        return Some(match name.strip_prefix(WORKSPACE_MARK) {
            Some(slug) => Channel::WorkspaceState(slug),
            None => Channel::UserState(name),
        });
    }
    let name = rest.strip_prefix("notifications:")?;
    Some(match name.strip_prefix(WORKSPACE_MARK) {
        Some(slug) => Channel::WorkspaceNotifications(slug),
        None => Channel::UserNotifications,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_parses_back_to_its_kind() {
        let p = "app:";
        assert_eq!(
            parse(p, &user_notifications(p, "alice")),
            Some(Channel::UserNotifications)
        );
        assert_eq!(
            parse(p, &workspace_notifications(p, "acme")),
            Some(Channel::WorkspaceNotifications("acme"))
        );
        assert_eq!(
            parse(p, &user_state(p, "alice")),
            Some(Channel::UserState("alice"))
        );
        assert_eq!(
            parse(p, &workspace_state(p, "acme")),
            Some(Channel::WorkspaceState("acme"))
        );
        assert_eq!(parse(p, "other:notifications:alice"), None);
    }
}
