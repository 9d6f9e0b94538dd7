//! The connection's socket as its own thread drives it, through tungstenite: writing
//! (with the slow-consumer rules), flushing, reading until the socket is drained, and
//! the close handshake. The session decides what to send; this says how it went.

use std::io::ErrorKind::WouldBlock;
use std::time::Instant;

use tungstenite::error::ProtocolError;
use tungstenite::{Error as WsError, Message, WebSocket};

use crate::websocket::close::{self, Close};
use crate::websocket::handle::{Handle, Request};
use crate::websocket::stream::ClientStream;

/// Client frames handled per turn before looking at everything else.
const BATCH: usize = 64;

/// The connection is over; holds the close code for the log and the metric.
pub struct Done(pub u16);

pub type Step = Result<(), Done>;

pub struct Wire {
    ws: WebSocket<ClientStream>,
    /// tungstenite holds output the socket would not take yet.
    flush_pending: bool,
    /// Set after a client frame it cannot take: tungstenite must not read past a frame
    /// it refused, so input is only drained from then on.
    discard_input: bool,
    /// Set once a close frame is sent: why, and when to stop waiting for the reply.
    closing: Option<(Close, Instant)>,
}

impl Wire {
    pub fn new(ws: WebSocket<ClientStream>) -> Wire {
        Wire {
            ws,
            flush_pending: false,
            discard_input: false,
            closing: None,
        }
    }

    pub fn into_inner(self) -> WebSocket<ClientStream> {
        self.ws
    }

    /// The end: the close under way, or `otherwise`.
    fn done(&self, otherwise: Close) -> Done {
        Done(self.closing.map_or(otherwise, |(close, _)| close).code())
    }

    pub fn closing(&self) -> Option<(Close, Instant)> {
        self.closing
    }

    pub fn flush_pending(&self) -> bool {
        self.flush_pending
    }

    /// Nothing more may be written this turn: output waits, or the close frame is out.
    pub fn busy(&self) -> bool {
        self.flush_pending || self.closing.is_some()
    }

    /// Whether the socket may be lent: nothing unsent, no partial frame read, no close
    /// under way.
    pub fn lendable(&self) -> bool {
        let stream = self.ws.get_ref();
        !self.busy() && !self.discard_input && stream.at_frame_start() && !stream.has_unsent()
    }

    /// Live from here on: reads and writes never block the thread.
    pub fn go_live(&mut self) -> Step {
        let socket = self.ws.get_ref().socket();
        socket
            .set_nonblocking(true)
            .map_err(|_| Done(Close::Abnormal.code()))
    }

    /// Bytes a borrower left half written: they go out before anything else.
    pub fn push_unsent(&mut self, rest: Vec<u8>) {
        self.ws.get_mut().push_unsent(rest);
    }

    pub fn write(&mut self, message: Message) -> Step {
        match self.ws.write(message) {
            Ok(()) => Ok(()),
            // The frame is queued inside tungstenite; the flush finishes it later.
            Err(WsError::Io(e)) if e.kind() == WouldBlock => {
                self.flush_pending = true;
                Ok(())
            }
            // The close frame would not fit either: the client hears nothing more.
            Err(WsError::WriteBufferFull(_)) => Err(Done(Close::TooSlow.code())),
            Err(_) => Err(Done(Close::Abnormal.code())),
        }
    }

    pub fn flush(&mut self) -> Step {
        match self.ws.flush() {
            Ok(()) => {
                self.flush_pending = false;
                Ok(())
            }
            Err(WsError::Io(e)) if e.kind() == WouldBlock => {
                self.flush_pending = true;
                Ok(())
            }
            Err(WsError::ConnectionClosed) => Err(self.done(Close::Abnormal)),
            Err(_) => Err(Done(Close::Abnormal.code())),
        }
    }

    /// Reads until the socket has nothing more (epoll cannot see frames tungstenite
    /// already buffered, so stopping early needs a wake-up of its own).
    pub fn read_available(&mut self, handle: &Handle) -> Step {
        if self.discard_input {
            return self.discard_available(handle);
        }
        for _ in 0..BATCH {
            match self.ws.read() {
                Ok(message) => {
                    handle.heard();
                    self.on_message(message)?;
                }
                Err(WsError::Io(e)) if e.kind() == WouldBlock => return Ok(()),
                Err(err) => return self.on_read_error(err),
            }
        }
        handle.ask(Request::IoReady);
        Ok(())
    }

    fn on_message(&mut self, message: Message) -> Step {
        match message {
            Message::Text(text) if text.as_str() == "ping" => self.write(Message::text("pong")),
            Message::Close(frame) => {
                // tungstenite queued the reply (1002 for a code a client may not
                // send); send it and finish.
                let _ = self.ws.flush();
                let peer = close::peer_code(frame.as_ref());
                Err(Done(self.closing.map_or(peer, |(close, _)| close.code())))
            }
            _ => Ok(()),
        }
    }

    fn on_read_error(&mut self, err: WsError) -> Step {
        match err {
            // A 64-bit length with its top bit set breaks RFC 6455 §5.2 before it is
            // too big; tungstenite only sees the size.
            WsError::Capacity(_) if self.ws.get_ref().saw_invalid_length() => {
                self.fail(Close::Protocol, "invalid frame length")
            }
            WsError::Capacity(_) => self.fail(Close::TooBig, Close::TooBig.reason()),
            WsError::Protocol(violation) if is_client_violation(&violation) => {
                self.fail(Close::Protocol, &violation.to_string())
            }
            WsError::Utf8(_) => self.fail(Close::InvalidData, Close::InvalidData.reason()),
            _ => Err(self.done(Close::Abnormal)),
        }
    }

    /// Fails the connection (RFC 6455 §7.1.7) after a frame it cannot take: sends the
    /// close frame, then only drains input. tungstenite may have stopped inside the
    /// frame; reading on would trip its internal assertions (and misparse the rest).
    fn fail(&mut self, close: Close, reason: &str) -> Step {
        self.discard_input = true;
        if self.closing.is_some() {
            // Our close frame is out already; the client's reply is what broke.
            return Err(self.done(close));
        }
        log::info!(code = close.code(), reason = reason; "ws client broke the protocol");
        self.begin_close(close, Some(reason))?;
        self.end_output_once_flushed();
        Ok(())
    }

    /// Once the close frame is out, sends FIN after it: a client waiting for the
    /// server to close the TCP connection (RFC 6455 §7.1.1) need not wait for the grace.
    fn end_output_once_flushed(&mut self) {
        if !self.flush_pending {
            let _ = self
                .ws
                .get_ref()
                .socket()
                .shutdown(std::net::Shutdown::Write);
        }
    }

    /// After a refused frame: reads and drops what the client sends until it closes its
    /// side or the close grace ends, so that closing the socket sends FIN, not a reset
    /// that could cost the client the close frame.
    fn discard_available(&mut self, handle: &Handle) -> Step {
        self.end_output_once_flushed();
        let mut sink = [0u8; 4096];
        for _ in 0..BATCH {
            match std::io::Read::read(self.ws.get_mut(), &mut sink) {
                Ok(0) => return Err(self.done(Close::TooBig)),
                Ok(_) => {}
                Err(e) if e.kind() == WouldBlock => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return Err(self.done(Close::TooBig)),
            }
        }
        handle.ask(Request::IoReady);
        Ok(())
    }

    /// Sends a close frame (with `reason`, or the usual one) and waits (in the loop)
    /// for the client's reply.
    pub fn begin_close(&mut self, close: Close, reason: Option<&str>) -> Step {
        if self.closing.is_some() {
            return Ok(());
        }
        self.closing = Some((close, Instant::now() + close.grace()));
        match self.ws.close(Some(close.frame(reason))) {
            Ok(()) => self.flush(),
            Err(WsError::Io(e)) if e.kind() == WouldBlock => {
                self.flush_pending = true;
                Ok(())
            }
            Err(_) => Err(Done(close.code())),
        }
    }

    /// Closes outside the live loop (the socket is not watched).
    pub fn close_now(&mut self, close: Close) -> u16 {
        let _ = self.ws.get_ref().socket().set_nonblocking(false);
        let _ = self.begin_close(close, None);
        close.code()
    }
}

/// Whether tungstenite's `violation` is a client frame that breaks RFC 6455 (answered
/// 1002) rather than the connection ending (a reset, frames after the client's close).
fn is_client_violation(violation: &ProtocolError) -> bool {
    use ProtocolError::*;
    matches!(
        violation,
        NonZeroReservedBits
            | UnmaskedFrameFromClient
            | FragmentedControlFrame
            | ControlFrameTooBig
            | UnknownControlFrameType(_)
            | UnknownDataFrameType(_)
            | UnexpectedContinueFrame
            | ExpectedFragment(_)
            | InvalidOpcode(_)
            | InvalidCloseSequence
    )
}
