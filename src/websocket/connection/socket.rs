//! The connection's socket side: writing frames (with the slow-consumer rules),
//! flushing, reading until the socket is drained, and the close handshake.

use std::time::Instant;

use tungstenite::error::ProtocolError;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::CloseFrame;
use tungstenite::{Error as WsError, Message};

use super::{
    Done, Session, Step, BATCH, CLOSE_ABNORMAL, CLOSE_GRACE, CLOSE_INVALID_DATA, CLOSE_PROTOCOL,
    CLOSE_TOO_BIG, SLOW_CLOSE_GRACE,
};
use crate::hub::{Frame, CLOSE_TOO_SLOW};
use crate::metrics;

impl Session<'_> {
    /// Sends one notification unless this connection already sent it. Live frames
    /// (not replayed history) feed the delivery-latency histogram.
    pub(super) fn send(&mut self, frame: Frame, live: bool) -> Step {
        // After a close frame nothing more may be sent; a closing connection has
        // nothing left to deliver.
        if self.closing.is_some() || !self.link.seen().insert(frame.id) {
            return Ok(());
        }
        let id = frame.id;
        self.write(Message::Text(frame.json))?;
        metrics::delivered(&id, live);
        Ok(())
    }

    pub(super) fn write(&mut self, message: Message) -> Step {
        match self.ws.write(message) {
            Ok(()) => Ok(()),
            // The frame is queued inside tungstenite; the flush finishes it later.
            Err(WsError::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {
                self.flush_pending = true;
                Ok(())
            }
            // The close frame would not fit either: the client hears nothing more.
            Err(WsError::WriteBufferFull(_)) => Err(Done(CLOSE_TOO_SLOW)),
            Err(_) => Err(Done(CLOSE_ABNORMAL)),
        }
    }

    pub(super) fn flush(&mut self) -> Step {
        match self.ws.flush() {
            Ok(()) => {
                self.flush_pending = false;
                Ok(())
            }
            Err(WsError::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {
                self.flush_pending = true;
                Ok(())
            }
            Err(WsError::ConnectionClosed) => {
                Err(Done(self.closing.map_or(CLOSE_ABNORMAL, |(code, _)| code)))
            }
            Err(_) => Err(Done(CLOSE_ABNORMAL)),
        }
    }

    /// Reads until the socket has nothing more (epoll cannot see frames tungstenite
    /// already buffered, so stopping early needs a wake-up of its own).
    pub(super) fn read_available(&mut self) -> Step {
        if self.discard_input {
            return self.discard_available();
        }
        for _ in 0..BATCH {
            match self.ws.read() {
                Ok(message) => {
                    self.link.heard();
                    match message {
                        Message::Text(text) if text.as_str() == "ping" => {
                            self.write(Message::text("pong"))?
                        }
                        Message::Close(frame) => {
                            // tungstenite queued the reply (1002 for a code a client
                            // may not send); send it and finish.
                            let _ = self.ws.flush();
                            let code = self
                                .closing
                                .map(|(code, _)| code)
                                .or_else(|| frame.map(|f| peer_close_code(f.code)))
                                .unwrap_or(1005);
                            return Err(Done(code));
                        }
                        _ => {}
                    }
                }
                Err(WsError::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
                // A 64-bit length with its top bit set breaks RFC 6455 §5.2 before it is
                // too big; tungstenite only sees the size.
                Err(WsError::Capacity(_)) if self.ws.get_ref().saw_invalid_length() => {
                    return self.fail(CLOSE_PROTOCOL, "invalid frame length")
                }
                Err(WsError::Capacity(_)) => {
                    return self.fail(CLOSE_TOO_BIG, "message over 64 KiB")
                }
                Err(WsError::Protocol(violation)) if is_client_violation(&violation) => {
                    return self.fail(CLOSE_PROTOCOL, &violation.to_string())
                }
                Err(WsError::Utf8(_)) => return self.fail(CLOSE_INVALID_DATA, "invalid UTF-8"),
                Err(WsError::ConnectionClosed) => {
                    return Err(Done(self.closing.map_or(CLOSE_ABNORMAL, |(code, _)| code)))
                }
                Err(_) => return Err(Done(self.closing.map_or(CLOSE_ABNORMAL, |(code, _)| code))),
            }
        }
        self.link.io_ready();
        Ok(())
    }

    /// Fails the connection (RFC 6455 §7.1.7) after a frame it cannot take: sends the
    /// close frame with `code`, then only drains input. tungstenite may have stopped
    /// inside the frame; reading on would trip its internal assertions (and misparse
    /// the rest).
    fn fail(&mut self, code: u16, reason: &str) -> Step {
        self.discard_input = true;
        if self.closing.is_some() {
            // Our close frame is out already; the client's reply is what broke.
            return Err(Done(self.closing.map_or(code, |(code, _)| code)));
        }
        log::info!(code = code, reason = reason; "ws client broke the protocol");
        self.begin_close(code, reason)?;
        self.end_output_once_flushed();
        Ok(())
    }

    /// Once the close frame is out, sends FIN after it: a client waiting for the
    /// server to close the TCP connection (RFC 6455 §7.1.1) need not wait for the grace.
    fn end_output_once_flushed(&mut self) {
        if !self.flush_pending {
            let _ = self.ws.get_ref().tcp().shutdown(std::net::Shutdown::Write);
        }
    }

    /// After a refused frame: reads and drops what the client sends until it closes its
    /// side or the close grace ends, so that closing the socket sends FIN, not a reset
    /// that could cost the client the close frame.
    pub(super) fn discard_available(&mut self) -> Step {
        self.end_output_once_flushed();
        let mut sink = [0u8; 4096];
        for _ in 0..BATCH {
            match std::io::Read::read(self.ws.get_mut(), &mut sink) {
                Ok(0) => return Err(Done(self.closing.map_or(CLOSE_TOO_BIG, |(code, _)| code))),
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return Err(Done(self.closing.map_or(CLOSE_TOO_BIG, |(code, _)| code))),
            }
        }
        self.link.io_ready();
        Ok(())
    }

    /// Sends a close frame and waits (in the loop) for the client's reply.
    pub(super) fn begin_close(&mut self, code: u16, reason: &str) -> Step {
        if self.closing.is_some() {
            return Ok(());
        }
        let grace = match code {
            CLOSE_TOO_SLOW => SLOW_CLOSE_GRACE,
            _ => CLOSE_GRACE,
        };
        self.closing = Some((code, Instant::now() + grace));
        let frame = CloseFrame {
            code: CloseCode::from(code),
            reason: reason.to_string().into(),
        };
        match self.ws.close(Some(frame)) {
            Ok(()) => self.flush(),
            Err(WsError::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {
                self.flush_pending = true;
                Ok(())
            }
            Err(_) => Err(Done(code)),
        }
    }

    /// Closes outside the live loop (the socket is not in epoll).
    pub(super) fn close_now(&mut self, code: u16, reason: &str) -> u16 {
        let _ = self.ws.get_ref().tcp().set_nonblocking(false);
        let _ = self.begin_close(code, reason);
        code
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

/// The code a client's close frame ends the connection with: its own, or 1002 when it
/// sent one no endpoint may send (tungstenite answered it with 1002 too), so that the
/// close-code metric never carries a client's arbitrary number.
fn peer_close_code(code: CloseCode) -> u16 {
    if code.is_allowed() {
        u16::from(code)
    } else {
        CLOSE_PROTOCOL
    }
}
