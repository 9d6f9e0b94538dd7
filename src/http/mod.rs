//! notifd's own HTTP/1.1 front for the REST API: a bounded set of worker threads
//! around one epoll instance, in place of tiny_http (whose defects the README lists).
//!
//! - Every connection is non-blocking and parked in epoll between turns (`table`):
//!   an idle keep-alive client costs a descriptor and a slot, not a thread.
//! - Workers wait in `epoll_wait` themselves; the worker an event wakes reads the
//!   request and runs its handler (`Service::serve`): no hand-off between threads.
//! - The listener is one more one-shot registration; accept errors (out of
//!   descriptors, aborted handshakes) never end the accept loop (`accept`).
//! - A timer thread closes connections past their deadline: a head or body not
//!   complete in time gets 408, an idle keep-alive connection is closed.
//! - Past `max_connections` a new connection gets 503 with `Retry-After`.
//!
//! The front knows nothing of notifd's routes: `api` implements `Service`.

mod accept;
mod chunked;
mod connection;
mod epoll;
mod refusal;
mod request;
mod response;
mod table;

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use request::{Head, Request};
pub use response::Response;

use connection::Turn;
use epoll::{Epoll, Interest};
use table::{Table, Token};

/// How often the timer thread looks for connections past their deadline.
const SWEEP_EVERY: Duration = Duration::from_millis(250);
/// Slots beyond the cap, for connections that only get their 503.
const REFUSAL_SLOTS: usize = 64;
/// Stack of a worker: handlers are shallow; JSON and SQL buffers live on the heap.
const WORKER_STACK: usize = 256 * 1024;
/// The timer only walks the table.
const TIMER_STACK: usize = 128 * 1024;

/// What the front serves: notifd's REST API, or a test's.
pub trait Service: Send + Sync + 'static {
    /// Decides from the head alone, before any body is read: the largest body the
    /// request may carry (413 beyond), or the answer that refuses it (the connection
    /// then closes).
    fn admit(&self, head: &Head) -> Result<usize, Response>;
    /// Answers one request. A panic here answers 500 and closes that connection.
    fn serve(&self, request: &Request) -> Response;
}

/// How the front runs.
#[derive(Clone, Debug)]
pub struct Settings {
    pub workers: usize,
    /// Open connections beyond which a new one gets 503.
    pub max_connections: usize,
    /// For a whole request head and body, for each write's progress, and for an idle
    /// keep-alive connection.
    pub timeout: Duration,
}

/// What the workers and the timer share.
struct Shared {
    epoll: Epoll,
    listener: TcpListener,
    table: Table,
    service: Arc<dyn Service>,
    settings: Settings,
    stopping: AtomicBool,
    accept: accept::Trouble,
}

/// The running front; `stop` ends it.
pub struct Front {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    addr: SocketAddr,
}

impl Front {
    /// Serves `listener` with `settings.workers` workers and a timer thread, each an
    /// essential thread (`supervise`): one that stops before `stop` ends the process.
    pub fn start(
        listener: TcpListener,
        settings: Settings,
        service: Arc<dyn Service>,
    ) -> io::Result<Front> {
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let epoll = Epoll::new()?;
        epoll.add(listener.as_raw_fd(), Interest::Read, epoll::LISTENER)?;
        let shared = Arc::new(Shared {
            epoll,
            listener,
            table: Table::new(settings.max_connections + REFUSAL_SLOTS),
            service,
            settings,
            stopping: AtomicBool::new(false),
            accept: accept::Trouble::new(),
        });
        let mut threads = Vec::with_capacity(shared.settings.workers + 1);
        for i in 0..shared.settings.workers {
            let worker = shared.clone();
            threads.push(essential(
                format!("notifd-http-{i}"),
                WORKER_STACK,
                &shared,
                move || work(&worker),
            )?);
        }
        let timer = shared.clone();
        threads.push(essential(
            "notifd-http-timer".into(),
            TIMER_STACK,
            &shared,
            move || sweep(&timer),
        )?);
        Ok(Front {
            shared,
            threads,
            addr,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, closes idle connections, lets requests in flight finish
    /// (their connections close after the answer), and joins every thread.
    pub fn stop(self) {
        let shared = &self.shared;
        shared.stopping.store(true, Ordering::SeqCst);
        shared.epoll.remove(shared.listener.as_raw_fd());
        close_all_parked(shared);
        shared.epoll.wake_all();
        for thread in self.threads {
            let _ = thread.join();
        }
        // A worker may have parked a connection just before it saw the flag.
        close_all_parked(shared);
    }
}

/// Starts a supervised thread whose return is expected only once the front stops.
fn essential(
    name: String,
    stack: usize,
    shared: &Arc<Shared>,
    body: impl FnOnce() + Send + 'static,
) -> io::Result<JoinHandle<()>> {
    let watched = shared.clone();
    crate::supervise::spawn_essential(
        name,
        stack,
        move || watched.stopping.load(Ordering::SeqCst),
        body,
    )
}

/// A worker: waits for one event, serves it, again, until the front stops.
fn work(shared: &Shared) {
    loop {
        let token = match shared.epoll.wait_one(None) {
            Ok(Some(token)) => token,
            Ok(None) => continue,
            Err(err) => {
                log::error!(error = err.to_string().as_str(); "REST epoll_wait failed");
                return;
            }
        };
        match token {
            epoll::WAKER if shared.stopping.load(Ordering::SeqCst) => return,
            epoll::WAKER => {}
            epoll::LISTENER => {
                if let Err(err) = accept::burst(shared) {
                    log::error!(error = err.to_string().as_str(); "cannot re-arm the REST listener");
                    return;
                }
            }
            token => take_turn(shared, token),
        }
        // Tests make "a REST worker" fail: whichever worker turns next.
        crate::supervise::fault_point("notifd-http");
    }
}

/// One turn of the connection behind `token`, then park or close it.
fn take_turn(shared: &Shared, token: Token) {
    let Some(mut connection) = shared.table.take(token) else {
        return;
    };
    let stopping = shared.stopping.load(Ordering::SeqCst);
    let turn = catch_unwind(AssertUnwindSafe(|| {
        connection.turn(shared.service.as_ref(), stopping)
    }));
    match turn {
        Ok(Turn::Park(interest, deadline)) if !stopping => {
            shared
                .table
                .park(token, connection, deadline, |connection| {
                    shared.epoll.rearm(connection.fd(), interest, token)
                });
            return;
        }
        Ok(Turn::Park(..)) => connection.finish(),
        Ok(Turn::Close) => drop(connection),
        Err(panic) => {
            log::error!(panic = connection::panic_text(&panic); "REST connection failed; closed it");
            drop(connection);
        }
    }
    shared.table.release(token);
}

/// The timer thread: closes connections past their deadline, re-arms a paused
/// listener.
fn sweep(shared: &Shared) {
    while !shared.stopping.load(Ordering::SeqCst) {
        std::thread::sleep(SWEEP_EVERY);
        for (token, connection) in shared.table.take_expired(Instant::now(), false) {
            connection.expire();
            shared.table.release(token);
        }
        if let Err(err) = shared.accept.resume_if_due(shared) {
            log::error!(error = err.to_string().as_str(); "cannot re-arm the REST listener");
            return;
        }
    }
}

/// At shutdown: closes every parked connection (a request still arriving is not
/// answered; its client retries against a running instance).
fn close_all_parked(shared: &Shared) {
    for (token, connection) in shared.table.take_expired(Instant::now(), true) {
        drop(connection);
        shared.table.release(token);
    }
}
