//! The running service: applies migrations, opens the listeners and starts the
//! threads (REST workers, the Redis subscriber, the WebSocket side), and stops them
//! in order.
//!
//! `main` and the tests both start notifd through `Server::start`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::api::{self, Ctx};
use crate::auth::Verifier;
use crate::committer::{Committer, Policy};
use crate::config::Config;
use crate::error::Error;
use crate::http::Front;
use crate::hub::Hub;
use crate::publisher::Publisher;
use crate::shutdown::{self, Shutdown, Trigger};
use crate::store::{self, Store};
use crate::websocket::WsServer;

/// How long start-up waits for the first Redis subscription.
const SUBSCRIBE_WAIT: Duration = Duration::from_secs(3);
/// Longest pause between attempts to apply migrations while PostgreSQL is down.
const MAX_MIGRATE_BACKOFF: Duration = Duration::from_secs(30);

/// A running notifd.
pub struct Server {
    http_addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    front: Front,
    ws: WsServer,
    background: Vec<JoinHandle<()>>,
    trigger: Trigger,
}

impl Server {
    /// Starts everything; returns once the listeners are bound. In the road's order:
    /// storage (PostgreSQL, Redis publishing), the real-time side (subscriber, hub,
    /// WebSockets), then REST, which takes requests only once all of it runs.
    pub fn start(config: &Config) -> Result<Server, Error> {
        let (trigger, shutdown) = shutdown::channel();
        let mut background = Vec::new();
        let ctx = Arc::new(start_storage(config, &shutdown, &mut background)?);
        let ws = start_realtime(config, &ctx, &shutdown, &mut background)?;
        let front = start_rest(config, ctx)?;
        let metrics_addr = match config.metrics_addr {
            Some(addr) => {
                let (bound, thread) = crate::metrics_listener::spawn(addr, shutdown.clone())
                    .map_err(|e| bind_error("NOTIFD_METRICS_ADDR", addr, e))?;
                background.push(thread);
                Some(bound)
            }
            None => None,
        };
        let http_addr = front.addr();
        log::info!(
            version = env!("CARGO_PKG_VERSION"),
            http_addr = http_addr.to_string().as_str(),
            ws_addr = ws.addr().to_string().as_str(),
            metrics_addr = metrics_addr.map_or_else(|| "rest".to_string(), |a| a.to_string()).as_str(),
            http_workers = config.http_workers,
            http_max_connections = config.http_max_connections,
            max_connections = config.max_connections;
            "notifd started"
        );
        Ok(Server {
            http_addr,
            metrics_addr,
            front,
            ws,
            background,
            trigger,
        })
    }

    /// The bound REST address (useful with port 0).
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The bound `/metrics` address, when it has one of its own.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// The bound WebSocket address (useful with port 0).
    pub fn ws_addr(&self) -> SocketAddr {
        self.ws.addr()
    }

    /// WebSocket connections open now.
    pub fn ws_connections(&self) -> usize {
        self.ws.connections()
    }

    /// Closes WebSockets with 1001, stops accepting, lets in-flight requests finish,
    /// joins every thread.
    pub fn shutdown(self) {
        self.trigger.fire();
        self.ws.stop();
        self.front.stop();
        for handle in self.background {
            let _ = handle.join();
        }
        log::info!("notifd stopped");
    }
}

/// Storage: migrations (retried in the background while PostgreSQL is down), the
/// pools, the committers and retention; returns what the REST handlers share.
fn start_storage(
    config: &Config,
    shutdown: &Shutdown,
    background: &mut Vec<JoinHandle<()>>,
) -> Result<Ctx, Error> {
    if let Err(err) = apply_migrations(&config.database_url) {
        // Serve anyway so /readyz can say what is wrong; keep trying meanwhile.
        log::warn!(error = err.to_string().as_str(); "cannot apply migrations yet; retrying in the background");
        let (url, shutdown) = (config.database_url.clone(), shutdown.clone());
        background.push(spawn("notifd-migrate", 512 * 1024, move || {
            migrate_until_done(&url, &shutdown)
        })?);
    }
    let store = Store::new(&config.database_url, config.db_pool_size)?;
    let publisher = Publisher::new(&config.redis_url, &config.redis_prefix, config.db_pool_size)?;
    let (committer, committers) =
        Committer::start(store.clone(), publisher.clone(), Policy::of(config))
            .map_err(|e| Error::Startup(format!("cannot start committers: {e}")))?;
    background.extend(committers);
    let verifier = Verifier::new(&config.jwt).map_err(Error::Internal)?;
    background.extend(crate::retention::start(
        config, shutdown, &store, &publisher,
    )?);
    Ok(Ctx {
        store,
        publisher,
        committer,
        verifier,
        cors_origins: config.cors_origins.clone(),
        metrics_on_rest: config.metrics_addr.is_none(),
        test_faults: config.test_faults,
    })
}

/// The real-time side: the hub, the Redis subscriber that feeds it, and the WebSocket
/// listener whose connections register with it.
fn start_realtime(
    config: &Config,
    ctx: &Ctx,
    shutdown: &Shutdown,
    background: &mut Vec<JoinHandle<()>>,
) -> Result<WsServer, Error> {
    let hub = Hub::new(uuid::Uuid::now_v7().simple().to_string());
    let (subscriber, subscribed) = crate::subscriber::spawn(
        &config.redis_url,
        &config.redis_prefix,
        hub.clone(),
        ctx.store.clone(),
        shutdown.clone(),
    )
    .map_err(|e| Error::Startup(format!("cannot start the Redis subscriber: {e}")))?;
    background.push(subscriber);
    // Take connections once Redis deliveries (and 4005 from other instances) can
    // reach them; with Redis down, start anyway and catch up when it is back.
    if subscribed.recv_timeout(SUBSCRIBE_WAIT).is_err() {
        log::warn!("redis subscriber not ready yet; serving anyway");
    }
    let shared = (
        ctx.store.clone(),
        ctx.publisher.clone(),
        ctx.verifier.clone(),
    );
    WsServer::start(config, hub, shared, shutdown.clone())
        .map_err(|e| bind_error("NOTIFD_WS_ADDR", config.ws_addr, e))
}

/// REST: notifd's HTTP front serving the API.
fn start_rest(config: &Config, ctx: Arc<Ctx>) -> Result<Front, Error> {
    let listener = crate::net::listen(config.http_addr)
        .map_err(|e| bind_error("NOTIFD_HTTP_ADDR", config.http_addr, e))?;
    let settings = crate::http::Settings {
        workers: config.http_workers,
        max_connections: config.http_max_connections,
        timeout: config.http_timeout,
    };
    Front::start(listener, settings, Arc::new(api::Api(ctx)))
        .map_err(|e| Error::Startup(format!("cannot start the REST front: {e}")))
}

/// The one way this module starts a thread of its own.
fn spawn(
    name: &str,
    stack: usize,
    body: impl FnOnce() + Send + 'static,
) -> Result<JoinHandle<()>, Error> {
    std::thread::Builder::new()
        .name(name.to_string())
        .stack_size(stack)
        .spawn(body)
        .map_err(|e| Error::Startup(format!("cannot start thread {name}: {e}")))
}

/// A listener that cannot bind, naming the setting to change.
fn bind_error(variable: &str, addr: SocketAddr, err: std::io::Error) -> Error {
    Error::Startup(format!("{variable}: cannot listen on {addr}: {err}"))
}

/// Creates the database if needed and applies pending migrations.
pub fn apply_migrations(url: &str) -> Result<usize, Error> {
    let mut client = store::connect_creating(url)?;
    store::migrate(&mut client)
}

fn migrate_until_done(url: &str, shutdown: &Shutdown) {
    let mut backoff = Duration::from_millis(500);
    while !shutdown.wait(backoff) {
        match apply_migrations(url) {
            Ok(_) => {
                log::info!("migrations applied; PostgreSQL is reachable");
                return;
            }
            Err(err) => log::warn!(error = err.to_string().as_str(); "cannot apply migrations yet"),
        }
        backoff = (backoff * 2).min(MAX_MIGRATE_BACKOFF);
    }
}
