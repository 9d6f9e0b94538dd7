//! A minimal HTTP/1.1 keep-alive client over a tokio `TcpStream`: one request at a
//! time, `Content-Length` and chunked responses, reconnect when the server closed.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// notifd closes keep-alive connections silent for NOTIFD_HTTP_TIMEOUT (15 s by
/// default): reconnect before that instead of racing its close.
const MAX_IDLE: Duration = Duration::from_secs(5);
/// Longest wait for one response.
const REQUEST_LIMIT: Duration = Duration::from_secs(15);
/// Largest response body accepted.
const MAX_BODY: usize = 16 * 1024 * 1024;

pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

pub struct HttpConn {
    addr: SocketAddr,
    stream: Option<BufReader<TcpStream>>,
    last_used: Instant,
    request: Vec<u8>,
    line: String,
}

impl HttpConn {
    pub fn new(addr: SocketAddr) -> HttpConn {
        HttpConn {
            addr,
            stream: None,
            last_used: Instant::now(),
            request: Vec::with_capacity(1024),
            line: String::with_capacity(256),
        }
    }

    /// Makes sure a fresh-enough connection is open, so the next request's timing does
    /// not include a connect.
    pub async fn ready(&mut self) -> io::Result<()> {
        if self.stream.is_some() && self.last_used.elapsed() > MAX_IDLE {
            self.stream = None;
        }
        if self.stream.is_none() {
            let stream = tokio::time::timeout(REQUEST_LIMIT, TcpStream::connect(self.addr))
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
            stream.set_nodelay(true)?;
            self.stream = Some(BufReader::with_capacity(64 * 1024, stream));
        }
        Ok(())
    }

    /// Sends one request and reads its response. On any error the connection is
    /// dropped (the next call reconnects).
    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        token: &str,
        body: Option<&[u8]>,
    ) -> io::Result<Response> {
        self.ready().await?;
        let result = tokio::time::timeout(REQUEST_LIMIT, self.exchange(method, path, token, body))
            .await
            .unwrap_or_else(|_| {
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no response in time",
                ))
            });
        self.last_used = Instant::now();
        match result {
            Ok((response, keep)) => {
                if !keep {
                    self.stream = None;
                }
                Ok(response)
            }
            Err(err) => {
                self.stream = None;
                Err(err)
            }
        }
    }

    async fn exchange(
        &mut self,
        method: &str,
        path: &str,
        token: &str,
        body: Option<&[u8]>,
    ) -> io::Result<(Response, bool)> {
        use std::io::Write;
        self.request.clear();
        write!(
            self.request,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
        )?;
        if let Some(body) = body {
            write!(
                self.request,
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            )?;
        }
        self.request.extend_from_slice(b"\r\n");
        if let Some(body) = body {
            self.request.extend_from_slice(body);
        }
        let stream = self
            .stream
            .as_mut()
            .ok_or_else(|| io::Error::other("not connected"))?;
        stream.get_mut().write_all(&self.request).await?;

        // Status line.
        self.line.clear();
        if stream.read_line(&mut self.line).await? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed before the response",
            ));
        }
        let status: u16 = self
            .line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| io::Error::other(format!("bad status line {:?}", self.line.trim())))?;
        let http10 = self.line.starts_with("HTTP/1.0");
        // Headers.
        let mut length: Option<usize> = None;
        let mut chunked = false;
        let mut keep = !http10;
        for _ in 0..100 {
            self.line.clear();
            if stream.read_line(&mut self.line).await? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "EOF in headers",
                ));
            }
            let line = self.line.trim_end();
            if line.is_empty() {
                break;
            }
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = value.parse().ok();
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value.to_ascii_lowercase().contains("chunked");
            } else if name.eq_ignore_ascii_case("connection") {
                let value = value.to_ascii_lowercase();
                if value.contains("close") {
                    keep = false;
                } else if value.contains("keep-alive") {
                    keep = true;
                }
            }
        }
        let mut body = Vec::new();
        if chunked {
            loop {
                self.line.clear();
                if stream.read_line(&mut self.line).await? == 0 {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "EOF in chunk"));
                }
                let size_text = self.line.trim().split(';').next().unwrap_or("");
                let size = usize::from_str_radix(size_text, 16)
                    .map_err(|_| io::Error::other("bad chunk size"))?;
                if size == 0 {
                    // Trailers, then the empty line.
                    for _ in 0..100 {
                        self.line.clear();
                        if stream.read_line(&mut self.line).await? == 0
                            || self.line.trim().is_empty()
                        {
                            break;
                        }
                    }
                    break;
                }
                if body.len() + size > MAX_BODY {
                    return Err(io::Error::other("response body too large"));
                }
                let start = body.len();
                body.resize(start + size, 0);
                stream.read_exact(&mut body[start..]).await?;
                let mut crlf = [0u8; 2];
                stream.read_exact(&mut crlf).await?;
            }
        } else if let Some(length) = length {
            if length > MAX_BODY {
                return Err(io::Error::other("response body too large"));
            }
            body.resize(length, 0);
            stream.read_exact(&mut body).await?;
        } else if status >= 200 && status != 204 && status != 304 {
            // No length: the body runs to EOF.
            stream.take(MAX_BODY as u64).read_to_end(&mut body).await?;
            keep = false;
        }
        Ok((Response { status, body }, keep))
    }
}

/// GET without a token: for /readyz while waiting for notifd.
pub async fn get_status(addr: SocketAddr, path: &str) -> io::Result<u16> {
    let mut conn = HttpConn::new(addr);
    conn.request("GET", path, "-", None).await.map(|r| r.status)
}
