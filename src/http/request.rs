//! One request as a handler sees it, and the parse of its head with every protocol
//! rule of contract §4 ("Protocol"): versions, the head's size and bytes, and the
//! body framing rules that keep request smuggling out.

use std::net::SocketAddr;

use super::refusal::Refusal;

/// Longest request head (request line and headers), in bytes (contract §4: 431).
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Most header fields one request may carry.
const MAX_HEADERS: usize = 100;

/// How the body of a request is delimited (RFC 9112 §6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    None,
    /// `Content-Length` bytes.
    Length(usize),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// A parsed request head.
#[derive(Debug)]
pub struct Head {
    pub method: String,
    pub target: String,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    pub headers: Vec<(String, Vec<u8>)>,
    pub framing: Framing,
    /// The client wants the connection kept open after the response.
    pub keep_alive: bool,
    /// The client waits for `100 Continue` before it sends the body.
    pub expects_continue: bool,
}

/// A whole request, body included (bodies are bounded, so they live in memory).
#[derive(Debug)]
pub struct Request {
    pub head: Head,
    pub body: Vec<u8>,
    pub peer: SocketAddr,
}

impl Request {
    pub fn method(&self) -> &str {
        &self.head.method
    }

    /// The path, without the query string.
    pub fn path(&self) -> &str {
        let target = &self.head.target;
        target.split_once('?').map_or(target, |(path, _)| path)
    }

    /// The raw query string (after `?`), if any.
    pub fn query(&self) -> Option<&str> {
        self.head.target.split_once('?').map(|(_, query)| query)
    }

    /// The first value of a header, if present and UTF-8 (a value with other bytes,
    /// RFC 9110's obs-text, is kept by the parse but is not text to any handler).
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.head.headers, name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// True when the request carried a body of at least one byte.
    pub fn has_body(&self) -> bool {
        !self.body.is_empty()
    }
}

/// The first value of header `name` (case-insensitive).
fn header<'h>(headers: &'h [(String, Vec<u8>)], name: &str) -> Option<&'h [u8]> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_slice())
}

/// What the bytes received so far hold.
#[derive(Debug)]
pub enum Parse {
    /// Not a whole head yet.
    Partial,
    /// A whole head of `len` bytes.
    Head(Head, usize),
}

/// Parses the head at the start of `bytes` (at most `MAX_HEAD_BYTES` of it).
pub fn parse_head(bytes: &[u8]) -> Result<Parse, Refusal> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let status = request.parse(bytes).map_err(refusal_for)?;
    let len = match status {
        httparse::Status::Partial if bytes.len() >= MAX_HEAD_BYTES => {
            return Err(Refusal::head_too_large())
        }
        httparse::Status::Partial => return Ok(Parse::Partial),
        httparse::Status::Complete(len) if len > MAX_HEAD_BYTES => {
            return Err(Refusal::head_too_large())
        }
        httparse::Status::Complete(len) => len,
    };
    let (Some(method), Some(target), Some(minor_version)) =
        (request.method, request.path, request.version)
    else {
        return Err(Refusal::bad_request("incomplete request line"));
    };
    // httparse lets bytes above 0x7E through in the target; RFC 9112 does not.
    if !target.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Refusal::bad_request(
            "the request target holds bytes outside visible ASCII (percent-encode them)",
        ));
    }
    let headers: Vec<(String, Vec<u8>)> = request
        .headers
        .iter()
        .map(|h| (h.name.to_string(), h.value.to_vec()))
        .collect();
    let head = Head {
        method: method.to_string(),
        target: target.to_string(),
        minor_version,
        framing: framing(&headers)?,
        keep_alive: keep_alive(&headers, minor_version),
        expects_continue: expects_continue(&headers)?,
        headers,
    };
    if minor_version == 1 && header(&head.headers, "Host").is_none() {
        return Err(Refusal::bad_request("HTTP/1.1 requests need a Host header"));
    }
    Ok(Parse::Head(head, len))
}

fn refusal_for(err: httparse::Error) -> Refusal {
    match err {
        httparse::Error::Version => Refusal::version(),
        httparse::Error::TooManyHeaders => Refusal::head_too_large(),
        httparse::Error::HeaderName => {
            Refusal::bad_request("a header name holds a byte that is not a token character")
        }
        httparse::Error::HeaderValue => {
            Refusal::bad_request("a header value holds a control character")
        }
        other => Refusal::bad_request(format!("malformed request head: {other}")),
    }
}

/// The body framing, refusing every ambiguous shape (RFC 9112 §6.3): both
/// `Content-Length` and `Transfer-Encoding`, differing lengths, a coding other than
/// a single `chunked`.
fn framing(headers: &[(String, Vec<u8>)]) -> Result<Framing, Refusal> {
    let mut length: Option<usize> = None;
    let mut encodings = Vec::new();
    for (name, value) in headers {
        if name.eq_ignore_ascii_case("Content-Length") {
            // A list of one repeated value ("5, 5") is the same length (RFC 9110 §8.6).
            for item in value.split(|&b| b == b',') {
                let n = parse_length(item.trim_ascii())?;
                if length.is_some_and(|seen| seen != n) {
                    return Err(Refusal::bad_request("two different Content-Length values"));
                }
                length = Some(n);
            }
        } else if name.eq_ignore_ascii_case("Transfer-Encoding") {
            encodings.extend(
                value
                    .split(|&b| b == b',')
                    .map(|item| item.trim_ascii().to_ascii_lowercase())
                    .filter(|item| !item.is_empty()),
            );
        }
    }
    match (length, encodings.as_slice()) {
        (Some(_), [_, ..]) => Err(Refusal::bad_request(
            "both Content-Length and Transfer-Encoding: send one of them",
        )),
        (Some(0), []) | (None, []) => Ok(Framing::None),
        (Some(n), []) => Ok(Framing::Length(n)),
        (None, [only]) if only.as_slice() == b"chunked" => Ok(Framing::Chunked),
        (None, _) if encodings.iter().any(|e| e.as_slice() == b"chunked") => Err(
            Refusal::bad_request("Transfer-Encoding: chunked must be the only coding"),
        ),
        (None, _) => Err(Refusal::not_implemented(
            "Transfer-Encoding: only chunked is supported",
        )),
    }
}

fn parse_length(text: &[u8]) -> Result<usize, Refusal> {
    let bad = || Refusal::bad_request("Content-Length is not a whole number of bytes");
    if text.is_empty() || text.len() > 18 || !text.iter().all(u8::is_ascii_digit) {
        return Err(bad());
    }
    std::str::from_utf8(text)
        .ok()
        .and_then(|t| t.parse().ok())
        .ok_or_else(bad)
}

/// HTTP/1.1 keeps the connection unless told `close`; HTTP/1.0 closes it unless told
/// `keep-alive` (RFC 9112 §9.3).
fn keep_alive(headers: &[(String, Vec<u8>)], minor_version: u8) -> bool {
    let has = |token: &[u8]| {
        headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("Connection"))
            .flat_map(|(_, v)| v.split(|&b| b == b','))
            .any(|item| item.trim_ascii().eq_ignore_ascii_case(token))
    };
    if minor_version == 0 {
        has(b"keep-alive")
    } else {
        !has(b"close")
    }
}

/// `Expect: 100-continue` (case-insensitive); any other expectation is a 417.
fn expects_continue(headers: &[(String, Vec<u8>)]) -> Result<bool, Refusal> {
    match header(headers, "Expect") {
        None => Ok(false),
        Some(value) if value.trim_ascii().eq_ignore_ascii_case(b"100-continue") => Ok(true),
        Some(_) => Err(Refusal::expectation_failed()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(raw: &str) -> Result<Head, Refusal> {
        match parse_head(raw.as_bytes())? {
            Parse::Head(head, len) => {
                assert_eq!(len, raw.len());
                Ok(head)
            }
            Parse::Partial => panic!("partial: {raw:?}"),
        }
    }

    fn status(raw: &str) -> u16 {
        head(raw).expect_err("refused").status
    }

    #[test]
    fn framing_rules() {
        let h = head("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n").expect("ok");
        assert_eq!(h.framing, Framing::Length(5));
        let h = head("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n").expect("ok");
        assert_eq!(h.framing, Framing::Length(5));
        let h =
            head("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n").expect("ok");
        assert_eq!(h.framing, Framing::Chunked);
        for refused in [
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
        ] {
            assert_eq!(status(refused), 400, "{refused:?}");
        }
        assert_eq!(
            status("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n"),
            501
        );
    }

    #[test]
    fn versions_bytes_and_sizes() {
        assert_eq!(status("GET / HTTP/2.0\r\n\r\n"), 505);
        assert_eq!(status("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), 505);
        assert_eq!(status("GET / HTTP/1.2\r\nHost: a\r\n\r\n"), 505);
        assert_eq!(status("GET /caf\u{e9} HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
        assert_eq!(
            status("GET / HTTP/1.1\r\nX-Caf\u{e9}: 1\r\nHost: a\r\n\r\n"),
            400
        );
        assert_eq!(status("GET / HTTP/1.1\r\n\r\n"), 400, "no Host");
        assert_eq!(
            status("GET / HTTP/1.1\r\nHost: a\r\nExpect: magic\r\n\r\n"),
            417
        );
        let h = head("GET /x?y=1 HTTP/1.1\r\nHost: a\r\nX-Note: caf\u{e9}\r\n\r\n").expect("ok");
        assert_eq!(h.headers[1].1, "café".as_bytes());
        let huge = format!(
            "GET / HTTP/1.1\r\nHost: a\r\nX: {}",
            "a".repeat(MAX_HEAD_BYTES)
        );
        assert_eq!(
            parse_head(huge.as_bytes()).expect_err("too large").status,
            431
        );
    }

    #[test]
    fn keep_alive_by_version() {
        assert!(
            head("GET / HTTP/1.1\r\nHost: a\r\n\r\n")
                .expect("ok")
                .keep_alive
        );
        assert!(
            !head("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
                .expect("ok")
                .keep_alive
        );
        assert!(!head("GET / HTTP/1.0\r\n\r\n").expect("ok").keep_alive);
        assert!(
            head("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n")
                .expect("ok")
                .keep_alive
        );
    }
}
