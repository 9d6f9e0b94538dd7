//! One REST connection: the bytes received and not yet used, the request being
//! received, the response being sent. A worker runs `turn` when epoll says the
//! socket is ready; the turn serves every request the bytes hold (pipelining) and
//! says what to wait for next, and until when.
//!
//! The socket is non-blocking, so a turn never waits on the client: a slow client
//! costs a parked descriptor, not a thread.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use super::chunked::Chunked;
use super::epoll::Interest;
use super::refusal::Refusal;
use super::request::{parse_head, Framing, Head, Parse, Request, MAX_HEAD_BYTES};
use super::response::Response;
use super::Service;

/// Requests served in one turn before the connection goes to the back of the line.
const MAX_REQUESTS_PER_TURN: usize = 32;
/// Bytes read per `read` call.
const READ_CHUNK: usize = 16 * 1024;
/// After a refusal or `Connection: close`: how long, and how much, of what the client
/// still sends is read and dropped, so that closing does not reset the connection
/// before the client has read the answer.
const DRAIN_TIME: Duration = Duration::from_secs(2);
const MAX_DRAIN_BYTES: usize = 1024 * 1024;
/// How long a worker may block finishing a response during shutdown.
const FINISH_TIMEOUT: Duration = Duration::from_secs(2);

/// What the connection waits for after a turn.
#[derive(Debug)]
pub enum Turn {
    Park(Interest, Instant),
    Close,
}

/// The body of the request whose head has been parsed.
enum Body {
    Length(usize),
    Chunked(Chunked),
}

pub struct Connection {
    stream: TcpStream,
    peer: SocketAddr,
    timeout: Duration,
    /// Received bytes not used yet (the rest of a head, a body, pipelined requests).
    input: Vec<u8>,
    /// How much of `input` is known to hold no complete head.
    scanned: usize,
    /// When the first byte of the request being received arrived.
    started: Option<Instant>,
    pending: Option<(Head, Body)>,
    output: Vec<u8>,
    written: usize,
    /// When a stalled response must have moved on; set at the first stall, moved only
    /// when the client takes bytes.
    write_deadline: Option<Instant>,
    /// Close once `output` is sent (after draining what the client still sends).
    closing: bool,
    drain: Option<(Instant, usize)>,
}

impl Connection {
    pub fn new(stream: TcpStream, peer: SocketAddr, timeout: Duration) -> Connection {
        Connection {
            stream,
            peer,
            timeout,
            input: Vec::new(),
            scanned: 0,
            started: None,
            pending: None,
            output: Vec::new(),
            written: 0,
            write_deadline: None,
            closing: false,
            drain: None,
        }
    }

    /// A connection refused at the cap: the answer is all it gets.
    pub fn refused(stream: TcpStream, peer: SocketAddr, timeout: Duration) -> Connection {
        let mut connection = Connection::new(stream, peer, timeout);
        connection.refuse(Refusal::busy());
        connection
    }

    pub fn fd(&self) -> RawFd {
        self.stream.as_raw_fd()
    }

    /// The deadline of a connection that just opened: its first request must start
    /// (and its head be complete) within the timeout.
    pub fn first_deadline(&self, now: Instant) -> Instant {
        now + self.timeout
    }

    /// Serves what the socket holds; never blocks on the client.
    pub fn turn(&mut self, service: &dyn Service, stopping: bool) -> Turn {
        let mut served = 0;
        loop {
            if self.written < self.output.len() {
                match self.flush() {
                    Ok(true) => {}
                    Ok(false) => {
                        let deadline = *self
                            .write_deadline
                            .get_or_insert_with(|| Instant::now() + self.timeout);
                        return Turn::Park(Interest::Write, deadline);
                    }
                    Err(_) => return Turn::Close,
                }
            }
            if self.closing {
                return self.drain();
            }
            if stopping && self.is_idle() {
                return Turn::Close;
            }
            if served == MAX_REQUESTS_PER_TURN {
                return Turn::Park(Interest::Yield, Instant::now() + self.timeout);
            }
            match self.next_request(service) {
                Ok(Some(request)) => {
                    served += 1;
                    self.serve(service, request, stopping);
                    continue;
                }
                // A `100 Continue` may be waiting to go out before the body comes.
                Ok(None) if self.written < self.output.len() => continue,
                Ok(None) => {}
                Err(refusal) => {
                    self.refuse(refusal);
                    continue;
                }
            }
            match self.read_some() {
                Ok(0) => return Turn::Close,
                Ok(_) => {}
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    return Turn::Park(Interest::Read, self.read_deadline())
                }
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Turn::Close,
            }
        }
    }

    /// Called when the deadline passed while parked: a request still arriving gets
    /// 408 (best effort: the socket is not waited on), an idle one is just closed.
    pub fn expire(mut self) {
        if !self.closing && self.started.is_some() {
            self.refuse(Refusal::timeout());
            if self.flush().is_ok() {
                // Half-close, then take what the client already sent: closing with
                // unread bytes would reset the connection and could destroy the 408.
                let _ = self.drain();
            }
        }
    }

    /// During shutdown: sends the rest of the response, waiting at most
    /// `FINISH_TIMEOUT`, then the connection is closed.
    pub fn finish(mut self) {
        if self.written < self.output.len()
            && self.stream.set_nonblocking(false).is_ok()
            && self.stream.set_write_timeout(Some(FINISH_TIMEOUT)).is_ok()
        {
            let _ = self.stream.write_all(&self.output[self.written..]);
        }
    }

    fn is_idle(&self) -> bool {
        self.started.is_none() && self.pending.is_none() && self.input.is_empty()
    }

    fn read_deadline(&self) -> Instant {
        // The whole request must arrive within the timeout, not each read of it: one
        // byte a second does not keep a connection.
        match self.started {
            Some(started) => started + self.timeout,
            None => Instant::now() + self.timeout,
        }
    }

    /// Takes the next whole request out of `input`, if it holds one.
    fn next_request(&mut self, service: &dyn Service) -> Result<Option<Request>, Refusal> {
        if self.pending.is_none() && !self.take_head(service)? {
            return Ok(None);
        }
        let Some((head, mut body)) = self.pending.take() else {
            return Ok(None);
        };
        let complete = match &mut body {
            Body::Length(n) if self.input.len() >= *n => {
                let rest = self.input.split_off(*n);
                Some(std::mem::replace(&mut self.input, rest))
            }
            Body::Length(_) => None,
            Body::Chunked(decoder) => {
                let used = decoder.feed(&self.input)?;
                self.input.drain(..used);
                decoder.is_done().then(|| decoder.take_body())
            }
        };
        let Some(body) = complete else {
            self.pending = Some((head, body));
            return Ok(None);
        };
        self.started = None;
        Ok(Some(Request {
            head,
            body,
            peer: self.peer,
        }))
    }

    /// Parses a head at the start of `input`; true once one is pending.
    fn take_head(&mut self, service: &dyn Service) -> Result<bool, Refusal> {
        if self.input.is_empty() {
            return Ok(false);
        }
        self.started.get_or_insert_with(Instant::now);
        // Parse only when a new line has ended since the last look: a head trickling
        // in byte by byte is not parsed again for every byte.
        if !self.input[self.scanned..].contains(&b'\n') {
            self.scanned = self.input.len();
            if self.input.len() >= MAX_HEAD_BYTES {
                return Err(Refusal::head_too_large());
            }
            return Ok(false);
        }
        let (head, len) = match parse_head(&self.input)? {
            Parse::Partial => {
                self.scanned = self.input.len();
                return Ok(false);
            }
            Parse::Head(head, len) => (head, len),
        };
        self.input.drain(..len);
        self.scanned = 0;
        let limit = service.admit(&head).map_err(Refusal::answer)?;
        let body = match head.framing {
            Framing::None => Body::Length(0),
            Framing::Length(n) if n > limit => return Err(Refusal::body_too_large(limit)),
            Framing::Length(n) => Body::Length(n),
            Framing::Chunked => Body::Chunked(Chunked::new(limit)),
        };
        let waits_for_body = !matches!(body, Body::Length(0)) && self.input.is_empty();
        // HTTP/1.0 clients do not know 100 Continue (RFC 9110 §10.1.1).
        if head.expects_continue && head.minor_version == 1 && waits_for_body {
            self.output
                .extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
        }
        self.pending = Some((head, body));
        Ok(true)
    }

    /// Runs the handler (a panic answers 500 and closes this connection only) and
    /// queues its response.
    fn serve(&mut self, service: &dyn Service, request: Request, stopping: bool) {
        let served = catch_unwind(AssertUnwindSafe(|| service.serve(&request)));
        let (response, healthy) = match served {
            Ok(response) => (response, true),
            Err(panic) => {
                log::error!(
                    method = request.method(),
                    panic = panic_text(&panic);
                    "a request handler panicked; answered 500"
                );
                let response = Response::error(500, "internal_error", "internal server error");
                (response, false)
            }
        };
        let keep_alive = request.head.keep_alive && healthy && !stopping;
        response.write_to(&mut self.output, keep_alive, request.method() == "HEAD");
        self.closing = !keep_alive;
    }

    /// Queues a refusal's answer; the connection closes after it.
    fn refuse(&mut self, refusal: Refusal) {
        log::debug!(status = refusal.status, reason = refusal.message.as_str(); "http request refused");
        self.pending = None;
        self.input = Vec::new();
        refusal
            .into_response()
            .write_to(&mut self.output, false, false);
        self.closing = true;
    }

    /// Writes what it can of `output`; true when all of it is out.
    fn flush(&mut self) -> io::Result<bool> {
        while self.written < self.output.len() {
            match self.stream.write(&self.output[self.written..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.written += n;
                    self.write_deadline = None;
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err(err),
            }
        }
        self.output = Vec::new();
        self.written = 0;
        Ok(true)
    }

    fn read_some(&mut self) -> io::Result<usize> {
        let mut chunk = [0u8; READ_CHUNK];
        let n = self.stream.read(&mut chunk)?;
        self.input.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    /// After the last answer: half-close, then read and drop what the client still
    /// sends until it closes, for at most `DRAIN_TIME` and `MAX_DRAIN_BYTES`.
    fn drain(&mut self) -> Turn {
        let (until, mut dropped) = match self.drain {
            Some(state) => state,
            None => {
                let _ = self.stream.shutdown(Shutdown::Write);
                (Instant::now() + DRAIN_TIME, 0)
            }
        };
        let mut chunk = [0u8; READ_CHUNK];
        let turn = loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => break Turn::Close,
                Ok(n) => {
                    dropped += n;
                    if dropped > MAX_DRAIN_BYTES {
                        break Turn::Close;
                    }
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    break Turn::Park(Interest::Read, until)
                }
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break Turn::Close,
            }
        };
        self.drain = Some((until, dropped));
        turn
    }
}

/// The message of a panic payload.
pub fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}
