//! notifd: a self-hosted, real-time notification server.
//!
//! A notification travels one road, and the modules read along it:
//!
//! ```text
//! REST create -> validate -> committer (store: PostgreSQL, group commit; then publisher: Redis)
//!   -> subscriber thread -> hub (user -> connections) -> connection handle
//!        -> straight to the socket, when its thread sleeps with the socket lent
//!        -> or the connection queue -> its session thread -> WebSocket
//! REST list / mark-read -> store
//! ```
//!
//! - [`config`] / [`cli`]: every `NOTIFD_*` setting, parsed and validated once;
//!   [`check`]: `notifd check-config` (the settings, masked, and the dependencies).
//! - [`auth`]: JWT verification and what a token grants.
//! - [`notification`]: the one JSON shape; [`validate`]: create requests;
//!   [`events`]: state changes and counts (the notifd.v1 event protocol).
//! - [`store`]: PostgreSQL (pool, migrations, keyset pages, read state).
//! - [`committer`]: group commit of concurrent creates, then one Redis pipeline.
//! - [`publisher`]: Redis publish after commit; [`subscriber`]: the one thread that
//!   receives from Redis; [`channels`]: the Redis channel names both use;
//!   [`hub`]: user -> this instance's connections (a registry of their handles);
//!   [`roster`]: every instance's connections per (user, workspace) in Redis, for
//!   `NOTIFD_CONNECTIONS_PER_USER`.
//! - [`websocket`]: the WebSocket listener, handshakes, per-connection sessions, the
//!   handles the hub delivers through, and the poller (epoll and the heartbeat).
//! - [`http`]: notifd's own HTTP/1.1 front (epoll, bounded workers, protocol rules);
//!   [`api`]: the REST endpoints it serves; [`face`]: the inbox page, `notifd.js`
//!   and the OpenAPI document those endpoints include.
//! - [`server`]: starts and stops all of it; [`shutdown`]: the closed-channel signal.
//! - [`retention`]: deletes notifications past `NOTIFD_RETENTION_DAYS`.
//! - [`metrics`]: Prometheus counters and histograms for `/metrics`;
//!   [`metrics_listener`]: `/metrics` on an address of its own, when configured.
//! - [`supervise`]: essential threads; one that stops ends the process (exit 70) so
//!   systemd restarts it.
//! - [`logging`], [`process`], [`net`], [`error`]: plumbing.

pub mod api;
pub mod auth;
pub mod channels;
pub mod check;
pub mod cli;
pub mod committer;
pub mod config;
pub mod error;
pub mod events;
pub mod face;
pub mod http;
pub mod hub;
pub mod logging;
pub mod metrics;
pub mod metrics_listener;
pub mod net;
pub mod notification;
pub mod process;
pub mod publisher;
pub mod redis_link;
pub mod retention;
pub mod roster;
pub mod server;
pub mod shutdown;
pub mod store;
pub mod subscriber;
pub mod supervise;
pub mod validate;
pub mod websocket;

pub use config::Config;
pub use error::Error;
pub use server::Server;
