//! The epoll instance the poller waits on: the raw calls, each with its proof, and
//! nothing else (no policy).
//!
//! Registrations are one-shot (readable always, writable only while the connection
//! has a flush pending, since a writable socket would otherwise fire forever): each
//! event disarms the socket until whoever read it re-arms it. Each carries a token
//! (slot + generation), never the fd, whose number may be reused at once.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// The epoll descriptor, closed on drop.
pub struct Epoll {
    fd: OwnedFd,
}

/// Room for the events one wait returns.
pub struct Events {
    buf: Vec<libc::epoll_event>,
    len: usize,
}

/// One event: its token, and whether the socket is only readable (nothing else, no
/// hang-up, no error, not writable).
pub struct Event {
    pub token: u64,
    pub only_input: bool,
}

impl Events {
    pub fn with_capacity(capacity: usize) -> Events {
        Events {
            buf: vec![libc::epoll_event { events: 0, u64: 0 }; capacity],
            len: 0,
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = Event> + '_ {
        self.buf[..self.len].iter().map(|event| Event {
            token: event.u64,
            only_input: event.events == libc::EPOLLIN as u32,
        })
    }
}

impl Epoll {
    pub fn new() -> io::Result<Epoll> {
        // SAFETY: a plain syscall; the result is checked before use.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a descriptor just created, owned by nothing else.
        Ok(Epoll {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    pub fn add(&self, socket: BorrowedFd<'_>, token: u64) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, socket, token, false)
    }

    /// Arms the one-shot registration again.
    pub fn rearm(&self, socket: BorrowedFd<'_>, token: u64, want_write: bool) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_MOD, socket, token, want_write)
    }

    pub fn remove(&self, socket: BorrowedFd<'_>) {
        // SAFETY: both descriptors are open (borrowed for the call); DEL ignores the
        // event pointer.
        unsafe {
            libc::epoll_ctl(
                self.fd.as_raw_fd(),
                libc::EPOLL_CTL_DEL,
                socket.as_raw_fd(),
                std::ptr::null_mut(),
            )
        };
    }

    fn ctl(&self, op: i32, socket: BorrowedFd<'_>, token: u64, want_write: bool) -> io::Result<()> {
        let mut flags = libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLONESHOT;
        if want_write {
            flags |= libc::EPOLLOUT;
        }
        let mut event = libc::epoll_event {
            events: flags as u32,
            u64: token,
        };
        // SAFETY: both descriptors are open (borrowed for the call); `event` outlives it.
        let rc =
            unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), op, socket.as_raw_fd(), &mut event) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Waits up to `timeout_ms` for events; an interrupted wait returns none.
    pub fn wait(&self, events: &mut Events, timeout_ms: i32) -> io::Result<()> {
        events.len = 0;
        let room = events.buf.len() as i32;
        // SAFETY: `buf` has room for `room` events and outlives the call.
        let n = unsafe {
            libc::epoll_wait(
                self.fd.as_raw_fd(),
                events.buf.as_mut_ptr(),
                room,
                timeout_ms,
            )
        };
        if n < 0 {
            let err = io::Error::last_os_error();
            return match err.kind() {
                io::ErrorKind::Interrupted => Ok(()),
                _ => Err(err),
            };
        }
        events.len = n as usize;
        Ok(())
    }
}
