//! Shutdown as a closed channel: `Shutdown` holds a receiver nobody sends on;
//! dropping the `Trigger` disconnects it, which ends every `wait` at once and makes
//! `is_fired` true. (Parked WebSocket threads are woken through the poller and then see
//! `is_fired`.)

use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

/// Fires shutdown when dropped (or when `fire` is called).
pub struct Trigger {
    _sender: Sender<()>,
}

impl Trigger {
    pub fn fire(self) {}
}

/// A cheap-to-clone view of the shutdown state.
#[derive(Clone)]
pub struct Shutdown {
    receiver: Receiver<()>,
}

/// A new trigger and the shutdown it controls.
pub fn channel() -> (Trigger, Shutdown) {
    let (sender, receiver) = crossbeam_channel::bounded(0);
    (Trigger { _sender: sender }, Shutdown { receiver })
}

impl Shutdown {
    pub fn is_fired(&self) -> bool {
        matches!(
            self.receiver.try_recv(),
            Err(crossbeam_channel::TryRecvError::Disconnected)
        )
    }

    /// Sleeps for `duration` unless shutdown fires first; true when it fired.
    pub fn wait(&self, duration: Duration) -> bool {
        matches!(
            self.receiver.recv_timeout(duration),
            Err(RecvTimeoutError::Disconnected)
        )
    }
}
