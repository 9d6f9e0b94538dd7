//! Every close code notifd sends or records (contract §3's table, plus the RFC 6455
//! codes around it): one `Close` per row, with its code, its usual reason and how
//! long the client gets to answer the close frame.
//!
//! The handshake's refusals, the session's own closes and the requests other threads
//! make of a connection (`handle`) all name a `Close`; only this file spells a number.

use std::time::Duration;

use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::CloseFrame;

/// How long to wait for the client's close reply.
const GRACE: Duration = Duration::from_secs(2);
/// How long a client closed as too slow (4006) has to take its close frame, which
/// waits behind everything it has not read: a stalled browser tab that resumes within
/// this time still learns why it was closed. (A client that takes nothing at all is
/// cut off by the kernel after the send-stall limit anyway.)
const SLOW_GRACE: Duration = Duration::from_secs(15);

/// Why a connection ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Close {
    /// 4000: no frame at all from the client for the idle timeout.
    Idle,
    /// 4001: token missing, malformed, badly signed, wrong algorithm, no `sub`.
    Unauthorized,
    /// 4002: `workspaceSlug` missing or empty.
    NoWorkspace,
    /// 4003: the token expired, at connect or later.
    Expired,
    /// 4004: the token does not grant this workspace.
    Forbidden,
    /// 4005: a newer connection of the same user and workspace opened.
    Replaced,
    /// 4006: the client does not read and its outbound queue is full.
    TooSlow,
    /// 1001: the server is shutting down.
    GoingAway,
    /// 1002: a client frame that breaks RFC 6455.
    Protocol,
    /// 1005: the client's close frame carried no code (recorded, never sent).
    NoStatus,
    /// 1006: no close frame at all, the peer vanished (recorded, never sent).
    Abnormal,
    /// 1007: text (a message or a close reason) that is not UTF-8.
    InvalidData,
    /// 1008: `since` is not a notification id.
    Policy,
    /// 1009: a client message over 64 KiB.
    TooBig,
    /// 1011: the server cannot go on (history unreadable or too long).
    Internal,
    /// 1013: the instance is at its connection limit.
    AtCapacity,
}

/// Every close, in the order of the table above.
const ALL: [Close; 16] = [
    Close::Idle,
    Close::Unauthorized,
    Close::NoWorkspace,
    Close::Expired,
    Close::Forbidden,
    Close::Replaced,
    Close::TooSlow,
    Close::GoingAway,
    Close::Protocol,
    Close::NoStatus,
    Close::Abnormal,
    Close::InvalidData,
    Close::Policy,
    Close::TooBig,
    Close::Internal,
    Close::AtCapacity,
];

impl Close {
    /// The code on the wire (and in the close-code metric).
    pub const fn code(self) -> u16 {
        match self {
            Close::Idle => 4000,
            Close::Unauthorized => 4001,
            Close::NoWorkspace => 4002,
            Close::Expired => 4003,
            Close::Forbidden => 4004,
            Close::Replaced => 4005,
            Close::TooSlow => 4006,
            Close::GoingAway => 1001,
            Close::Protocol => 1002,
            Close::NoStatus => 1005,
            Close::Abnormal => 1006,
            Close::InvalidData => 1007,
            Close::Policy => 1008,
            Close::TooBig => 1009,
            Close::Internal => 1011,
            Close::AtCapacity => 1013,
        }
    }

    /// The reason sent with the code when the moment has nothing more precise to say.
    pub const fn reason(self) -> &'static str {
        match self {
            Close::Idle => "idle timeout",
            Close::Unauthorized => "invalid token",
            Close::NoWorkspace => "missing workspaceSlug",
            Close::Expired => "token expired",
            Close::Forbidden => "the token does not grant this workspace",
            Close::Replaced => "replaced by a newer connection",
            Close::TooSlow => "too slow: outbound queue full",
            Close::GoingAway => "server shutting down",
            Close::Protocol => "protocol error",
            Close::NoStatus | Close::Abnormal => "",
            Close::InvalidData => "invalid UTF-8",
            Close::Policy => "since: not a notification id",
            Close::TooBig => "message over 64 KiB",
            Close::Internal => "internal error",
            Close::AtCapacity => "server at capacity",
        }
    }

    /// How long the client has to answer the close frame.
    pub const fn grace(self) -> Duration {
        match self {
            Close::TooSlow => SLOW_GRACE,
            _ => GRACE,
        }
    }

    /// The close with this code, if notifd knows it.
    pub fn from_code(code: u16) -> Option<Close> {
        ALL.into_iter().find(|close| close.code() == code)
    }

    /// The close frame to send, with `reason` (or the usual one).
    pub fn frame(self, reason: Option<&str>) -> CloseFrame {
        CloseFrame {
            code: CloseCode::from(self.code()),
            reason: reason.unwrap_or(self.reason()).to_string().into(),
        }
    }
}

/// The code a client's close frame ends the connection with: its own, or 1002 when it
/// sent one no endpoint may send (tungstenite answered it with 1002 too), so that the
/// close-code metric never carries a client's arbitrary number.
pub fn peer_code(frame: Option<&CloseFrame>) -> u16 {
    match frame {
        None => Close::NoStatus.code(),
        Some(frame) if frame.code.is_allowed() => u16::from(frame.code),
        Some(_) => Close::Protocol.code(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_close_has_its_own_code_and_comes_back_from_it() {
        for close in ALL {
            assert_eq!(Close::from_code(close.code()), Some(close));
        }
        assert_eq!(Close::from_code(1000), None);
        assert_eq!(Close::TooSlow.grace(), SLOW_GRACE);
        assert_eq!(Close::Replaced.grace(), GRACE);
    }
}
