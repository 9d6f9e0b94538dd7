//! Essential threads: the parts notifd cannot serve without (the Redis subscriber, the
//! committers, the WebSocket listener and poller threads; the REST
//! front's). Contract §7: if one of them stops, the process exits non-zero so that
//! systemd restarts it, rather than running half-alive (a lost subscriber ends all
//! live delivery while `/healthz` still says 200).
//!
//! `spawn_essential` runs a thread's body under `catch_unwind`. A panic, or a return
//! while the thread's owner is not stopping it, logs one error line naming the thread
//! and the cause, marks the part down (`down_parts`, for `/healthz`), waits a short
//! grace (the line reaches the journal, a health probe can see 503) and exits with
//! `EXIT_FAILED`. Stopping is not a failure: each thread says, by its `stopping`
//! check, when a return is expected.

use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::Duration;

/// The exit status after an essential thread stopped (EX_SOFTWARE, sysexits.h).
pub const EXIT_FAILED: i32 = 70;
/// Between the failure and the exit: long enough for the log line and a health probe,
/// short enough that clients reconnect to a fresh process soon.
const EXIT_GRACE: Duration = Duration::from_millis(500);

/// Essential parts that stopped, by thread name.
static DOWN: Mutex<Vec<String>> = Mutex::new(Vec::new());
/// Set by the first failure: only one thread calls `exit`.
static EXITING: AtomicBool = AtomicBool::new(false);

/// Starts `body` on a thread named `name` that the process cannot run without.
///
/// `stopping` is asked when `body` returns: true means the return is part of an
/// orderly stop (shutdown fired, the owner set its stop flag, the thread's queue
/// closed); false makes the return a failure, as a panic always is.
pub fn spawn_essential(
    name: impl Into<String>,
    stack_size: usize,
    stopping: impl Fn() -> bool + Send + 'static,
    body: impl FnOnce() + Send + 'static,
) -> std::io::Result<JoinHandle<()>> {
    let name = name.into();
    std::thread::Builder::new()
        .name(name.clone())
        .stack_size(stack_size)
        .spawn(move || {
            // Unwind safety does not matter: after a panic nothing here uses the
            // body's state again; the process exits.
            let cause = match panic::catch_unwind(AssertUnwindSafe(body)) {
                Ok(()) if stopping() => return,
                Ok(()) => "returned while notifd was not stopping".to_string(),
                Err(payload) => format!("panicked: {}", panic_message(payload.as_ref())),
            };
            part_failed(name, &cause);
        })
}

/// The essential parts that stopped (empty while everything runs). `/healthz`
/// answers 503 naming them during the grace before the exit.
pub fn down_parts() -> Vec<String> {
    DOWN.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

fn part_failed(name: String, cause: &str) {
    log::error!(
        thread = name.as_str(),
        cause = cause,
        exit_status = EXIT_FAILED;
        "essential thread stopped; exiting so that the service manager restarts notifd"
    );
    DOWN.lock().unwrap_or_else(|e| e.into_inner()).push(name);
    if EXITING.swap(true, Ordering::AcqRel) {
        // Another failure is already on its way out.
        return;
    }
    std::thread::sleep(EXIT_GRACE);
    std::process::exit(EXIT_FAILED);
}

/// The text a panic was raised with (`panic!("…")` gives a `&str` or a `String`).
fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    if let Some(text) = payload.downcast_ref::<&str>() {
        text
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text
    } else {
        "(not a text message)"
    }
}

/// Faults a test armed (`inject_fault`), by thread name.
static FAULTS: Mutex<Vec<String>> = Mutex::new(Vec::new());
/// Whether `FAULTS` holds anything: keeps `take_fault` to one load in production.
static FAULTS_ARMED: AtomicBool = AtomicBool::new(false);

/// Test hook: the next fault point of the thread `name` fails. An essential thread's
/// loop panics at its next turn; the next start of a WebSocket thread fails as if
/// the kernel said EAGAIN. Not a setting: only code linked into the process (a test)
/// can call it.
#[doc(hidden)]
pub fn inject_fault(name: &str) {
    FAULTS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(name.to_string());
    FAULTS_ARMED.store(true, Ordering::Release);
}

/// Whether a test armed a fault for `name` (and disarms it).
pub(crate) fn take_fault(name: &str) -> bool {
    if !FAULTS_ARMED.load(Ordering::Acquire) {
        return false;
    }
    let mut faults = FAULTS.lock().unwrap_or_else(|e| e.into_inner());
    let Some(at) = faults.iter().position(|armed| armed == name) else {
        return false;
    };
    faults.remove(at);
    true
}

/// Called by essential loops once a turn: panics if a test armed a fault for `name`.
pub(crate) fn fault_point(name: &str) {
    if take_fault(name) {
        panic!("fault injected by a test");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stop_is_not_a_failure() {
        let thread = spawn_essential("unit-stops", 64 * 1024, || true, || ()).expect("spawn");
        thread.join().expect("joins");
        assert!(!down_parts().iter().any(|part| part == "unit-stops"));
    }

    #[test]
    fn panic_messages_are_read_from_both_payload_kinds() {
        assert_eq!(panic_message(&"static text"), "static text");
        assert_eq!(panic_message(&String::from("formatted 7")), "formatted 7");
        assert_eq!(panic_message(&7u8), "(not a text message)");
    }
}
