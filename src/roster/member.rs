//! The roster's names: the Redis key of one (user, workspace), a connection's member
//! string in it, and `Evict`, the control-channel message that carries evictions to
//! the instances holding those connections. Both `roster` (writing) and the caller
//! that routes evictions (reading) use them; nothing here talks to Redis.

use serde::{Deserialize, Serialize};

/// One WebSocket connection, cluster-wide: the instance that holds it and that
/// instance's id for it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Conn {
    pub instance: String,
    pub id: u64,
}

impl Conn {
    pub fn new(instance: impl Into<String>, id: u64) -> Conn {
        Conn {
            instance: instance.into(),
            id,
        }
    }

    /// `{id}@{instance}`: the id first, so the first `@` ends it whatever the
    /// instance id holds.
    pub fn member(&self) -> String {
        format!("{}@{}", self.id, self.instance)
    }

    /// The connection a member string names; `None` for anything `member` did not
    /// write (a foreign or damaged entry is skipped, never trusted).
    pub fn parse(member: &str) -> Option<Conn> {
        let (id, instance) = member.split_once('@')?;
        let id = id.parse().ok()?;
        (!instance.is_empty()).then(|| Conn::new(instance, id))
    }
}

impl From<&crate::hub::ConnKey> for Conn {
    fn from(key: &crate::hub::ConnKey) -> Conn {
        Conn::new(key.instance.clone(), key.id)
    }
}

/// `{prefix}notifd:roster:{len}:{user_id}:{workspace}`, `len` being the user id's
/// length in bytes: user ids and workspace slugs may both hold `:`, and without the
/// length `a:b` + `c` and `a` + `b:c` would share a key.
pub fn key(prefix: &str, user_id: &str, workspace: &str) -> String {
    format!(
        "{prefix}notifd:roster:{}:{user_id}:{workspace}",
        user_id.len()
    )
}

/// The control-channel message (JSON) naming connections that must close with 4005
/// because a newer one of the same user and workspace took their place. Every
/// instance hears it and closes those whose `instance` is its own; one that holds
/// none of them (or the instance is gone) does nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evict {
    pub user_id: String,
    pub workspace: String,
    pub close: Vec<Conn>,
}

impl Evict {
    /// The ids of the connections `instance` must close.
    pub fn ids_on<'a>(&'a self, instance: &'a str) -> impl Iterator<Item = u64> + 'a {
        self.close
            .iter()
            .filter(move |c| c.instance == instance)
            .map(|c| c.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_round_trip_and_foreign_ones_are_refused() {
        let conn = Conn::new("0190f0a1@odd:instance", 17);
        assert_eq!(conn.member(), "17@0190f0a1@odd:instance");
        assert_eq!(Conn::parse(&conn.member()), Some(conn));
        for foreign in ["", "17", "17@", "x@i", "-1@i", "@i"] {
            assert_eq!(Conn::parse(foreign), None, "{foreign:?}");
        }
    }

    #[test]
    fn keys_cannot_collide_across_the_user_workspace_boundary() {
        assert_ne!(key("p:", "a:b", "c"), key("p:", "a", "b:c"));
        assert_eq!(key("p:", "alice", "acme"), "p:notifd:roster:5:alice:acme");
    }

    #[test]
    fn evict_is_json_and_each_instance_finds_its_own() {
        let evict = Evict {
            user_id: "alice".into(),
            workspace: "acme".into(),
            close: vec![Conn::new("a", 1), Conn::new("b", 2), Conn::new("a", 3)],
        };
        let json = serde_json::to_string(&evict).expect("serializes");
        assert_eq!(serde_json::from_str::<Evict>(&json).expect("parses"), evict);
        assert_eq!(evict.ids_on("a").collect::<Vec<_>>(), [1, 3]);
        assert_eq!(evict.ids_on("c").count(), 0);
    }
}
