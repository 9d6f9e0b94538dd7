//! The ids a connection sent recently: how replay, catch-up and live delivery
//! overlap without sending anything twice.
//!
//! A live frame can only repeat something replayed or caught up if it was created
//! shortly before (publish follows commit within moments), so ids older than
//! `WINDOW_MS` behind the newest are forgotten, and the set stays small.

use std::collections::BTreeSet;

use uuid::Uuid;

use crate::notification::id_millis;

/// How far back (by id time) an id is remembered.
pub const WINDOW_MS: u64 = 10_000;
/// Hard bound on remembered ids.
const MAX_IDS: usize = 4096;

#[derive(Debug, Default)]
pub struct Seen {
    ids: BTreeSet<Uuid>,
    newest: Option<Uuid>,
}

impl Seen {
    pub fn contains(&self, id: &Uuid) -> bool {
        self.ids.contains(id)
    }

    /// The newest id sent, if any.
    pub fn newest(&self) -> Option<Uuid> {
        self.newest
    }

    /// Remembers `id`; false when it was already there.
    pub fn insert(&mut self, id: Uuid) -> bool {
        if !self.ids.insert(id) {
            return false;
        }
        let newest = self.newest.map_or(id, |newest| newest.max(id));
        self.newest = Some(newest);
        let horizon = id_millis(&newest).saturating_sub(WINDOW_MS);
        while let Some(oldest) = self.ids.first().copied() {
            if id_millis(&oldest) >= horizon && self.ids.len() <= MAX_IDS {
                break;
            }
            self.ids.pop_first();
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notification::floor_id;

    #[test]
    fn remembers_recent_ids_and_forgets_old_ones() {
        let mut seen = Seen::default();
        let old = floor_id(1_000);
        let recent = Uuid::from_u128((u128::from(1_000 + WINDOW_MS + 5) << 80) | 1);
        seen.insert(old);
        assert!(seen.contains(&old));
        seen.insert(recent);
        assert!(
            !seen.contains(&old),
            "older than the window behind the newest"
        );
        assert!(seen.contains(&recent));
        assert_eq!(seen.newest(), Some(recent));
    }
}
