//! The Redis protocol (RESP2), as far as a sharded subscriber speaks it: commands out,
//! and replies and pushes in (simple strings, errors, integers, bulk strings, arrays).
//!
//! notifd's own because the redis crate's parser keeps bytes it read ahead in a buffer
//! of its own, which a `poll` on the socket cannot see; reading from a `BufRead`
//! whose buffer notifd can inspect lets one thread wait on every shard's socket at
//! once without missing a message already read. Every size is bounded.

use std::io::{self, BufRead, Read};

/// Longest line (a type byte, a number or a short status) accepted.
const MAX_LINE: u64 = 1024;
/// Largest bulk string: a notification is at most 64 KiB (contract §1); state
/// messages are smaller; room to spare.
const MAX_BULK: usize = 1024 * 1024;
/// Most elements of one array (pushes and replies have three or four).
const MAX_ITEMS: usize = 64;
/// Deepest nesting (pushes are flat arrays).
const MAX_DEPTH: usize = 2;

/// One value read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resp {
    Simple(String),
    Error(String),
    Int(i64),
    /// `None`: the null bulk string.
    Bulk(Option<Vec<u8>>),
    /// `None`: the null array.
    Array(Option<Vec<Resp>>),
}

impl Resp {
    /// The text of a bulk or simple string.
    pub fn text(&self) -> Option<&str> {
        match self {
            Resp::Bulk(Some(bytes)) => std::str::from_utf8(bytes).ok(),
            Resp::Simple(text) => Some(text),
            _ => None,
        }
    }
}

/// A command as RESP: an array of bulk strings.
pub fn command(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Reads one whole value (blocking until it is complete, or the socket's timeout).
pub fn read(reader: &mut impl BufRead) -> io::Result<Resp> {
    read_at(reader, 0)
}

fn read_at(reader: &mut impl BufRead, depth: usize) -> io::Result<Resp> {
    let line = line(reader)?;
    let (kind, rest) = line.split_at(1);
    Ok(match kind {
        "+" => Resp::Simple(rest.to_string()),
        "-" => Resp::Error(rest.to_string()),
        ":" => Resp::Int(number(rest)?),
        "$" => match number(rest)? {
            -1 => Resp::Bulk(None),
            len if len < 0 || len as usize > MAX_BULK => return Err(bad("bulk string length")),
            len => {
                let mut bytes = vec![0; len as usize + 2];
                reader.read_exact(&mut bytes)?;
                if !bytes.ends_with(b"\r\n") {
                    return Err(bad("bulk string end"));
                }
                bytes.truncate(len as usize);
                Resp::Bulk(Some(bytes))
            }
        },
        "*" => match number(rest)? {
            -1 => Resp::Array(None),
            n if n < 0 || n as usize > MAX_ITEMS || depth >= MAX_DEPTH => {
                return Err(bad("array size or depth"))
            }
            n => {
                let items = (0..n)
                    .map(|_| read_at(reader, depth + 1))
                    .collect::<io::Result<Vec<Resp>>>()?;
                Resp::Array(Some(items))
            }
        },
        _ => return Err(bad("type byte")),
    })
}

/// One CRLF-terminated line, without the CRLF; at least the type byte.
fn line(reader: &mut impl BufRead) -> io::Result<String> {
    let mut bytes = Vec::new();
    reader
        .by_ref()
        .take(MAX_LINE)
        .read_until(b'\n', &mut bytes)?;
    if bytes.is_empty() {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    if bytes.len() < 3 || !bytes.ends_with(b"\r\n") {
        return Err(bad("line"));
    }
    bytes.truncate(bytes.len() - 2);
    String::from_utf8(bytes).map_err(|_| bad("line encoding"))
}

fn number(text: &str) -> io::Result<i64> {
    text.parse().map_err(|_| bad("number"))
}

fn bad(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("redis protocol: bad {what}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_pushes_and_replies_and_refuses_what_it_does_not_bound() {
        let wire = b"*3\r\n$8\r\nsmessage\r\n$2\r\nch\r\n$5\r\nhello\r\n-MOVED 3999 127.0.0.1:7002\r\n:7\r\n";
        let mut reader = &wire[..];
        let push = read(&mut reader).expect("a push");
        let Resp::Array(Some(items)) = push else {
            panic!("an array")
        };
        let texts: Vec<&str> = items.iter().filter_map(Resp::text).collect();
        assert_eq!(texts, ["smessage", "ch", "hello"]);
        assert_eq!(
            read(&mut reader).expect("an error"),
            Resp::Error("MOVED 3999 127.0.0.1:7002".into())
        );
        assert_eq!(read(&mut reader).expect("an int"), Resp::Int(7));
        assert_eq!(
            read(&mut reader).expect_err("the end").kind(),
            io::ErrorKind::UnexpectedEof
        );
        let huge = format!("${}\r\n", MAX_BULK + 1);
        assert!(read(&mut huge.as_bytes()).is_err());
        assert!(
            read(&mut &b"*1\r\n*1\r\n*1\r\n:1\r\n"[..]).is_err(),
            "too deep"
        );
        assert!(read(&mut &b"?x\r\n"[..]).is_err());
        assert_eq!(
            command(&[b"SSUBSCRIBE", b"a:b"]),
            b"*2\r\n$10\r\nSSUBSCRIBE\r\n$3\r\na:b\r\n"
        );
    }
}
