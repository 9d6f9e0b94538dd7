//! The readiness thread: one epoll instance for every WebSocket, turning "socket
//! readable/writable" into a wake-up on the connection's link.
//!
//! Registrations are one-shot: each event disarms the socket until its connection
//! thread has read everything and calls `rearm`, so one thread owns each socket and
//! nothing is read twice or missed (EPOLL_CTL_MOD re-polls the socket). Events carry
//! slot + generation, never the fd: a closed fd number may be reused at once.

use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::hub::Link;

const MAX_EVENTS: usize = 256;
/// How long `epoll_wait` sleeps before looking at the stop flag.
const WAIT_MS: i32 = 250;

struct Slot {
    generation: u32,
    link: Option<Arc<Link>>,
}

struct Inner {
    epoll: RawFd,
    // One lock per slot: the readiness thread and a connection's own thread are the
    // only ones that touch a slot, so events for different sockets never contend.
    slots: Vec<Mutex<Slot>>,
    free: Mutex<Vec<u32>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // SAFETY: `epoll` is a descriptor this struct owns.
        unsafe { libc::close(self.epoll) };
    }
}

/// Handle on the epoll instance; cheap to clone.
#[derive(Clone)]
pub struct Readiness {
    inner: Arc<Inner>,
}

impl Readiness {
    /// An epoll instance with room for `capacity` sockets.
    pub fn new(capacity: usize) -> io::Result<Readiness> {
        // SAFETY: plain syscall; the result is checked.
        let epoll = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if epoll < 0 {
            return Err(io::Error::last_os_error());
        }
        let slots = (0..capacity)
            .map(|_| {
                Mutex::new(Slot {
                    generation: 0,
                    link: None,
                })
            })
            .collect();
        let free = (0..capacity as u32).rev().collect();
        Ok(Readiness {
            inner: Arc::new(Inner {
                epoll,
                slots,
                free: Mutex::new(free),
            }),
        })
    }

    /// Watches `fd` for its connection. Fails when every slot is taken.
    pub fn register(&self, fd: RawFd, link: Arc<Link>) -> io::Result<Registration> {
        let slot = self
            .inner
            .free
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
            .ok_or_else(|| io::Error::other("readiness: no free slot"))?;
        let generation = {
            let mut entry = self.inner.slots[slot as usize]
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            entry.generation = entry.generation.wrapping_add(1);
            entry.link = Some(link);
            entry.generation
        };
        // Filled in before the socket joins epoll, so the first event finds its link.
        let registration = Registration {
            readiness: self.clone(),
            fd,
            slot,
            generation,
        };
        registration.ctl(libc::EPOLL_CTL_ADD, false)?;
        Ok(registration)
    }

    /// Runs the event loop on a new thread until `stop` is set. Not at shutdown: the
    /// connections still need their events then, to read the clients' close replies.
    pub fn spawn(&self, stop: Arc<AtomicBool>) -> io::Result<JoinHandle<()>> {
        let this = self.clone();
        std::thread::Builder::new()
            .name("notifd-readiness".into())
            .stack_size(128 * 1024)
            .spawn(move || this.run(&stop))
    }

    fn run(&self, stop: &AtomicBool) {
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; MAX_EVENTS];
        while !stop.load(Ordering::Acquire) {
            // SAFETY: `events` has room for MAX_EVENTS entries.
            let n = unsafe {
                libc::epoll_wait(
                    self.inner.epoll,
                    events.as_mut_ptr(),
                    MAX_EVENTS as i32,
                    WAIT_MS,
                )
            };
            if n < 0 {
                let err = io::Error::last_os_error();
                if err.kind() != io::ErrorKind::Interrupted {
                    log::error!(error = err.to_string().as_str(); "epoll_wait failed");
                }
                continue;
            }
            for event in &events[..n as usize] {
                let data = event.u64;
                let (slot, generation) = ((data >> 32) as usize, data as u32);
                let Some(entry) = self.inner.slots.get(slot) else {
                    continue;
                };
                let entry = entry.lock().unwrap_or_else(|e| e.into_inner());
                if entry.generation == generation {
                    if let Some(link) = &entry.link {
                        link.io_ready();
                    }
                }
            }
        }
    }
}

/// A socket in epoll. Dropping it removes the socket from epoll and frees the slot;
/// drop it before closing the socket.
pub struct Registration {
    readiness: Readiness,
    fd: RawFd,
    slot: u32,
    generation: u32,
}

impl Registration {
    /// Arms the one-shot registration again: readable always, writable only while a
    /// flush is pending (a writable socket would otherwise fire forever).
    pub fn rearm(&self, want_write: bool) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_MOD, want_write)
    }

    fn ctl(&self, op: libc::c_int, want_write: bool) -> io::Result<()> {
        let mut flags = libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLONESHOT;
        if want_write {
            flags |= libc::EPOLLOUT;
        }
        let mut event = libc::epoll_event {
            events: flags as u32,
            u64: (u64::from(self.slot) << 32) | u64::from(self.generation),
        };
        // SAFETY: both descriptors are open while this registration lives.
        if unsafe { libc::epoll_ctl(self.readiness.inner.epoll, op, self.fd, &mut event) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let inner = &self.readiness.inner;
        // SAFETY: the fd is still open (the owner drops this before closing it).
        unsafe {
            libc::epoll_ctl(
                inner.epoll,
                libc::EPOLL_CTL_DEL,
                self.fd,
                std::ptr::null_mut(),
            )
        };
        inner.slots[self.slot as usize]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .link = None;
        inner
            .free
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(self.slot);
    }
}
