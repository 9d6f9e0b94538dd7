//! Listening sockets, set up before anyone accepts on them.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

use crate::shutdown::Shutdown;

/// Binds a listener. With `client_timeout`, every accepted connection inherits a
/// receive and send timeout (Linux copies them from the listening socket at accept):
/// that is how idle keep-alive and stalled REST clients are dropped even though
/// `tiny_http` accepts and reads the sockets itself, with no hook of its own.
///
/// The receive timeout also bounds a blocking `accept()` on the listener, and
/// tiny_http's accept thread ends at its first accept error: see `pace_accepts`.
pub fn listen(addr: SocketAddr, client_timeout: Option<Duration>) -> std::io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    // Inherited by accepted sockets too: without it, a response written in two parts
    // (tiny_http writes head and body separately) waits out the client's delayed ACK,
    // 40 ms a page.
    socket.set_tcp_nodelay(true)?;
    if let Some(timeout) = client_timeout {
        socket.set_read_timeout(Some(timeout))?;
        socket.set_write_timeout(Some(timeout))?;
    }
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    Ok(socket.into())
}

/// Longest pause between pacer connections.
///
/// tiny_http's task pool can lose a wake-up when several connections arrive at once:
/// the extra ones wait in its queue until some pool thread comes free, which with
/// keep-alive clients can take until a connection times out (seen: 5 to 15 s for the
/// first answer to a burst of 16 new keep-alive connections). Every pacer connection
/// ends at once and frees a thread that then takes the oldest waiting connection, so
/// pacing bounds that stall.
pub const MAX_PACE: Duration = Duration::from_millis(200);

/// An address this process can connect to for a listener bound to `addr`: the
/// loopback address of the same family when bound to all interfaces.
pub fn connectable(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V4(a) if a.ip().is_unspecified() => {
            SocketAddr::from(([127, 0, 0, 1], a.port()))
        }
        SocketAddr::V6(a) if a.ip().is_unspecified() => {
            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, a.port()))
        }
        other => other,
    }
}

/// Longest pause between pacer connections while no REST client is about.
pub const QUIET_PACE: Duration = Duration::from_secs(2);
/// How long after a REST request the pacer keeps its quick pace.
const BUSY_SPELL: Duration = Duration::from_secs(10);

/// Set by every REST request, taken by the pacer.
static REST_ACTIVITY: AtomicBool = AtomicBool::new(false);

/// Tells the pacer that REST clients are about (each request; a plain load when the
/// flag is already set, so workers do not fight over its cache line).
pub fn note_rest_activity() {
    if !REST_ACTIVITY.load(Ordering::Relaxed) {
        REST_ACTIVITY.store(true, Ordering::Relaxed);
    }
}

/// Keeps a listener with a receive timeout from ever timing out in `accept()`, and
/// tiny_http's task pool from stalling (see `MAX_PACE`): opens and closes connections
/// to it, a round every `busy` while REST requests come in (and for `BUSY_SPELL`
/// after the last), one connection every `quiet` otherwise. Each round costs a few
/// thread wake-ups in tiny_http: the quiet pace keeps an idle server idle, and the
/// first request after a quiet spell brings the quick pace back within `busy`. The
/// connections send nothing; tiny_http reads EOF and drops them.
pub fn pace_accepts(addr: SocketAddr, busy: Duration, quiet: Duration, shutdown: &Shutdown) {
    let target = connectable(addr);
    // Quick at first: a server that just started is about to be used.
    let mut busy_until = Instant::now() + BUSY_SPELL;
    let mut next_quiet_round = Instant::now();
    while !shutdown.wait(busy) {
        let now = Instant::now();
        if REST_ACTIVITY.swap(false, Ordering::Relaxed) {
            busy_until = now + BUSY_SPELL;
        }
        if now < busy_until {
            pace_round(target, PACE_CONNECTIONS);
        } else if now >= next_quiet_round {
            pace_round(target, 1);
            next_quiet_round = now + quiet;
        }
    }
}

/// Opens `count` connections to `target` at once and closes them.
fn pace_round(target: SocketAddr, count: usize) {
    // Several at once: each frees a pool thread (releasing one stalled connection)
    // and the pool keeps that many idle threads ready for the next burst.
    let mut open = Vec::with_capacity(count);
    for _ in 0..count {
        match TcpStream::connect_timeout(&target, Duration::from_secs(1)) {
            Ok(stream) => open.push(stream),
            Err(err) => {
                log::warn!(error = err.to_string().as_str(); "cannot reach the REST listener");
                break;
            }
        }
    }
}

/// Connections the pacer opens per round while REST clients are about.
const PACE_CONNECTIONS: usize = 8;
