//! Listening sockets, set up before anyone accepts on them.

use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

/// Binds a listener. With `client_timeout`, every accepted connection inherits a
/// receive and send timeout (Linux copies them from the listening socket at accept):
/// that is how idle keep-alive and stalled REST clients are dropped even though
/// `tiny_http` accepts and reads the sockets itself.
pub fn listen(addr: SocketAddr, client_timeout: Option<Duration>) -> std::io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if let Some(timeout) = client_timeout {
        socket.set_read_timeout(Some(timeout))?;
        socket.set_write_timeout(Some(timeout))?;
    }
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    Ok(socket.into())
}
