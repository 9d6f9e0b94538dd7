//! Accepting REST connections, and surviving every way `accept` fails.
//!
//! A failed accept never ends the loop. Out of descriptors (EMFILE, ENFILE), the
//! front frees the one descriptor it keeps spare, accepts a waiting client with it,
//! answers 503 and closes (contract §7: refused with its code, not left waiting).
//! When even that fails, or the kernel is out of memory (ENOBUFS, ENOMEM), accepting
//! pauses: the listener is re-armed at the timer thread's next sweep, so a full
//! descriptor table is not a busy loop. A burst of such errors is logged once when it
//! starts and once when it ends. Errors about one connection (aborted before accept,
//! a protocol error) skip it.

use std::fs::File;
use std::io::{self, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::Instant;

use super::connection::{Connection, Turn};
use super::epoll::{self, Interest};
use super::refusal::Refusal;
use super::table::lock;
use super::Shared;

/// Connections accepted per listener event before it is re-armed for other workers.
const BURST: usize = 64;

/// Accept errors of the current burst, and the spare descriptor.
pub struct Trouble {
    state: Mutex<Option<Burst>>,
    /// Closed to make room for one more accept when the table is full.
    spare: Mutex<Option<File>>,
}

struct Burst {
    errors: u64,
    /// The listener waits for the timer to re-arm it.
    paused: bool,
}

impl Trouble {
    pub fn new() -> Trouble {
        Trouble {
            state: Mutex::new(None),
            spare: Mutex::new(open_spare()),
        }
    }

    /// Counts a failed accept (logging the first of a burst); `paused` when the
    /// listener now waits for the timer.
    fn failed(&self, err: &io::Error, paused: bool) {
        let mut state = lock(&self.state);
        match state.as_mut() {
            Some(burst) => {
                burst.errors += 1;
                burst.paused |= paused;
            }
            None => {
                log::error!(
                    error = err.to_string().as_str();
                    "REST accept failing; answering 503 and pausing accepts until descriptors free up"
                );
                *state = Some(Burst { errors: 1, paused });
            }
        }
    }

    fn succeeded(&self) {
        if let Some(burst) = lock(&self.state).take() {
            log::warn!(failed_accepts = burst.errors; "REST accepting again");
        }
    }

    /// Called by the timer: re-arms a paused listener.
    pub fn resume_if_due(&self, shared: &Shared) -> io::Result<()> {
        let mut state = lock(&self.state);
        if let Some(burst) = state.as_mut().filter(|b| b.paused) {
            burst.paused = false;
            drop(state);
            return rearm_listener(shared);
        }
        Ok(())
    }

    /// Out of descriptors: spends the spare one on a waiting client, which gets 503.
    /// False when there was no spare or no client to take.
    fn refuse_with_spare(&self, shared: &Shared) -> bool {
        let mut spare = lock(&self.spare);
        if spare.take().is_none() {
            *spare = open_spare();
            return false;
        }
        let refused = match shared.listener.accept() {
            Ok((stream, _)) => {
                answer_busy(stream);
                true
            }
            Err(_) => false,
        };
        *spare = open_spare();
        refused
    }
}

fn open_spare() -> Option<File> {
    File::open("/dev/null").ok()
}

/// Writes the 503 on a fresh socket (its send buffer takes it whole) and closes it.
fn answer_busy(mut stream: TcpStream) {
    let mut bytes = Vec::new();
    Refusal::busy()
        .into_response()
        .write_to(&mut bytes, false, false);
    let _ = stream.set_nonblocking(true);
    let _ = stream.write_all(&bytes);
    let _ = stream.shutdown(std::net::Shutdown::Write);
}

/// Serves one listener event: accepts up to `BURST` connections, then re-arms the
/// listener (unless accepting is paused or the front is stopping). An error is a
/// listener that cannot be re-armed: the REST port would be dead.
pub fn burst(shared: &Shared) -> io::Result<()> {
    for _ in 0..BURST {
        match shared.listener.accept() {
            Ok((stream, peer)) => {
                shared.accept.succeeded();
                admit(shared, stream, peer);
            }
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
            Err(err) if out_of_resources(&err) => {
                let refused =
                    is_out_of_descriptors(&err) && shared.accept.refuse_with_spare(shared);
                shared.accept.failed(&err, !refused);
                if !refused {
                    return Ok(());
                }
            }
            // ECONNABORTED, EINTR, EPROTO, EPERM (a firewall): that connection only.
            Err(err) => log::debug!(error = err.to_string().as_str(); "REST accept skipped"),
        }
    }
    rearm_listener(shared)
}

fn rearm_listener(shared: &Shared) -> io::Result<()> {
    let rearmed = shared
        .epoll
        .rearm(shared.listener.as_raw_fd(), Interest::Read, epoll::LISTENER);
    // Stopping removed the listener from epoll: nothing to re-arm, nothing wrong.
    if shared.stopping.load(Ordering::SeqCst) {
        return Ok(());
    }
    rearmed
}

fn is_out_of_descriptors(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

fn out_of_resources(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// Parks a new connection in the table and epoll. Past the cap it gets 503 at once,
/// and a slot only while it drains; with no slot free at all it is closed after the
/// answer.
fn admit(shared: &Shared, stream: TcpStream, peer: SocketAddr) {
    if stream.set_nonblocking(true).is_err() {
        return;
    }
    // One write per response already; without this a reply could still wait out the
    // client's delayed ACK behind a previous one.
    let _ = stream.set_nodelay(true);
    let timeout = shared.settings.timeout;
    let counted = shared.table.counted() < shared.settings.max_connections;
    let (connection, interest, deadline) = if counted {
        let connection = Connection::new(stream, peer, timeout);
        let deadline = connection.first_deadline(Instant::now());
        (connection, Interest::Read, deadline)
    } else {
        log::debug!(peer = peer.to_string().as_str(); "REST connection cap reached; answered 503");
        let mut connection = Connection::refused(stream, peer, timeout);
        match connection.turn(shared.service.as_ref(), false) {
            Turn::Close => return,
            Turn::Park(interest, deadline) => (connection, interest, deadline),
        }
    };
    // No free slot: dropping closes it.
    let _ = shared
        .table
        .insert(connection, counted, deadline, |connection, token| {
            shared.epoll.add(connection.fd(), interest, token)
        });
}
