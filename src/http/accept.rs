//! Accepting REST connections, and surviving every way `accept` fails.
//!
//! A failed accept never ends the loop. Running out of descriptors (EMFILE, ENFILE)
//! or kernel memory (ENOBUFS, ENOMEM) pauses accepting: the listener is not re-armed
//! until the timer thread's next sweep, so a full descriptor table is not a busy
//! loop, and the pending connections wait in the backlog until descriptors free up.
//! A burst of such errors is logged once when it starts and once when it ends.
//! Errors about one connection (aborted before accept, a protocol error) skip it.

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::Instant;

use super::connection::Connection;
use super::epoll::{self, Interest};
use super::Shared;

/// Connections accepted per listener event before it is re-armed for other workers.
const BURST: usize = 64;

/// Accept errors of the current burst.
#[derive(Default)]
pub struct Trouble {
    state: Mutex<Option<Burst>>,
}

struct Burst {
    errors: u64,
    /// The listener waits for the timer to re-arm it.
    paused: bool,
}

impl Trouble {
    fn failed(&self, err: &io::Error) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match state.as_mut() {
            Some(burst) => {
                burst.errors += 1;
                burst.paused = true;
            }
            None => {
                log::error!(
                    error = err.to_string().as_str();
                    "REST accept failing; pausing accepts until descriptors free up"
                );
                *state = Some(Burst {
                    errors: 1,
                    paused: true,
                });
            }
        }
    }

    fn succeeded(&self) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(burst) = state.take() {
            log::warn!(failed_accepts = burst.errors; "REST accepting again");
        }
    }

    /// Called by the timer: re-arms a paused listener.
    pub fn resume_if_due(&self, shared: &Shared) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(burst) = state.as_mut().filter(|b| b.paused) {
            burst.paused = false;
            drop(state);
            rearm_listener(shared);
        }
    }
}

/// Serves one listener event: accepts up to `BURST` connections, then re-arms the
/// listener (unless accepting is paused or the front is stopping).
pub fn burst(shared: &Shared) {
    for _ in 0..BURST {
        match shared.listener.accept() {
            Ok((stream, peer)) => {
                shared.accept.succeeded();
                admit(shared, stream, peer);
            }
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
            Err(err) if out_of_resources(&err) => {
                shared.accept.failed(&err);
                return;
            }
            // ECONNABORTED, EINTR, EPROTO, EPERM (a firewall): that connection only.
            Err(err) => log::debug!(error = err.to_string().as_str(); "REST accept skipped"),
        }
    }
    rearm_listener(shared);
}

fn rearm_listener(shared: &Shared) {
    if shared.stopping.load(Ordering::SeqCst) {
        return;
    }
    if let Err(err) =
        shared
            .epoll
            .rearm(shared.listener.as_raw_fd(), Interest::Read, epoll::LISTENER)
    {
        log::error!(error = err.to_string().as_str(); "cannot re-arm the REST listener");
    }
}

fn out_of_resources(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// Parks a new connection in the table and epoll; past the cap it gets 503.
fn admit(shared: &Shared, stream: TcpStream, peer: SocketAddr) {
    if stream.set_nonblocking(true).is_err() {
        return;
    }
    // One write per response already; without this a reply could still wait out the
    // client's delayed ACK behind a previous one.
    let _ = stream.set_nodelay(true);
    let timeout = shared.settings.timeout;
    let counted = shared.table.counted() < shared.settings.max_connections;
    let (connection, interest) = if counted {
        (Connection::new(stream, peer, timeout), Interest::Read)
    } else {
        log::debug!(peer = peer.to_string().as_str(); "REST connection cap reached; answered 503");
        (Connection::refused(stream, peer, timeout), Interest::Write)
    };
    let deadline = connection.first_deadline(Instant::now());
    // No free slot (the cap and the refusal slots all taken): dropping closes it.
    let _ = shared
        .table
        .insert(connection, counted, deadline, |connection, token| {
            shared.epoll.add(connection.fd(), interest, token)
        });
}
