//! Live delivery without a wake-up: the subscriber thread writes a notification's
//! frame straight to the socket of a connection whose thread sleeps with the socket
//! lent (`gate`), nothing queued before it, and no history or catch-up under way.
//!
//! `send` is also how the heartbeat writes its pings. Comes after the hub (which picks
//! the connections) and stands in for the connection queue; anything it cannot write whole right now goes the ordinary way:
//! into the queue, with a wake-up. A frame written only in part leaves its rest with
//! the link, and the socket goes back to its thread, which sends the rest before
//! anything else.

use std::io;

use super::gate::Loan;
use super::link::Link;
use crate::hub::Frame;
use crate::metrics;

/// FIN + text, the first byte of a whole text frame.
const TEXT_START: u8 = 0x81;

/// Writes `frame` to the connection now if it may be; false means queue it (where a
/// frame for a dead socket goes nowhere, as it would have).
pub fn write(link: &Link, frame: &Frame) -> bool {
    let Some(loan) = link.gate.borrow() else {
        return false;
    };
    if !link.takes_direct_frames() {
        return false;
    }
    let mut seen = link.seen();
    if seen.contains(&frame.id) {
        // Already sent by a replay or catch-up: nothing to do, as in the queue's path.
        return true;
    }
    let payload = frame.json.as_bytes();
    let mut header = [0u8; 10];
    let header = encode_header(&mut header, payload.len());
    if !send(link, loan, header, payload) {
        return false;
    }
    seen.insert(frame.id);
    drop(seen);
    metrics::delivered(&frame.id, true);
    true
}

/// Sends one frame (`header` + `payload`) on a borrowed socket; false when none of
/// it went out, so the caller leaves it to the connection thread. A frame sent in
/// part still counts as sent: its rest is left for the thread to send first.
pub fn send(link: &Link, loan: Loan<'_>, header: &[u8], payload: &[u8]) -> bool {
    match send_all(link.fd(), header, payload) {
        Ok(sent) if sent == header.len() + payload.len() => true,
        // Nothing went out (the socket is full).
        Ok(0) => false,
        Ok(sent) => {
            keep_rest(link, loan, header, payload, sent);
            true
        }
        // A dead socket: the thread finds out when it reads.
        Err(_) => {
            link.io_ready();
            false
        }
    }
}

/// The header of an unmasked, unfragmented text frame (RFC 6455 §5.2) in `buf`.
fn encode_header(buf: &mut [u8; 10], len: usize) -> &[u8] {
    buf[0] = TEXT_START;
    match len {
        0..=125 => {
            buf[1] = len as u8;
            &buf[..2]
        }
        126..=0xFFFF => {
            buf[1] = 126;
            buf[2..4].copy_from_slice(&(len as u16).to_be_bytes());
            &buf[..4]
        }
        _ => {
            buf[1] = 127;
            buf[2..10].copy_from_slice(&(len as u64).to_be_bytes());
            &buf[..10]
        }
    }
}

/// One non-blocking `sendmsg` of header and payload; how much went out.
fn send_all(fd: i32, header: &[u8], payload: &[u8]) -> io::Result<usize> {
    let mut parts = [
        libc::iovec {
            iov_base: header.as_ptr() as *mut libc::c_void,
            iov_len: header.len(),
        },
        libc::iovec {
            iov_base: payload.as_ptr() as *mut libc::c_void,
            iov_len: payload.len(),
        },
    ];
    // SAFETY: a zeroed msghdr is valid; it points at `parts`, which outlives the call.
    let mut message: libc::msghdr = unsafe { std::mem::zeroed() };
    message.msg_iov = parts.as_mut_ptr();
    message.msg_iovlen = parts.len() as _;
    // SAFETY: the fd is open while the socket is lent (`gate`).
    let sent = unsafe { libc::sendmsg(fd, &message, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) };
    if sent >= 0 {
        return Ok(sent as usize);
    }
    let err = io::Error::last_os_error();
    match err.kind() {
        io::ErrorKind::WouldBlock => Ok(0),
        _ => Err(err),
    }
}

/// Part of a frame went out: its rest must be next on the wire. The link keeps it,
/// the socket stays with its thread (no helper may write in between), and the thread
/// is woken to send it.
fn keep_rest(link: &Link, loan: Loan<'_>, header: &[u8], payload: &[u8], sent: usize) {
    let rest: Vec<u8> = header.iter().chain(payload).skip(sent).copied().collect();
    link.keep_unsent(rest);
    loan.return_to_owner();
    link.io_ready();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_use_the_shortest_length_form() {
        let mut buf = [0u8; 10];
        assert_eq!(encode_header(&mut buf, 5), [0x81, 5]);
        assert_eq!(encode_header(&mut buf, 125), [0x81, 125]);
        assert_eq!(encode_header(&mut buf, 126), [0x81, 126, 0, 126]);
        assert_eq!(encode_header(&mut buf, 65_535), [0x81, 126, 0xFF, 0xFF]);
        assert_eq!(
            encode_header(&mut buf, 65_536),
            [0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0]
        );
    }
}
