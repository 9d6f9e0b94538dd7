//! The refuser: one thread, started with the listener, that answers the connections
//! no handshake thread could be started for (the kernel refused a thread: EAGAIN,
//! ENOMEM). It runs their upgrade under a short deadline and closes them with 1013,
//! so that a client at the process's thread limit learns why (contract §7), as one
//! past `NOTIFD_MAX_CONNECTIONS` does.
//!
//! Bounded: a queue of `QUEUE` connections, each taking at most `UPGRADE_LIMIT` plus
//! the close handshake's wait; when the queue is full a connection is dropped.

use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};

use super::close::Close;
use super::handshake;
use super::shared::Counted;

/// Connections waiting for their 1013.
const QUEUE: usize = 64;
/// A refused client must finish its upgrade within this time.
const UPGRADE_LIMIT: Duration = Duration::from_secs(2);
/// How often the thread looks at the stop flag while nothing waits.
const STOP_CHECK: Duration = Duration::from_millis(250);

/// Where the accept loop sends connections it cannot start a thread for.
pub struct Refuser {
    queue: Sender<(TcpStream, Counted)>,
}

impl Refuser {
    /// Starts the refuser thread; it ends once `stopping` is set.
    pub fn spawn(stopping: Arc<AtomicBool>) -> std::io::Result<(Refuser, JoinHandle<()>)> {
        let (queue, waiting) = crossbeam_channel::bounded(QUEUE);
        let stopped = stopping.clone();
        let thread = crate::supervise::spawn_essential(
            "notifd-ws-refuse",
            256 * 1024,
            move || stopped.load(Ordering::Acquire),
            move || run(&waiting, &stopping),
        )?;
        Ok((Refuser { queue }, thread))
    }

    /// Queues `stream` for a 1013; false when the queue is full (it is dropped).
    pub fn refuse(&self, stream: TcpStream, slot: Counted) -> bool {
        match self.queue.try_send((stream, slot)) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => false,
        }
    }
}

fn run(waiting: &Receiver<(TcpStream, Counted)>, stopping: &AtomicBool) {
    loop {
        let next = waiting.recv_timeout(STOP_CHECK);
        // At a stop, whatever still waits is dropped: shutdown stays bounded.
        if stopping.load(Ordering::Acquire) {
            return;
        }
        match next {
            // The slot is freed once the refusal is over.
            Ok((stream, _slot)) => {
                // No origin check: whoever it is, the answer is 1013.
                if let Ok((ws, _)) = handshake::upgrade(stream, UPGRADE_LIMIT, &[]) {
                    handshake::close_blocking(ws, Close::AtCapacity, Close::AtCapacity.reason());
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}
