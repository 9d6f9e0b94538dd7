//! The WebSocket endpoint (contract §3) on its own listener: accepts, runs each
//! handshake on a short-lived thread, then each admitted connection on a long-lived
//! thread of its own (both `lean_thread`s, two memory maps each; how many the process
//! can hold is `capacity`'s), and drains them at shutdown.
//!
//! Comes after `hub`, which hands each notification to a connection's `handle`. The
//! parts, in a connection's order: `handshake` (upgrade, admit, refusals; `refuser`
//! when no thread can be had), `session` (the connection thread: its loop, timers,
//! socket I/O through `stream`, history replay and catch-up), `handle` (what other
//! threads ask of a connection), `lending` (its socket, lent while the thread sleeps),
//! `poller` (the one thread that watches every socket and runs the heartbeat), `seen`
//! (de-duplication) and `close` (every close code). The WebSocket port is not served
//! by the REST front: a connection here needs its own fd (for epoll) and non-blocking
//! mode from the handshake on.

pub mod capacity;
mod close;
mod handle;
mod handshake;
mod lean_thread;
mod lending;
mod poller;
mod protocol;
mod refuser;
mod seen;
mod session;
mod shared;
mod stream;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::auth::Verifier;
use crate::config::Config;
use crate::hub::Hub;
use crate::notification::{floor_id, id_millis};
use crate::publisher::Publisher;
use crate::shutdown::Shutdown;
use crate::store::Store;
use close::Close;
use session::Session;
use shared::{Counted, Ctx};

/// A client must finish the HTTP upgrade within this time.
const HANDSHAKE_LIMIT: Duration = Duration::from_secs(10);
/// Stack of the handshake thread (HTTP parsing, JWT verification, the Redis
/// announcement run here). More than four times `CONNECTION_STACK` on purpose: glibc
/// reuses a cached stack for a new thread only up to four times the size asked for,
/// so a connection thread never inherits the pages a handshake touched.
const HANDSHAKE_STACK: usize = 1024 * 1024;
/// Stack of a connection thread: reserved, not resident; the live loop touches a few
/// pages, a replay (PostgreSQL client) a few more.
const CONNECTION_STACK: usize = 128 * 1024;
/// How long data may wait unacknowledged before a connection is dropped.
const SEND_STALL_LIMIT: Duration = Duration::from_secs(20);
/// Handshakes allowed beyond the connection cap, to answer them with 1013.
const HANDSHAKE_MARGIN: usize = 64;
/// Thread names (`top -H`; `supervise::inject_fault` in tests).
const HANDSHAKE_THREAD: &str = "notifd-ws-hs";
const CONNECTION_THREAD: &str = "notifd-ws";
/// How long shutdown waits for connections to finish their close handshakes.
const DRAIN_LIMIT: Duration = Duration::from_secs(5);

/// The running WebSocket side.
pub struct WsServer {
    addr: SocketAddr,
    ctx: Arc<Ctx>,
    stopping: Arc<AtomicBool>,
    /// Stops the poller, once the connections have drained.
    poller_stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl WsServer {
    /// Starts the listener, the refuser and the poller; `shared` are the handles the
    /// connections use (the REST side holds the same ones).
    pub fn start(
        config: &Config,
        hub: Hub,
        shared: (Store, Publisher, Verifier),
        shutdown: Shutdown,
    ) -> std::io::Result<WsServer> {
        if let Some(lowered) = config.max_connections_lowered {
            log::warn!(
                asked = lowered.asked,
                max_connections = config.max_connections,
                limit = lowered.limit;
                "NOTIFD_MAX_CONNECTIONS is above what the process's limits allow; lowered"
            );
        }
        let ctx = Arc::new(Ctx::new(config, hub, shared, shutdown)?);
        let listener = crate::net::listen(config.ws_addr)?;
        let addr = listener.local_addr()?;
        let stopping = Arc::new(AtomicBool::new(false));
        let (refuser, refusing) = refuser::Refuser::spawn(stopping.clone())?;
        let acceptor = {
            let (ctx, stopping, stopped) = (ctx.clone(), stopping.clone(), stopping.clone());
            crate::supervise::spawn_essential(
                "notifd-ws-accept",
                128 * 1024,
                move || stopped.load(Ordering::Acquire),
                move || accept_loop(&listener, &ctx, &refuser, &stopping),
            )?
        };
        let poller_stop = Arc::new(AtomicBool::new(false));
        let heartbeat = poller::Heartbeat {
            ping_interval: config.ping_interval,
            idle_timeout: config.idle_timeout,
        };
        let polling = ctx.poller.spawn(&heartbeat, poller_stop.clone())?;
        Ok(WsServer {
            addr,
            ctx,
            stopping,
            poller_stop,
            threads: vec![acceptor, refusing, polling],
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections open now (handshakes included).
    pub fn connections(&self) -> usize {
        self.ctx.active()
    }

    /// Stops accepting and waits (bounded) for connections to close; the shutdown
    /// signal has already told each of them to close with 1001.
    pub fn stop(self) {
        self.stopping.store(true, Ordering::Release);
        // Parked connection threads look at the shutdown signal once woken.
        self.ctx.poller.wake_all();
        // Wake the blocking accept with a connection of our own.
        let wake = crate::net::connectable(self.addr);
        let _ = TcpStream::connect_timeout(&wake, Duration::from_secs(1));
        let give_up = Instant::now() + DRAIN_LIMIT;
        while self.ctx.active() > 0 && Instant::now() < give_up {
            std::thread::sleep(Duration::from_millis(20));
        }
        // Only now: until here the connections need epoll to see the close replies.
        self.poller_stop.store(true, Ordering::Release);
        for thread in self.threads {
            let _ = thread.join();
        }
    }
}

fn accept_loop(
    listener: &TcpListener,
    ctx: &Arc<Ctx>,
    refuser: &refuser::Refuser,
    stopping: &AtomicBool,
) {
    loop {
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(err) => {
                if stopping.load(Ordering::Acquire) {
                    return;
                }
                log::warn!(error = err.to_string().as_str(); "ws accept failed");
                // Out of descriptors, most likely: back off instead of spinning.
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        if stopping.load(Ordering::Acquire) {
            return;
        }
        // Far past the cap (clients that connect and never finish a handshake): drop
        // at once instead of spending a thread on each; a few over the cap still get
        // their handshake and a 1013.
        if ctx.active() >= ctx.max_connections + HANDSHAKE_MARGIN {
            drop(stream);
            continue;
        }
        let slot = ctx.count();
        let spawned = lean_thread::spawn(HANDSHAKE_THREAD, HANDSHAKE_STACK, (stream, slot), open);
        if let Err((err, (stream, slot))) = spawned {
            // The kernel refused a thread: the refuser answers 1013 (or, when it has
            // a queue full of them already, the connection is dropped).
            let answered = refuser.refuse(stream, slot);
            log::warn!(error = err.to_string().as_str(), refused_with_1013 = answered; "cannot start a handshake thread");
        }
    }
}

/// Handshake thread: upgrade, check, then hand the socket to a connection thread.
fn open((stream, slot): (TcpStream, Counted)) {
    let ctx = slot.ctx().clone();
    let _ = stream.set_nodelay(true);
    // A client that takes no data for this long while data waits (it stopped reading,
    // or vanished) is cut off by the kernel; its thread then sees the error and ends.
    let _ = socket2::SockRef::from(&stream).set_tcp_user_timeout(Some(SEND_STALL_LIMIT));
    // Before the client can know it is connected: what it creates once the upgrade
    // is answered is owed to it, however long registering takes.
    let floor = floor_id(id_millis(&uuid::Uuid::now_v7()));
    let Ok((ws, asked)) = handshake::upgrade(stream, HANDSHAKE_LIMIT, &ctx.cors_origins) else {
        return;
    };
    if ctx.active() > ctx.max_connections {
        return handshake::close_blocking(ws, Close::AtCapacity, Close::AtCapacity.reason());
    }
    let admitted = match handshake::admit(&asked, &ctx.verifier) {
        Ok(admitted) => admitted,
        Err(refusal) => {
            log::info!(code = refusal.close.code(), reason = refusal.reason.as_str(); "ws refused");
            return handshake::close_blocking(ws, refusal.close, &refusal.reason);
        }
    };
    let live = (slot, session::open(&ctx, ws, admitted, floor));
    if let Err((err, (_slot, session))) =
        lean_thread::spawn(CONNECTION_THREAD, CONNECTION_STACK, live, run_connection)
    {
        // The kernel refused a thread (EAGAIN, ENOMEM): refuse this one connection.
        log::warn!(error = err.to_string().as_str(); "cannot start a connection thread; refusing with 1013");
        session.refuse(Close::AtCapacity);
    }
}

/// Connection thread: the connection's whole life, then its slot is freed.
fn run_connection((_slot, session): (Counted, Session)) {
    session.run();
}
