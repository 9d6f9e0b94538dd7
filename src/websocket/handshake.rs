//! The opening of a WebSocket: the HTTP upgrade (bounded in time), then the checks of
//! §3 that decide whether the connection may stay: token, workspace, `since`.
//!
//! The handshake always completes; a refused connection is then closed with its code
//! and a reason, because browsers cannot read the status of a failed upgrade.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tungstenite::protocol::{Role, WebSocketConfig};
use tungstenite::WebSocket;
use uuid::Uuid;

use super::close::Close;
use super::protocol::{self, Protocol};
use super::stream::ClientStream;

use crate::auth::{AuthError, Identity, Verifier};
use crate::validate::is_workspace;

/// Largest inbound message; larger ones close the connection with 1009 (§3).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// tungstenite's default read buffer is 128 KiB, resident per connection. Clients send
/// pongs and the odd text `ping`: 1 KiB holds those, and a larger message still reads
/// (in more calls).
const READ_BUFFER_BYTES: usize = 1024;
/// Most outbound bytes a connection may hold unsent before it counts as too slow.
const MAX_UNSENT_BYTES: usize = 1024 * 1024;

/// What the client asked for in its upgrade request.
#[derive(Debug, Default)]
pub struct Upgrade {
    pub token: Option<String>,
    pub workspace: Option<String>,
    pub since: Option<String>,
    pub origin: Option<String>,
    /// What the connection speaks: `notifd.v1` when the client offered it.
    pub protocol: Protocol,
}

/// A connection that passed every check.
pub struct Admitted {
    pub identity: Identity,
    pub workspace: String,
    pub since: Option<Uuid>,
    pub protocol: Protocol,
}

/// A refusal: the close and its reason.
#[derive(Debug)]
pub struct Refusal {
    pub close: Close,
    pub reason: String,
}

pub fn config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(0)
        .max_write_buffer_size(MAX_UNSENT_BYTES)
        .max_message_size(Some(MAX_MESSAGE_BYTES))
        .max_frame_size(Some(MAX_MESSAGE_BYTES))
}

/// Runs the HTTP upgrade; gives up when it takes longer than `limit` in total (a
/// client that connects and sends nothing, or trickles bytes, is dropped).
///
/// With `allowed_origins` set, a browser request (one with `Origin`) from any other
/// origin is refused with HTTP 403 before the upgrade.
pub fn upgrade(
    stream: TcpStream,
    limit: Duration,
    allowed_origins: &[String],
) -> io::Result<(WebSocket<ClientStream>, Upgrade)> {
    let deadline = Instant::now() + limit;
    stream.set_write_timeout(Some(limit))?;
    let mut asked = Upgrade::default();
    // The signature is tungstenite's `Callback`; its error type is not ours to shrink.
    #[allow(clippy::result_large_err)]
    let callback = |request: &Request, response: Response| -> Result<Response, ErrorResponse> {
        asked = read_upgrade(request);
        if !origin_allowed(allowed_origins, asked.origin.as_deref()) {
            let mut refusal = ErrorResponse::new(Some("origin not allowed".into()));
            *refusal.status_mut() = tungstenite::http::StatusCode::FORBIDDEN;
            return Err(refusal);
        }
        let mut response = response;
        if asked.protocol == Protocol::V1 {
            let name = tungstenite::http::HeaderValue::from_static(protocol::NAME);
            response
                .headers_mut()
                .insert("sec-websocket-protocol", name);
        }
        Ok(response)
    };
    let ws = tungstenite::accept_hdr_with_config(
        Deadline { stream, deadline },
        callback,
        Some(config()),
    )
    .map_err(|e| io::Error::other(format!("handshake failed: {e}")))?;
    // The handshake consumed exactly the request (tungstenite refuses bytes after it),
    // so the raw socket carries on as a fresh WebSocket.
    let stream = ws.into_inner().stream;
    stream.set_read_timeout(None)?;
    Ok((
        WebSocket::from_raw_socket(ClientStream::new(stream), Role::Server, Some(config())),
        asked,
    ))
}

fn read_upgrade(request: &Request) -> Upgrade {
    let mut asked = Upgrade::default();
    if let Some(query) = request.uri().query() {
        for (name, value) in form_urlencoded::parse(query.as_bytes()) {
            match name.as_ref() {
                "token" => asked.token = Some(value.into_owned()),
                "workspaceSlug" => asked.workspace = Some(value.into_owned()),
                "since" => asked.since = Some(value.into_owned()),
                _ => {}
            }
        }
    }
    let header = |name: &str| request.headers().get(name).and_then(|v| v.to_str().ok());
    if asked.token.as_deref().is_none_or(str::is_empty) {
        asked.token = header("authorization")
            .and_then(|v| v.trim().split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim().to_string());
    }
    asked.origin = header("origin").map(String::from);
    let offers = request.headers().get_all("sec-websocket-protocol");
    if protocol::offered(offers.iter().filter_map(|v| v.to_str().ok())) {
        asked.protocol = Protocol::V1;
    }
    asked
}

/// The checks of §3, in the order of its table.
pub fn admit(asked: &Upgrade, verifier: &Verifier) -> Result<Admitted, Refusal> {
    let refuse = |close: Close, reason: &str| Refusal {
        close,
        reason: reason.to_string(),
    };
    let token = asked.token.as_deref().unwrap_or("");
    let identity = verifier.verify(token).map_err(|e| match e {
        AuthError::Expired => refuse(Close::Expired, Close::Expired.reason()),
        AuthError::Missing => refuse(Close::Unauthorized, "missing token"),
        AuthError::Invalid(why) => refuse(Close::Unauthorized, &format!("invalid token: {why}")),
    })?;
    let workspace = asked.workspace.clone().unwrap_or_default();
    if workspace.is_empty() {
        return Err(refuse(Close::NoWorkspace, Close::NoWorkspace.reason()));
    }
    if !is_workspace(&workspace) || !identity.grants_workspace(&workspace) {
        return Err(refuse(Close::Forbidden, Close::Forbidden.reason()));
    }
    let since = match asked.since.as_deref() {
        None | Some("") => None,
        Some(text) => Some(
            Uuid::parse_str(text)
                .ok()
                .filter(|id| id.get_version_num() == 7)
                .ok_or_else(|| refuse(Close::Policy, Close::Policy.reason()))?,
        ),
    };
    Ok(Admitted {
        identity,
        workspace,
        since,
        protocol: asked.protocol,
    })
}

/// Closes a connection with `close` and waits (briefly, blocking) for the client's
/// close reply, so the client reads the code instead of a reset.
pub fn close_blocking(mut ws: WebSocket<ClientStream>, close: Close, reason: &str) {
    let _ = ws.get_ref().socket().set_read_timeout(Some(close.grace()));
    if ws.close(Some(close.frame(Some(reason)))).is_err() {
        return;
    }
    // Bounded: a close handshake needs one frame back; stop after a few or at the timeout.
    for _ in 0..16 {
        if ws.read().is_err() {
            return;
        }
    }
}

/// With CORS origins configured, a browser (which sends `Origin`) must come from one
/// of them; clients without `Origin` (wscat, services) are unaffected.
fn origin_allowed(allowed: &[String], origin: Option<&str>) -> bool {
    match origin {
        Some(origin) if !allowed.is_empty() => allowed.iter().any(|a| a == origin || a == "*"),
        _ => true,
    }
}

/// A stream whose reads give up at a fixed deadline.
struct Deadline {
    stream: TcpStream,
    deadline: Instant,
}

impl Read for Deadline {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "handshake deadline passed",
            ));
        }
        self.stream.set_read_timeout(Some(left))?;
        self.stream.read(buf)
    }
}

impl Write for Deadline {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.stream.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.stream.flush()
    }
}
