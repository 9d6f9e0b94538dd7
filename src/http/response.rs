//! A response and its bytes on the wire: status line, headers, `Content-Length`,
//! `Date` and `Connection`, then the body, in one buffer so it leaves in one write.

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

/// A handler's answer: status, body and headers (JSON unless said otherwise).
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// A response whose body is already JSON text.
    pub fn json_text(status: u16, body: String) -> Response {
        Response {
            status,
            content_type: "application/json",
            headers: Vec::new(),
            body: body.into_bytes(),
        }
    }

    pub fn json(status: u16, value: &serde_json::Value) -> Response {
        Response::json_text(status, value.to_string())
    }

    pub fn ok(value: &serde_json::Value) -> Response {
        Response::json(200, value)
    }

    /// The error body of the contract: `{"error":{"code":…,"message":…}}`.
    pub fn error(status: u16, code: &str, message: &str) -> Response {
        Response::json(
            status,
            &serde_json::json!({"error": {"code": code, "message": message}}),
        )
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Response {
        self.headers.push((name, value.into()));
        self
    }

    /// Appends the response to `out` as HTTP/1.1 bytes. `keep_alive` says whether the
    /// connection stays open; `head_only` leaves the body out (an answer to HEAD).
    pub fn write_to(&self, out: &mut Vec<u8>, keep_alive: bool, head_only: bool) {
        use std::io::Write;
        out.reserve(256 + self.body.len());
        // Writing into a Vec cannot fail.
        let _ = write!(
            out,
            "HTTP/1.1 {} {}\r\nDate: {}\r\n",
            self.status,
            reason(self.status),
            http_date()
        );
        // RFC 9110 §8.6: no length (and no body) on a 204.
        if self.status != 204 {
            let _ = write!(
                out,
                "Content-Type: {}\r\nContent-Length: {}\r\n",
                self.content_type,
                self.body.len()
            );
        }
        for (name, value) in &self.headers {
            let _ = write!(out, "{name}: {value}\r\n");
        }
        out.extend_from_slice(if keep_alive {
            b"Connection: keep-alive\r\n\r\n"
        } else {
            b"Connection: close\r\n\r\n"
        });
        if !head_only && self.status != 204 {
            out.extend_from_slice(&self.body);
        }
    }
}

/// The reason phrase of each status notifd sends.
fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        417 => "Expectation Failed",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

/// Today's `Date` value (RFC 9110 §5.6.7), formatted once a second per thread.
fn http_date() -> String {
    thread_local! {
        static CACHE: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    CACHE.with(|cache| {
        let mut cache = cache.borrow_mut();
        if cache.0 != now {
            let format = time::macros::format_description!(
                "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
            );
            let text = time::OffsetDateTime::from_unix_timestamp(now as i64)
                .ok()
                .and_then(|t| t.format(&format).ok())
                .unwrap_or_default();
            *cache = (now, text);
        }
        cache.1.clone()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_form() {
        let mut out = Vec::new();
        Response::json_text(201, "{}".into())
            .with_header("X-A", "b")
            .write_to(&mut out, true, false);
        let text = String::from_utf8(out).expect("ascii");
        assert!(text.starts_with("HTTP/1.1 201 Created\r\nDate: "), "{text}");
        assert!(text.ends_with(
            "Content-Type: application/json\r\nContent-Length: 2\r\nX-A: b\r\nConnection: keep-alive\r\n\r\n{}"
        ), "{text}");
        assert!(text.contains(" GMT\r\n"), "{text}");
    }

    #[test]
    fn no_content_has_no_length_and_head_no_body() {
        let mut out = Vec::new();
        Response::json_text(204, String::new()).write_to(&mut out, false, false);
        let text = String::from_utf8(out).expect("ascii");
        assert!(!text.contains("Content-Length"), "{text}");
        let mut out = Vec::new();
        Response::json_text(200, "{}".into()).write_to(&mut out, false, true);
        let text = String::from_utf8(out).expect("ascii");
        assert!(
            text.ends_with("Content-Length: 2\r\nConnection: close\r\n\r\n"),
            "{text}"
        );
    }
}
