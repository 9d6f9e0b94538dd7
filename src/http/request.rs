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

impl Head {
    /// The first value of a header, if present and UTF-8 (a value with other bytes,
    /// RFC 9110's obs-text, is kept by the parse but is not text to any handler).
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The path of the target, without the query string.
    pub fn path(&self) -> &str {
        let target = origin_form(&self.target);
        target.split_once('?').map_or(target, |(path, _)| path)
    }
}

/// The path-and-query of a target: an absolute-form target (`http://host/path`,
/// which proxies send and RFC 9112 §3.2.2 says servers accept) loses its scheme and
/// authority.
fn origin_form(target: &str) -> &str {
    let Some((scheme, rest)) = target.split_once("://") else {
        return target;
    };
    if !(scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https")) {
        return target;
    }
    rest.find('/').map_or("/", |at| &rest[at..])
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
        self.head.path()
    }

    /// The raw query string (after `?`), if any.
    pub fn query(&self) -> Option<&str> {
        origin_form(&self.head.target)
            .split_once('?')
            .map(|(_, query)| query)
    }

    /// The first value of a header (see `Head::header`).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.header(name)
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
    let status = request
        .parse(bytes)
        .map_err(|err| refusal_for(err, bytes))?;
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
    let framing = framing(&headers)?;
    let head = Head {
        method: method.to_string(),
        target: target.to_string(),
        minor_version,
        framing,
        // An HTTP/1.0 body with a transfer coding is framed in a way 1.0 did not
        // know: serve it, then close (RFC 9112 §6.1).
        keep_alive: keep_alive(&headers, minor_version)
            && !(minor_version == 0 && framing == Framing::Chunked),
        expects_continue: expects_continue(&headers)?,
        headers,
    };
    let hosts = head
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("Host"))
        .count();
    if hosts > 1 {
        return Err(Refusal::bad_request("more than one Host header"));
    }
    if minor_version == 1 && hosts == 0 {
        return Err(Refusal::bad_request("HTTP/1.1 requests need a Host header"));
    }
    Ok(Parse::Head(head, len))
}

fn refusal_for(err: httparse::Error, bytes: &[u8]) -> Refusal {
    match err {
        // 505 is for HTTP of another version; anything else in that place is a 400.
        httparse::Error::Version if names_http_version(bytes) => Refusal::version(),
        httparse::Error::Version => Refusal::bad_request("malformed HTTP version"),
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

/// True when the request line's third word looks like `HTTP/x.y`.
fn names_http_version(bytes: &[u8]) -> bool {
    let line = bytes.split(|&b| b == b'\n').next().unwrap_or_default();
    line.split(|&b| b == b' ')
        .filter(|word| !word.is_empty())
        .nth(2)
        .is_some_and(|version| version.starts_with(b"HTTP/"))
}

/// The body framing, refusing every ambiguous shape (RFC 9112 §6.3): both
/// `Content-Length` and `Transfer-Encoding`, differing lengths, a coding other than
/// a single `chunked`.
fn framing(headers: &[(String, Vec<u8>)]) -> Result<Framing, Refusal> {
    let mut length: Option<usize> = None;
    let mut encodings = Vec::new();
    let mut has_transfer_encoding = false;
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
            has_transfer_encoding = true;
            encodings.extend(
                value
                    .split(|&b| b == b',')
                    .map(|item| item.trim_ascii().to_ascii_lowercase())
                    .filter(|item| !item.is_empty()),
            );
        }
    }
    if has_transfer_encoding && length.is_some() {
        return Err(Refusal::bad_request(
            "both Content-Length and Transfer-Encoding: send one of them",
        ));
    }
    if has_transfer_encoding && encodings.is_empty() {
        return Err(Refusal::bad_request("an empty Transfer-Encoding"));
    }
    if !has_transfer_encoding {
        return Ok(match length {
            None | Some(0) => Framing::None,
            Some(n) => Framing::Length(n),
        });
    }
    match encodings.as_slice() {
        [only] if only.as_slice() == b"chunked" => Ok(Framing::Chunked),
        _ if encodings.iter().any(|e| e.as_slice() == b"chunked") => Err(Refusal::bad_request(
            "Transfer-Encoding: chunked must be the only coding",
        )),
        _ => Err(Refusal::not_implemented(
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
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\nContent-Length: 2\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \r\n\r\n",
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
        assert_eq!(status("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"), 400);
        assert_eq!(status("GET / HTTX/1.1\r\nHost: a\r\n\r\n"), 400);
        let h = head("GET http://example.com/x?y=1 HTTP/1.1\r\nHost: a\r\n\r\n").expect("ok");
        assert_eq!(h.path(), "/x");
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
