//! Listening sockets, set up before anyone accepts on them.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

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

/// Keeps a listener with a receive timeout from ever timing out in `accept()`, and
/// tiny_http's task pool from stalling (see `MAX_PACE`): opens and closes a connection
/// to it every `every`. The connection sends nothing; tiny_http reads EOF and drops it.
pub fn pace_accepts(addr: SocketAddr, every: Duration, shutdown: &Shutdown) {
    let target = match addr {
        SocketAddr::V4(a) if a.ip().is_unspecified() => {
            SocketAddr::from(([127, 0, 0, 1], a.port()))
        }
        SocketAddr::V6(a) if a.ip().is_unspecified() => {
            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, a.port()))
        }
        other => other,
    };
    while !shutdown.wait(every) {
        // Several at once: each frees a pool thread (releasing one stalled connection)
        // and the pool keeps that many idle threads ready for the next burst.
        let mut open = Vec::with_capacity(PACE_CONNECTIONS);
        for _ in 0..PACE_CONNECTIONS {
            match TcpStream::connect_timeout(&target, Duration::from_secs(1)) {
                Ok(stream) => open.push(stream),
                Err(err) => {
                    log::warn!(error = err.to_string().as_str(); "cannot reach the REST listener");
                    break;
                }
            }
        }
    }
}

/// Connections the pacer opens per round.
const PACE_CONNECTIONS: usize = 8;
