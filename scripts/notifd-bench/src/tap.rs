//! A pattern subscription of the generator's own on notifd's Redis (RESP2 over a
//! plain TCP connection): subscribed to the patterns a notifd before issue 15
//! subscribed to, it receives every message such a notifd received, frame for frame,
//! and counts those messages and their bytes on the wire. The instances scenario
//! divides each instance's figures by it. One server only: a cluster's sharded
//! messages never reach a pattern subscription.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

/// One connect, and the wait for each PSUBSCRIBE's confirmation.
const LIMIT: Duration = Duration::from_secs(5);
/// Longest element of a frame accepted (a notification's JSON is far smaller).
const MAX_ELEMENT: usize = 16 * 1024 * 1024;

/// The running tap; dropping it closes the subscription.
pub struct Tap {
    counts: Arc<Counts>,
    task: JoinHandle<()>,
}

#[derive(Default)]
struct Counts {
    messages: AtomicU64,
    bytes: AtomicU64,
}

/// What the tap received since it started.
#[derive(Clone, Copy, Default)]
pub struct Reading {
    pub messages: u64,
    /// Their RESP frames' bytes, as read from the socket.
    pub bytes: u64,
}

impl Reading {
    pub fn since(self, before: Reading) -> Reading {
        Reading {
            messages: self.messages.saturating_sub(before.messages),
            bytes: self.bytes.saturating_sub(before.bytes),
        }
    }
}

impl Tap {
    /// Subscribes to `patterns` on the Redis at `url` (`redis://host:port[/db]`, on
    /// loopback, no credentials) and counts what arrives until dropped.
    pub async fn start(url: &str, patterns: &[String]) -> Result<Tap, String> {
        let addr = address(url).map_err(|e| format!("tap: {e}"))?;
        let stream = tokio::time::timeout(LIMIT, TcpStream::connect(addr))
            .await
            .map_err(|_| format!("tap: connecting to {addr} timed out"))?
            .map_err(|e| format!("tap: connecting to {addr}: {e}"))?;
        let mut reader = BufReader::new(stream);
        let mut command = format!("*{}\r\n$10\r\nPSUBSCRIBE\r\n", patterns.len() + 1);
        for pattern in patterns {
            command.push_str(&format!("${}\r\n{pattern}\r\n", pattern.len()));
        }
        reader
            .get_mut()
            .write_all(command.as_bytes())
            .await
            .map_err(|e| format!("tap: PSUBSCRIBE: {e}"))?;
        let mut line = String::new();
        for _ in patterns {
            let (kind, _) = tokio::time::timeout(LIMIT, frame(&mut reader, &mut line))
                .await
                .map_err(|_| "tap: no PSUBSCRIBE confirmation in time".to_string())?
                .map_err(|e| format!("tap: PSUBSCRIBE: {e}"))?;
            if kind != "psubscribe" {
                return Err(format!("tap: PSUBSCRIBE answered {kind:?}"));
            }
        }
        let counts = Arc::new(Counts::default());
        let task = tokio::spawn(count(reader, counts.clone()));
        Ok(Tap { counts, task })
    }

    pub fn reading(&self) -> Reading {
        Reading {
            messages: self.counts.messages.load(Ordering::Acquire),
            bytes: self.counts.bytes.load(Ordering::Acquire),
        }
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Counts every `pmessage` frame until the connection ends (or the tap is dropped).
async fn count(mut reader: BufReader<TcpStream>, counts: Arc<Counts>) {
    let mut line = String::new();
    while let Ok((kind, bytes)) = frame(&mut reader, &mut line).await {
        if kind == "pmessage" {
            counts.bytes.fetch_add(bytes, Ordering::AcqRel);
            counts.messages.fetch_add(1, Ordering::AcqRel);
        }
    }
    eprintln!("notifd-bench: tap: the Redis connection ended");
}

/// One RESP2 array of bulk strings and integers (a push frame or a confirmation):
/// its first element and its size in bytes.
async fn frame(reader: &mut BufReader<TcpStream>, line: &mut String) -> io::Result<(String, u64)> {
    let mut bytes = read_line(reader, line).await?;
    let elements: usize = header(line, '*')?;
    let mut kind = String::new();
    for i in 0..elements {
        bytes += read_line(reader, line).await?;
        if line.starts_with(':') {
            continue;
        }
        let len: usize = header(line, '$')?;
        if len > MAX_ELEMENT {
            return Err(io::Error::other("tap: element too large"));
        }
        let mut element = vec![0u8; len + 2];
        reader.read_exact(&mut element).await?;
        bytes += element.len() as u64;
        if i == 0 {
            kind = String::from_utf8_lossy(&element[..len]).into_owned();
        }
    }
    Ok((kind, bytes))
}

async fn read_line(reader: &mut BufReader<TcpStream>, line: &mut String) -> io::Result<u64> {
    line.clear();
    match reader.read_line(line).await? {
        0 => Err(io::Error::new(io::ErrorKind::UnexpectedEof, "tap: EOF")),
        n => Ok(n as u64),
    }
}

/// The number after `mark` in a RESP header line (`*3`, `$42`).
fn header(line: &str, mark: char) -> io::Result<usize> {
    line.trim_end()
        .strip_prefix(mark)
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| io::Error::other(format!("tap: unexpected {:?}", line.trim_end())))
}

/// The loopback address of a `redis://host[:port][/db]` URL.
pub fn address(url: &str) -> Result<SocketAddr, String> {
    let rest = url
        .strip_prefix("redis://")
        .ok_or("NOTIFD_REDIS_URL is not redis:// (one server; a cluster has no pattern tap)")?;
    let host_port = rest.split('/').next().unwrap_or("");
    if host_port.contains('@') {
        return Err("a Redis URL with credentials is not supported".into());
    }
    let with_port = if host_port.contains(':') {
        host_port.to_string()
    } else {
        format!("{host_port}:6379")
    };
    let addr = with_port
        .to_socket_addrs()
        .map_err(|e| format!("{with_port}: {e}"))?
        .find(|a| a.ip().is_loopback())
        .ok_or("Redis is not on loopback; traffic stays on 127.0.0.1")?;
    Ok(addr)
}
