//! Threads for WebSocket handshakes and connections that cost two memory maps, not four.
//!
//! A std thread is four mappings: its stack and guard page, plus the signal
//! alternate stack std gives every thread it spawns (for its stack-overflow message)
//! and that stack's guard page. Measured with notifd's release binary: 4.01 maps per
//! connection, so `vm.max_map_count` (65,530 by default) capped a process near 16,000
//! connections whatever the descriptor limit said. Worse, std maps the alternate stack
//! inside the new thread, where a failure aborts the whole process ("failed to set up
//! alternative stack guard page").
//!
//! A thread started here with `pthread_create` keeps glibc's stack and guard page and
//! has no alternate stack: two maps, and every allocation happens inside
//! `pthread_create`, whose failure (EAGAIN, ENOMEM) comes back as an error that refuses
//! one connection. A stack overflow still hits the guard page and ends the process
//! (with SIGSEGV instead of std's message). `std::thread::current`, park/unpark and
//! thread-locals work on such threads as on any other.

use std::ffi::{c_void, CString};
use std::io;
use std::panic::{self, AssertUnwindSafe};

/// Memory maps a lean thread costs: its stack and the stack's guard page.
pub const MAPS_PER_THREAD: u64 = 2;

/// What the new thread receives through `pthread_create`'s argument.
struct Start<T> {
    name: &'static str,
    data: T,
    run: fn(T),
}

/// Starts `run(data)` on a detached thread named `name` with a `stack_size` stack. On
/// failure `data` comes back with the error, so the caller can still answer the
/// client with what it owns.
pub fn spawn<T: Send + 'static>(
    name: &'static str,
    stack_size: usize,
    data: T,
    run: fn(T),
) -> Result<(), (io::Error, T)> {
    if crate::supervise::take_fault(name) {
        return Err((io::Error::from_raw_os_error(libc::EAGAIN), data));
    }
    let raw = Box::into_raw(Box::new(Start { name, data, run }));
    // SAFETY: `raw` came from `Box::into_raw` just above. On success the new thread
    // owns it (`trampoline` turns it back into the box, once); on failure no thread
    // ran, so it is still ours to turn back here.
    match unsafe { create_detached(stack_size, trampoline::<T>, raw.cast()) } {
        Ok(()) => Ok(()),
        Err(err) => Err((err, unsafe { Box::from_raw(raw) }.data)),
    }
}

/// `pthread_create` with a stack size and the detached state.
///
/// # Safety
/// `start(arg)` must be sound to run once on the new thread.
unsafe fn create_detached(
    stack_size: usize,
    start: extern "C" fn(*mut c_void) -> *mut c_void,
    arg: *mut c_void,
) -> io::Result<()> {
    let check = |rc: libc::c_int| match rc {
        0 => Ok(()),
        rc => Err(io::Error::from_raw_os_error(rc)),
    };
    // SAFETY: `attr` is initialised before any other use and destroyed after; the
    // caller vouches for `start(arg)`.
    unsafe {
        let mut attr: libc::pthread_attr_t = std::mem::zeroed();
        check(libc::pthread_attr_init(&mut attr))?;
        let stack = stack_size.max(libc::PTHREAD_STACK_MIN);
        let mut rc = libc::pthread_attr_setstacksize(&mut attr, stack);
        if rc == 0 {
            rc = libc::pthread_attr_setdetachstate(&mut attr, libc::PTHREAD_CREATE_DETACHED);
        }
        if rc == 0 {
            let mut thread: libc::pthread_t = std::mem::zeroed();
            rc = libc::pthread_create(&mut thread, &attr, start, arg);
        }
        libc::pthread_attr_destroy(&mut attr);
        check(rc)
    }
}

extern "C" fn trampoline<T: Send>(raw: *mut c_void) -> *mut c_void {
    // SAFETY: `raw` is the `Box<Start<T>>` pointer `spawn` made, given to this thread
    // alone.
    let Start { name, data, run } = *unsafe { Box::from_raw(raw.cast::<Start<T>>()) };
    name_thread(name);
    // A panic must not unwind into C. The connection's guards have run by then
    // (unwinding drops them), so it is closed and unregistered.
    let _ = panic::catch_unwind(AssertUnwindSafe(move || run(data)));
    std::ptr::null_mut()
}

/// Gives the thread its name (in `top -H`, `/proc/PID/task/*/comm`).
fn name_thread(name: &str) {
    if let Ok(name) = CString::new(name) {
        // SAFETY: `name` is a NUL-terminated string that outlives the call; the kernel
        // copies at most 16 bytes of it.
        unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr() as libc::c_ulong, 0, 0, 0) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lean_thread_runs_its_body_under_its_name_and_parks_and_wakes() {
        let limit = std::time::Duration::from_secs(10);
        let (events, heard) = std::sync::mpsc::channel();
        type Events = std::sync::mpsc::Sender<Result<(String, std::thread::Thread), &'static str>>;
        fn body(events: Events) {
            let comm = std::fs::read_to_string("/proc/thread-self/comm").unwrap_or_default();
            let _ = events.send(Ok((comm, std::thread::current())));
            std::thread::park_timeout(std::time::Duration::from_secs(10));
            let _ = events.send(Err("woken"));
        }
        spawn("notifd-lean-test", 64 * 1024, events, body)
            .map_err(|(err, _)| err)
            .expect("spawned");
        let (comm, thread) = heard.recv_timeout(limit).expect("ran").expect("first");
        assert_eq!(comm.trim(), "notifd-lean-tes", "the kernel keeps 15 bytes");
        thread.unpark();
        assert_eq!(
            heard.recv_timeout(limit).expect("woken").err(),
            Some("woken")
        );
    }
}
