//! The readiness thread: one epoll instance for every WebSocket, turning "socket
//! readable/writable" into a wake-up on the connection's link.
//!
//! Registrations are one-shot: each event disarms the socket until whoever reads it
//! has read everything and re-arms it, so one thread reads each socket at a time and
//! nothing is read twice or missed (EPOLL_CTL_MOD re-polls the socket). Events carry
//! slot + generation, never the fd: a closed fd number may be reused at once.
//!
//! Usually the reader is the connection thread (woken, it reads and calls `rearm`).
//! A pong that arrives while that thread sleeps with the socket offered (see `gate`)
//! is taken off the socket here, and the registration re-armed here, without waking
//! it: at 15,000 idle connections that is most of the wake-ups a heartbeat would cost.

use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use super::inbound;
use super::link::Link;

const MAX_EVENTS: usize = 256;
/// How long `epoll_wait` sleeps before looking at the stop flag.
const WAIT_MS: i32 = 250;
/// The readiness thread's name (in logs, and for `supervise`).
pub const THREAD_NAME: &str = "notifd-readiness";

/// Bytes looked at for pongs: a few pongs' worth; anything longer is the
/// connection thread's.
const PEEK_BYTES: usize = 64;

/// One watched socket. The heartbeat thread walks these too (`visit`).
struct Slot {
    generation: u32,
    link: Option<Arc<Link>>,
    /// When the heartbeat thread pings this connection next (`link::now_ms`).
    next_ping_ms: u64,
}

impl Slot {
    /// The one-shot registration's event: readable always, writable only while a
    /// flush is pending (a writable socket would otherwise fire forever).
    fn event(slot: u32, generation: u32, want_write: bool) -> libc::epoll_event {
        let mut flags = libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLONESHOT;
        if want_write {
            flags |= libc::EPOLLOUT;
        }
        libc::epoll_event {
            events: flags as u32,
            u64: (u64::from(slot) << 32) | u64::from(generation),
        }
    }
}

struct Inner {
    epoll: RawFd,
    // One lock per slot: the readiness thread, the heartbeat thread and a connection's
    // own thread touch a slot, each briefly, so events for different sockets never
    // contend.
    slots: Vec<Mutex<Slot>>,
    free: Mutex<Vec<u32>>,
    /// One past the highest slot ever used: the heartbeat walks no further.
    used: AtomicUsize,
}

impl Inner {
    /// Adds or re-arms `fd` in epoll for slot + generation. The caller guarantees
    /// `fd` is open.
    fn ctl(
        &self,
        fd: RawFd,
        op: libc::c_int,
        slot: u32,
        generation: u32,
        want_write: bool,
    ) -> io::Result<()> {
        let mut event = Slot::event(slot, generation, want_write);
        // SAFETY: `epoll` is ours and open; `fd` is open (see above).
        if unsafe { libc::epoll_ctl(self.epoll, op, fd, &mut event) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
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
                    next_ping_ms: 0,
                })
            })
            .collect();
        let free = (0..capacity as u32).rev().collect();
        Ok(Readiness {
            inner: Arc::new(Inner {
                epoll,
                slots,
                free: Mutex::new(free),
                used: AtomicUsize::new(0),
            }),
        })
    }

    /// Watches the socket of `link` (its fd set), which the heartbeat first pings at
    /// `first_ping_ms`. Fails when every slot is taken.
    pub fn register(&self, link: Arc<Link>, first_ping_ms: u64) -> io::Result<Registration> {
        let fd = link.fd();
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
            entry.next_ping_ms = first_ping_ms;
            entry.generation
        };
        self.inner
            .used
            .fetch_max(slot as usize + 1, Ordering::AcqRel);
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
        let stopping = stop.clone();
        crate::supervise::spawn_essential(
            THREAD_NAME,
            128 * 1024,
            move || stopping.load(Ordering::Acquire),
            move || this.run(&stop),
        )
    }

    fn run(&self, stop: &AtomicBool) {
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; MAX_EVENTS];
        while !stop.load(Ordering::Acquire) {
            crate::supervise::fault_point(THREAD_NAME);
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
                        let only_input = event.events == libc::EPOLLIN as u32;
                        if !(only_input && self.take_pongs(slot as u32, &entry, link)) {
                            link.io_ready();
                        }
                    }
                }
            }
        }
    }
}

impl Readiness {
    /// Takes pongs off an offered socket and re-arms it, so its thread sleeps on.
    /// False when the thread must look itself (anything else arrived, or the socket
    /// was not offered).
    fn take_pongs(&self, slot: u32, entry: &Slot, link: &Link) -> bool {
        let Some(_loan) = link.gate.borrow() else {
            return false;
        };
        let mut bytes = [0u8; PEEK_BYTES];
        let flags = libc::MSG_PEEK | libc::MSG_DONTWAIT;
        // SAFETY: `bytes` has room for PEEK_BYTES; the fd is open while lent (`gate`).
        let peeked = unsafe { libc::recv(link.fd(), bytes.as_mut_ptr().cast(), PEEK_BYTES, flags) };
        if peeked <= 0
            || peeked as usize == PEEK_BYTES
            || !inbound::whole_pongs(&bytes[..peeked as usize])
        {
            return false;
        }
        // SAFETY: as above; only this thread reads the socket while it is lent, so the
        // peeked bytes are all still there.
        let taken = unsafe {
            libc::recv(
                link.fd(),
                bytes.as_mut_ptr().cast(),
                peeked as usize,
                libc::MSG_DONTWAIT,
            )
        };
        if taken != peeked {
            return false;
        }
        link.heard();
        // The connection thread re-arms only after a wake-up, which this path does not
        // give; the socket is open while lent.
        self.inner
            .ctl(
                link.fd(),
                libc::EPOLL_CTL_MOD,
                slot,
                entry.generation,
                false,
            )
            .is_ok()
    }

    /// One past the highest slot ever used.
    pub fn slots_used(&self) -> usize {
        self.inner.used.load(Ordering::Acquire)
    }

    /// Walks `count` slots from `start` on (wrapping at the slots ever used), calling
    /// `visit` with each occupied one's link and next ping time, under the slot's
    /// lock; returns where the walk ended.
    pub fn visit(
        &self,
        start: usize,
        count: usize,
        mut visit: impl FnMut(&Link, &mut u64),
    ) -> usize {
        let used = self.inner.used.load(Ordering::Acquire);
        if used == 0 {
            return 0;
        }
        let mut at = start % used;
        for _ in 0..count.min(used) {
            let mut entry = self.inner.slots[at]
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let Slot {
                link, next_ping_ms, ..
            } = &mut *entry;
            if let Some(link) = link {
                visit(link, next_ping_ms);
            }
            drop(entry);
            at = (at + 1) % used;
        }
        at
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
    /// Arms the one-shot registration again (see `Slot::event`).
    pub fn rearm(&self, want_write: bool) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_MOD, want_write)
    }

    fn ctl(&self, op: libc::c_int, want_write: bool) -> io::Result<()> {
        // The socket is open while this registration lives.
        self.readiness
            .inner
            .ctl(self.fd, op, self.slot, self.generation, want_write)
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
