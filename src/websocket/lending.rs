//! Lending a parked connection's socket: who may touch it, and what a borrower does
//! with it (write one whole frame, take pongs off it).
//!
//! Waking a thread costs more than the work itself on a small virtual machine (a
//! wake-up measured ~50 µs of CPU here), and most of a connection's work is small: a
//! ping out, a pong in, a notification out. So while the connection thread sleeps
//! with nothing half-done, it offers its socket: the poller sends its pings and takes
//! its pongs, and the subscriber (through the hub and the connection's `handle`)
//! writes its notifications, so 15,000 idle connections wake no connection thread at
//! all and a delivery costs no wake-up.
//!
//! The states: `OWNED` (the thread runs, or sleeps with work half-done), `OFFERED`
//! (heartbeat only: history is still being sent, so notifications must queue behind
//! it), `OFFERED_FRAMES` (notifications too), `LENT` (a borrower holds it) and
//! `RETIRED` (the connection ended; nobody borrows again). The thread takes the socket
//! back first thing after waking, waiting out a loan in progress (a non-blocking
//! syscall or two). The socket is shared (`Arc`), so it stays open as long as anyone
//! could use it; the states decide who may.

use std::io::{self, Cursor, IoSlice, Read};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tungstenite::protocol::frame::coding::{Control, OpCode};
use tungstenite::protocol::frame::FrameHeader;

const OWNED: u8 = 0;
const OFFERED: u8 = 1;
const OFFERED_FRAMES: u8 = 2;
const LENT: u8 = 3;
const RETIRED: u8 = 4;

/// Yields before `reclaim` starts sleeping between looks.
const RECLAIM_YIELDS: u32 = 64;
/// Bytes looked at for pongs: a few pongs' worth; anything longer is the thread's.
const PEEK_BYTES: usize = 64;
/// Longest server frame header: no mask, a 64-bit length.
const MAX_HEADER: usize = 10;
/// Longest payload of a control frame (RFC 6455 §5.5).
const MAX_CONTROL_PAYLOAD: u64 = 125;

/// What a borrower wants to do, which decides what it may borrow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    /// A ping out or pongs in: allowed whenever the socket is offered.
    Heartbeat,
    /// A notification out: only when no history is being sent.
    Frame,
}

/// What came of writing a frame on a borrowed socket.
#[derive(Debug, PartialEq, Eq)]
pub enum Sent {
    Whole,
    /// Nothing went out (the socket is full): the thread must send it instead.
    Nothing,
    /// Part went out; the rest waits in `Lending` and the socket went back to its
    /// thread, which must be woken to send the rest before anything else.
    Part,
    /// The socket is dead: the thread finds out when it reads.
    Failed,
}

/// One connection's socket and who may use it now.
#[derive(Debug)]
pub struct Lending {
    state: AtomicU8,
    socket: Arc<TcpStream>,
    /// The rest of a frame a borrower wrote only in part; its thread sends it first.
    unsent: Mutex<Vec<u8>>,
}

impl Lending {
    pub fn new(socket: Arc<TcpStream>) -> Lending {
        Lending {
            state: AtomicU8::new(OWNED),
            socket,
            unsent: Mutex::new(Vec::new()),
        }
    }

    pub fn socket(&self) -> &TcpStream {
        &self.socket
    }

    /// Offers the socket to borrowers (the thread, about to park with nothing
    /// half-done); `frames`: notifications may be written too.
    pub fn offer(&self, frames: bool) {
        let offered = if frames { OFFERED_FRAMES } else { OFFERED };
        let _ = self
            .state
            .compare_exchange(OWNED, offered, Ordering::AcqRel, Ordering::Acquire);
    }

    /// Takes the socket back (the thread, after waking), waiting for a borrower to
    /// finish: yielding at first (a loan is short), then sleeping briefly, in case the
    /// borrower was descheduled mid-loan.
    pub fn reclaim(&self) {
        for attempt in 0u32.. {
            let state = self.state.load(Ordering::Acquire);
            let taken = match state {
                OWNED | RETIRED => return,
                OFFERED | OFFERED_FRAMES => self
                    .state
                    .compare_exchange(state, OWNED, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok(),
                _ => false,
            };
            if taken {
                return;
            }
            if attempt < RECLAIM_YIELDS {
                std::thread::yield_now();
            } else {
                std::thread::sleep(Duration::from_micros(100));
            }
        }
    }

    /// Ends lending for good (the connection is ending).
    pub fn retire(&self) {
        self.reclaim();
        self.state.store(RETIRED, Ordering::Release);
    }

    /// Borrows the socket for `purpose` if its thread offered it for that; the loan
    /// ends when the `Loan` drops.
    pub fn borrow(&self, purpose: Use) -> Option<Loan<'_>> {
        let offered = self.state.load(Ordering::Acquire);
        let allowed = match purpose {
            Use::Heartbeat => offered == OFFERED || offered == OFFERED_FRAMES,
            Use::Frame => offered == OFFERED_FRAMES,
        };
        (allowed
            && self
                .state
                .compare_exchange(offered, LENT, Ordering::AcqRel, Ordering::Acquire)
                .is_ok())
        .then_some(Loan {
            lending: self,
            offered,
        })
    }

    /// The rest of a frame a borrower could only half write, for the thread to send
    /// before anything else.
    pub fn take_unsent(&self) -> Option<Vec<u8>> {
        let mut unsent = self.unsent.lock().unwrap_or_else(|e| e.into_inner());
        (!unsent.is_empty()).then(|| std::mem::take(&mut *unsent))
    }
}

/// A borrower's use of a socket; gives it back (offered as before) on drop.
pub struct Loan<'a> {
    lending: &'a Lending,
    offered: u8,
}

impl Loan<'_> {
    /// Writes one unfragmented, unmasked frame in one non-blocking send.
    pub fn send(self, opcode: OpCode, payload: &[u8]) -> Sent {
        let header = FrameHeader {
            opcode,
            ..FrameHeader::default()
        };
        let mut head = [0u8; MAX_HEADER];
        let head_len = header.len(payload.len() as u64);
        if header
            .format(payload.len() as u64, &mut &mut head[..])
            .is_err()
        {
            return Sent::Nothing;
        }
        let head = &head[..head_len];
        let parts = [IoSlice::new(head), IoSlice::new(payload)];
        let flags = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;
        match socket2::SockRef::from(self.lending.socket()).send_vectored_with_flags(&parts, flags)
        {
            Ok(sent) if sent == head.len() + payload.len() => Sent::Whole,
            Ok(0) => Sent::Nothing,
            Ok(sent) => {
                self.keep_rest(head, payload, sent);
                Sent::Part
            }
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => Sent::Nothing,
            Err(_) => Sent::Failed,
        }
    }

    /// Part of a frame went out: its rest must be next on the wire, so the socket goes
    /// back to its thread (no borrower may write in between) with the rest.
    fn keep_rest(self, head: &[u8], payload: &[u8], sent: usize) {
        let rest = head.iter().chain(payload).skip(sent).copied();
        self.lending
            .unsent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(rest);
        self.lending.state.store(OWNED, Ordering::Release);
        std::mem::forget(self);
    }

    /// Takes the client's pongs off the socket when they are all it sent; false
    /// leaves everything for the thread. Only between frames: the socket is lent only
    /// when the thread's reader stands at a frame start.
    pub fn take_pongs(&self) -> bool {
        let socket = self.lending.socket();
        let mut bytes = [0u8; PEEK_BYTES];
        let peeked = match socket.peek(&mut bytes) {
            Ok(n) if n > 0 && n < PEEK_BYTES => n,
            _ => return false,
        };
        if !whole_pongs(&bytes[..peeked]) {
            return false;
        }
        // Only this borrower reads the socket now, so the peeked bytes are all there.
        matches!((&mut &*socket).read(&mut bytes[..peeked]), Ok(n) if n == peeked)
    }
}

impl Drop for Loan<'_> {
    fn drop(&mut self) {
        self.lending.state.store(self.offered, Ordering::Release);
    }
}

/// True when `bytes` are one or more whole client pongs (final, masked, no reserved
/// bits, at most 125 bytes) and nothing else.
fn whole_pongs(bytes: &[u8]) -> bool {
    let mut cursor = Cursor::new(bytes);
    while (cursor.position() as usize) < bytes.len() {
        let Ok(Some((header, length))) = FrameHeader::parse(&mut cursor) else {
            return false;
        };
        let pong = header.is_final
            && !(header.rsv1 || header.rsv2 || header.rsv3)
            && header.opcode == OpCode::Control(Control::Pong)
            && header.mask.is_some()
            && length <= MAX_CONTROL_PAYLOAD;
        let end = cursor.position() + length;
        if !pong || end > bytes.len() as u64 {
            return false;
        }
        cursor.set_position(end);
    }
    !bytes.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::websocket::stream::client_frame as frame;
    use std::net::TcpListener;

    #[test]
    fn only_whole_pongs_are_pongs() {
        let pong = frame(0x8A, 0);
        let pong_with_payload = frame(0x8A, 8);
        assert!(whole_pongs(&pong));
        assert!(whole_pongs(&[pong.clone(), pong_with_payload].concat()));
        assert!(!whole_pongs(&[]));
        assert!(!whole_pongs(&pong[..5]), "a partial pong");
        assert!(
            !whole_pongs(&[pong.clone(), frame(0x81, 4)].concat()),
            "pong + text"
        );
        assert!(!whole_pongs(&frame(0x89, 0)), "a ping needs an answer");
        assert!(!whole_pongs(&frame(0x0A, 0)), "a pong without FIN");
        let mut unmasked = pong.clone();
        unmasked[1] &= 0x7F;
        assert!(!whole_pongs(&unmasked), "an unmasked pong");
        // Malformed pongs go to tungstenite, which fails the connection with 1002.
        assert!(!whole_pongs(&frame(0xCA, 0)), "a pong with RSV1 set");
        assert!(!whole_pongs(&frame(0x8A, 126)), "a pong over 125 bytes");
    }

    fn pair() -> (Arc<TcpStream>, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let client = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (server, _) = listener.accept().expect("accept");
        (Arc::new(server), client)
    }

    #[test]
    fn only_an_offered_socket_is_lent_and_reclaim_waits_for_the_loan() {
        let lending = Lending::new(pair().0);
        assert!(
            lending.borrow(Use::Heartbeat).is_none(),
            "owned by its thread"
        );
        lending.offer(false);
        assert!(lending.borrow(Use::Frame).is_none(), "history first");
        let loan = lending.borrow(Use::Heartbeat).expect("offered");
        assert!(
            lending.borrow(Use::Heartbeat).is_none(),
            "one loan at a time"
        );
        std::thread::scope(|scope| {
            let reclaimer = scope.spawn(|| lending.reclaim());
            std::thread::sleep(Duration::from_millis(20));
            assert!(!reclaimer.is_finished(), "reclaim waits while lent");
            drop(loan);
            reclaimer.join().expect("reclaimed");
        });
        assert!(lending.borrow(Use::Heartbeat).is_none(), "owned again");
        lending.retire();
        lending.offer(true);
        assert!(lending.borrow(Use::Frame).is_none(), "retired for good");
    }

    #[test]
    fn a_lent_socket_carries_whole_frames_with_the_shortest_length_form() {
        let (server, mut client) = pair();
        let lending = Lending::new(server);
        lending.offer(true);
        let payload = vec![b'x'; 300];
        let loan = lending.borrow(Use::Frame).expect("offered");
        let sent = loan.send(
            OpCode::Data(tungstenite::protocol::frame::coding::Data::Text),
            &payload,
        );
        assert_eq!(sent, Sent::Whole);
        let mut got = vec![0u8; 4 + payload.len()];
        client.read_exact(&mut got).expect("frame");
        assert_eq!(got[..4], [0x81, 126, 1, 44]);
        assert_eq!(got[4..], payload[..]);
        let ping = lending.borrow(Use::Heartbeat).expect("offered again");
        assert_eq!(ping.send(OpCode::Control(Control::Ping), &[]), Sent::Whole);
        let mut got = [0u8; 2];
        client.read_exact(&mut got).expect("ping");
        assert_eq!(got, [0x89, 0]);
    }
}
