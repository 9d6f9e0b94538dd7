//! The REST front's epoll instance and its wake-up eventfd: the only raw descriptor
//! calls of the front.
//!
//! Every registration is one-shot: an event hands its socket to exactly one worker,
//! and nothing fires again until that worker re-arms it. The eventfd is level
//! triggered and never read, so once written every `epoll_wait` returns it: that is
//! how shutdown reaches every worker.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// Token of the listening socket's registration.
pub const LISTENER: u64 = u64::MAX;
/// Token of the wake-up eventfd.
pub const WAKER: u64 = u64::MAX - 1;

/// What a registration waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interest {
    /// Bytes to read (or the peer closing).
    Read,
    /// Room to write the rest of a response.
    Write,
    /// Fires at once on a writable socket: a worker hands a connection that still has
    /// buffered requests to the next free worker instead of serving it for ever.
    Yield,
}

impl Interest {
    fn mask(self) -> u32 {
        let oneshot = libc::EPOLLONESHOT as u32;
        oneshot
            | match self {
                Interest::Read => (libc::EPOLLIN | libc::EPOLLRDHUP) as u32,
                // No RDHUP here: a client that half-closed and stopped reading keeps
                // that condition set, and every re-arm would fire at once (a spinning
                // worker). A full close still reports EPOLLHUP/EPOLLERR.
                Interest::Write => libc::EPOLLOUT as u32,
                Interest::Yield => (libc::EPOLLIN | libc::EPOLLOUT) as u32,
            }
    }
}

pub struct Epoll {
    epoll: OwnedFd,
    waker: OwnedFd,
}

impl Epoll {
    pub fn new() -> io::Result<Epoll> {
        // SAFETY: plain syscalls; each returned descriptor is checked, then owned.
        let epoll = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if epoll < 0 {
            return Err(io::Error::last_os_error());
        }
        let epoll = unsafe { OwnedFd::from_raw_fd(epoll) };
        let waker = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if waker < 0 {
            return Err(io::Error::last_os_error());
        }
        let waker = unsafe { OwnedFd::from_raw_fd(waker) };
        let this = Epoll { epoll, waker };
        this.ctl(
            libc::EPOLL_CTL_ADD,
            this.waker.as_raw_fd(),
            libc::EPOLLIN as u32,
            WAKER,
        )?;
        Ok(this)
    }

    /// Registers a new socket.
    pub fn add(&self, fd: RawFd, interest: Interest, token: u64) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, interest.mask(), token)
    }

    /// Re-arms a registered socket. MOD re-polls the socket, so nothing that arrived
    /// while it was disarmed is lost.
    pub fn rearm(&self, fd: RawFd, interest: Interest, token: u64) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_MOD, fd, interest.mask(), token)
    }

    /// Removes a socket (closing it would too, unless the descriptor is shared).
    pub fn remove(&self, fd: RawFd) {
        // An error here means the socket was not registered: nothing to undo.
        let _ = self.ctl(libc::EPOLL_CTL_DEL, fd, 0, 0);
    }

    /// Makes every present and future `wait` return `WAKER`.
    pub fn wake_all(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to our own eventfd. A full counter
        // (EAGAIN) still leaves it readable, which is all that matters.
        unsafe {
            libc::write(
                self.waker.as_raw_fd(),
                (&one as *const u64).cast(),
                std::mem::size_of::<u64>(),
            )
        };
    }

    /// Waits for one event (one, so that a worker never sits on events it cannot serve
    /// while its handler runs); `None` on timeout or signal.
    pub fn wait_one(&self, timeout: Option<Duration>) -> io::Result<Option<u64>> {
        let mut event = libc::epoll_event { events: 0, u64: 0 };
        let timeout_ms = timeout.map_or(-1, |t| t.as_millis().min(i32::MAX as u128) as i32);
        // SAFETY: `event` is a live buffer for exactly one event.
        let n = unsafe { libc::epoll_wait(self.epoll.as_raw_fd(), &mut event, 1, timeout_ms) };
        if n < 0 {
            let err = io::Error::last_os_error();
            return match err.kind() {
                io::ErrorKind::Interrupted => Ok(None),
                _ => Err(err),
            };
        }
        Ok((n == 1).then_some(event.u64))
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, events: u32, token: u64) -> io::Result<()> {
        let mut event = libc::epoll_event { events, u64: token };
        // SAFETY: our epoll descriptor is open for as long as `self`; the caller owns
        // `fd` and keeps it open across the call.
        if unsafe { libc::epoll_ctl(self.epoll.as_raw_fd(), op, fd, &mut event) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}
