//! What every handshake and connection thread of the WebSocket side shares: the
//! handles of the parts around it (hub, store, publisher, verifier, poller,
//! shutdown), the settings connections need, and how many connections are open.
//!
//! Built once by `WsServer::start`; each thread holds it through an `Arc`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::poller::Poller;
use crate::auth::Verifier;
use crate::config::Config;
use crate::hub::Hub;
use crate::publisher::Publisher;
use crate::roster::Roster;
use crate::shutdown::Shutdown;
use crate::store::Store;

/// What every handshake and connection thread shares.
pub struct Ctx {
    pub hub: Hub,
    pub store: Store,
    pub publisher: Publisher,
    pub verifier: Verifier,
    /// Every instance's connections per (user, workspace): `NOTIFD_CONNECTIONS_PER_USER`.
    pub roster: Roster,
    pub poller: Poller,
    pub shutdown: Shutdown,
    pub ping_interval: Duration,
    pub idle_timeout: Duration,
    pub leeway: Duration,
    pub queue_capacity: usize,
    pub max_connections: usize,
    pub cors_origins: Vec<String>,
    /// Connections from accept to close, handshakes included (`count`).
    active: AtomicUsize,
}

impl Ctx {
    pub fn new(
        config: &Config,
        hub: Hub,
        (store, publisher, verifier): (Store, Publisher, Verifier),
        shutdown: Shutdown,
    ) -> std::io::Result<Ctx> {
        Ok(Ctx {
            hub,
            store,
            publisher,
            verifier,
            roster: Roster::new(
                &config.redis_url,
                &config.redis_prefix,
                config.connections_per_user,
            )
            .map_err(std::io::Error::other)?,
            poller: Poller::new(config.max_connections)?,
            shutdown,
            ping_interval: config.ping_interval,
            idle_timeout: config.idle_timeout,
            leeway: config.jwt.leeway,
            queue_capacity: config.ws_queue,
            max_connections: config.max_connections,
            cors_origins: config.cors_origins.clone(),
            active: AtomicUsize::new(0),
        })
    }
}

impl Ctx {
    /// Counts a connection from accept to close (the cap, and the drain at shutdown).
    pub fn count(self: &Arc<Ctx>) -> Counted {
        self.active.fetch_add(1, Ordering::AcqRel);
        Counted(self.clone())
    }

    /// Connections open now (handshakes included).
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Acquire)
    }
}

/// A connection counted from accept to close: uncounted on drop.
pub struct Counted(Arc<Ctx>);

impl Counted {
    pub fn ctx(&self) -> &Arc<Ctx> {
        &self.0
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::AcqRel);
    }
}
