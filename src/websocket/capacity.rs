//! How many WebSocket connections one process can hold (`NOTIFD_MAX_CONNECTIONS`'s
//! default and ceiling): what its kernel limits (`process::limits`) allow at what one
//! connection costs, less a reserve for everything else.
//!
//! A connection costs one descriptor (its socket) and one thread (the handshake's,
//! then the connection's), a lean thread of two memory maps (`lean_thread`; measured:
//! 2.0 maps per connection, 4.0 with std threads). Past the cap the accept loop still
//! takes `HANDSHAKE_MARGIN` more to answer them with 1013, so those are paid for too.

use super::lean_thread;
use super::HANDSHAKE_MARGIN;
use crate::process::{Headroom, ProcessLimits};

/// What one thing costs of each limited resource.
#[derive(Debug, Clone, Copy)]
pub struct Cost {
    pub descriptors: u64,
    pub threads: u64,
    pub maps: u64,
}

/// One WebSocket connection.
pub const PER_CONNECTION: Cost = Cost {
    descriptors: 1,
    threads: 1,
    maps: lean_thread::MAPS_PER_THREAD,
};

/// Kept back from WebSocket connections (or half of what is left, if less): the REST
/// front's connections (`NOTIFD_HTTP_MAX_CONNECTIONS` defaults to what the descriptors
/// leave after this cap) and its thread pool, the PostgreSQL pool, Redis, listeners;
/// the other threads' four maps each, glibc's cache of thread stacks (up to 40 MiB of
/// them, two maps each) and the heap's growth.
pub const RESERVE: Cost = Cost {
    descriptors: 1024,
    threads: 512,
    maps: 4096,
};

/// Smallest cap: below it notifd would not be worth running (and tests need a few).
const MIN_CONNECTIONS: usize = 16;

/// A connection cap and the limit that sets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allowed {
    pub connections: usize,
    /// `RLIMIT_NOFILE`, `kernel.pid_max`, `vm.max_map_count`, …
    pub limit: &'static str,
}

/// The most connections `limits` leave room for.
pub fn allowed(limits: &ProcessLimits) -> Allowed {
    let fits = |headroom: Headroom, reserve: u64, cost: u64| {
        let usable = headroom.available - reserve.min(headroom.available / 2);
        let connections = (usable / cost).saturating_sub(HANDSHAKE_MARGIN as u64);
        (connections, headroom.limit)
    };
    let (connections, limit) = [
        fits(
            limits.descriptors,
            RESERVE.descriptors,
            PER_CONNECTION.descriptors,
        ),
        fits(limits.threads, RESERVE.threads, PER_CONNECTION.threads),
        fits(limits.maps, RESERVE.maps, PER_CONNECTION.maps),
    ]
    .into_iter()
    .min_by_key(|(connections, _)| *connections)
    .unwrap_or((0, "none"));
    Allowed {
        connections: usize::try_from(connections)
            .unwrap_or(usize::MAX)
            .max(MIN_CONNECTIONS),
        limit,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(descriptors: u64, threads: u64, maps: u64) -> ProcessLimits {
        let headroom = |available, limit| Headroom { available, limit };
        ProcessLimits {
            descriptors: headroom(descriptors, "RLIMIT_NOFILE"),
            threads: headroom(threads, "kernel.pid_max"),
            maps: headroom(maps, "vm.max_map_count"),
        }
    }

    #[test]
    fn the_tightest_limit_sets_the_cap_after_the_reserve() {
        // This machine: 20,000 descriptors, 32,768 pids, 65,530 maps.
        let cap = allowed(&limits(19_990, 32_000, 65_350));
        assert_eq!(cap.limit, "RLIMIT_NOFILE");
        assert_eq!(cap.connections, 19_990 - 1024 - HANDSHAKE_MARGIN);
        // A big descriptor limit: the maps bind, at two per connection.
        let cap = allowed(&limits(1 << 20, 1 << 20, 65_350));
        assert_eq!(cap.limit, "vm.max_map_count");
        assert_eq!(cap.connections, (65_350 - 4096) / 2 - HANDSHAKE_MARGIN);
    }

    #[test]
    fn small_limits_keep_half_for_the_rest_and_a_floor() {
        let cap = allowed(&limits(1000, u64::MAX, u64::MAX));
        assert_eq!(cap.connections, 500 - HANDSHAKE_MARGIN);
        assert_eq!(cap.limit, "RLIMIT_NOFILE");
        assert_eq!(allowed(&limits(10, 10, 10)).connections, MIN_CONNECTIONS);
    }
}
