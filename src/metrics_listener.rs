//! `/metrics` on an address of its own (`NOTIFD_METRICS_ADDR`), so that the public
//! REST port need not expose it: one thread answering one scrape at a time.
//!
//! A scrape is one small GET a few times a minute from a private network, so this is
//! plain HTTP/1.1 on one thread rather than a second REST front with its own
//! workers: each request is answered and its connection closed; reads and writes have
//! a deadline, and the request head is bounded. Serves what `metrics` renders.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::metrics::METRICS;
use crate::shutdown::Shutdown;

/// How often the accept loop looks at the shutdown signal.
const ACCEPT_TICK: Duration = Duration::from_millis(250);
/// How long a scraper may take to send its request or read the answer.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);
const TEXT: &str = "text/plain";
/// Longest request head read; a scrape's is a few hundred bytes.
const MAX_HEAD: usize = 8 * 1024;
/// What is read and dropped after refusing an over-long head, and for how long.
const MAX_DRAIN: u64 = 64 * 1024;
const DRAIN_TIMEOUT: Duration = Duration::from_millis(500);

/// Binds `addr` and serves `/metrics` there until `shutdown` fires.
pub fn spawn(addr: SocketAddr, shutdown: Shutdown) -> io::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = crate::net::listen(addr)?;
    // A receive timeout on a listener bounds `accept()`: the loop wakes to see the
    // shutdown signal.
    socket2::SockRef::from(&listener).set_read_timeout(Some(ACCEPT_TICK))?;
    let bound = listener.local_addr()?;
    let stopped = shutdown.clone();
    let thread = crate::supervise::spawn_essential(
        "notifd-metrics",
        256 * 1024,
        move || stopped.is_fired(),
        move || serve(&listener, &shutdown),
    )?;
    Ok((bound, thread))
}

fn serve(listener: &TcpListener, shutdown: &Shutdown) {
    while !shutdown.is_fired() {
        match listener.accept() {
            Ok((stream, _)) => {
                if let Err(err) = answer(stream) {
                    log::debug!(error = err.to_string().as_str(); "metrics request failed");
                }
            }
            Err(err)
                if matches!(
                    err.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) => {}
            Err(err) => {
                log::warn!(error = err.to_string().as_str(); "metrics accept failed");
                // Out of descriptors, most likely: back off instead of spinning.
                std::thread::sleep(ACCEPT_TICK);
            }
        }
    }
}

/// Reads one request head and answers it: `GET /metrics` gets the metrics, any other
/// path 404, any other method 405, a head over `MAX_HEAD` 431.
fn answer(mut stream: TcpStream) -> io::Result<()> {
    stream.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    stream.set_write_timeout(Some(CLIENT_TIMEOUT))?;
    let Some(head) = read_head(&mut stream)? else {
        respond(
            &mut stream,
            "431 Request Header Fields Too Large",
            TEXT,
            "",
            "request head too long\n",
        )?;
        // Closing with unread input would reset the connection, and the client could
        // lose the answer: finish sending, then drop a bounded amount of what is left.
        stream.shutdown(std::net::Shutdown::Write)?;
        stream.set_read_timeout(Some(DRAIN_TIMEOUT))?;
        let _ = io::copy(&mut (&stream).take(MAX_DRAIN), &mut io::sink());
        return Ok(());
    };
    let mut request_line = head
        .split(|&b| b == b'\r')
        .next()
        .unwrap_or(&[])
        .split(|&b| b == b' ');
    let method = request_line.next().unwrap_or(&[]);
    let target = request_line.next().unwrap_or(&[]);
    let path = target.split(|&b| b == b'?').next().unwrap_or(&[]);
    let (status, content_type, extra, body) = match (method, path) {
        (b"GET", b"/metrics") => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            "",
            METRICS.render(),
        ),
        (b"GET", _) => ("404 Not Found", TEXT, "", "only /metrics here\n".into()),
        _ => (
            "405 Method Not Allowed",
            TEXT,
            "Allow: GET\r\n",
            "GET only\n".into(),
        ),
    };
    respond(&mut stream, status, content_type, extra, &body)
}

/// Writes a whole response; `extra` holds further header lines, each ending in CRLF.
fn respond(
    stream: &mut TcpStream,
    status: &str,
    content_type: &str,
    extra: &str,
    body: &str,
) -> io::Result<()> {
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes())?;
    stream.flush()
}

/// The request up to its blank line; `None` when it runs past `MAX_HEAD` bytes.
fn read_head(stream: &mut TcpStream) -> io::Result<Option<Vec<u8>>> {
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() >= MAX_HEAD {
            return Ok(None);
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        head.extend_from_slice(&chunk[..n]);
    }
    Ok(Some(head))
}
