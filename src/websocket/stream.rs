//! The socket under a live `WebSocket`, as far as notifd must see it outside
//! tungstenite: where the client's frames begin (a socket is lent only between
//! frames, see `lending`), a length RFC 6455 forbids, and the bytes a borrower left
//! half written, which must go out before anything else.

use std::io::{self, Cursor, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;

use tungstenite::protocol::frame::FrameHeader;

/// Longest frame header a client may send: a 64-bit length and the mask.
const MAX_HEADER: usize = 14;
/// Longest length a frame header may declare: the 64-bit form's top bit must be 0.
const MAX_PAYLOAD_LENGTH: u64 = i64::MAX as u64;

/// Passes everything through to the socket and follows the frame boundaries of what
/// it reads.
pub struct ClientStream {
    socket: Arc<TcpStream>,
    cursor: FrameCursor,
    /// Bytes that must go out before anything else: the rest of a frame a borrower
    /// wrote only in part.
    unsent: Vec<u8>,
}

impl ClientStream {
    pub fn new(socket: TcpStream) -> ClientStream {
        ClientStream {
            socket: Arc::new(socket),
            cursor: FrameCursor::default(),
            unsent: Vec::new(),
        }
    }

    /// The socket, shared with whoever may borrow it.
    pub fn socket(&self) -> &Arc<TcpStream> {
        &self.socket
    }

    /// Queues bytes to go out before anything written from now on.
    pub fn push_unsent(&mut self, bytes: Vec<u8>) {
        self.unsent.extend_from_slice(&bytes);
    }

    pub fn has_unsent(&self) -> bool {
        !self.unsent.is_empty()
    }

    /// True when everything read so far ends with a whole frame: tungstenite, having
    /// read until the socket would block, then holds no bytes of its own.
    pub fn at_frame_start(&self) -> bool {
        self.cursor.at_frame_start()
    }

    /// True once a frame header declared a 64-bit length with its most significant
    /// bit set, which RFC 6455 §5.2 forbids (tungstenite takes it for a size).
    pub fn saw_invalid_length(&self) -> bool {
        self.cursor.invalid_length
    }

    /// Sends the unsent bytes; `WouldBlock` while some remain, so that nothing
    /// written after them can overtake them.
    fn send_unsent(&mut self) -> io::Result<()> {
        while !self.unsent.is_empty() {
            match (&*self.socket).write(&self.unsent)? {
                0 => return Err(io::ErrorKind::WriteZero.into()),
                n => drop(self.unsent.drain(..n)),
            }
        }
        Ok(())
    }
}

impl Read for ClientStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = (&*self.socket).read(buf)?;
        self.cursor.advance(&buf[..n]);
        Ok(n)
    }
}

impl Write for ClientStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.send_unsent()?;
        (&*self.socket).write(buf)
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        self.send_unsent()?;
        (&*self.socket).write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send_unsent()?;
        (&*self.socket).flush()
    }
}

/// Where the reader stands in the client's frames: inside a header (its bytes so
/// far) or inside a payload (how many bytes left).
#[derive(Debug, Default)]
struct FrameCursor {
    header: [u8; MAX_HEADER],
    header_seen: usize,
    payload_left: u64,
    /// A header declared a length with the top bit set (the cursor then sees the rest
    /// of the stream as that frame's payload; the connection is failed anyway).
    invalid_length: bool,
    /// A header tungstenite refuses (a reserved opcode): the connection is failed,
    /// and no later byte stands at a frame start.
    unreadable: bool,
}

impl FrameCursor {
    fn at_frame_start(&self) -> bool {
        self.header_seen == 0 && self.payload_left == 0 && !self.unreadable
    }

    fn advance(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() && !self.unreadable {
            if self.payload_left > 0 {
                let skip = self.payload_left.min(bytes.len() as u64);
                self.payload_left -= skip;
                bytes = &bytes[skip as usize..];
                continue;
            }
            let take = (MAX_HEADER - self.header_seen).min(bytes.len());
            self.header[self.header_seen..self.header_seen + take].copy_from_slice(&bytes[..take]);
            let known = &self.header[..self.header_seen + take];
            let mut cursor = Cursor::new(known);
            match FrameHeader::parse(&mut cursor) {
                Ok(Some((_, length))) => {
                    let used = cursor.position() as usize - self.header_seen;
                    bytes = &bytes[used..];
                    self.header_seen = 0;
                    self.payload_left = length;
                    self.invalid_length |= length > MAX_PAYLOAD_LENGTH;
                }
                // Not all of the header yet: every byte given is part of it.
                Ok(None) => {
                    self.header_seen += take;
                    bytes = &bytes[take..];
                }
                Err(_) => self.unreadable = true,
            }
        }
    }
}

/// A masked client frame (the mask is zeros: nothing here unmasks), whose payload
/// bytes look like pongs' first bytes.
#[cfg(test)]
pub(crate) fn client_frame(first: u8, payload: usize) -> Vec<u8> {
    let mut bytes = vec![first];
    match payload {
        0..=125 => bytes.push(0x80 | payload as u8),
        126..=0xFFFF => {
            bytes.push(0x80 | 126);
            bytes.extend_from_slice(&(payload as u16).to_be_bytes());
        }
        _ => {
            bytes.push(0x80 | 127);
            bytes.extend_from_slice(&(payload as u64).to_be_bytes());
        }
    }
    bytes.extend_from_slice(&[0; 4]);
    bytes.extend(std::iter::repeat_n(0x8A, payload));
    bytes
}

#[cfg(test)]
mod tests {
    use super::client_frame as frame;
    use super::*;

    #[test]
    fn the_cursor_finds_frame_starts_however_the_bytes_are_split() {
        let lengths = [5, 300, 70_000, 0];
        let mut stream = Vec::new();
        let mut ends = Vec::new();
        for (first, len) in [0x81, 0x82, 0x81, 0x8A].into_iter().zip(lengths) {
            stream.extend(frame(first, len));
            ends.push(stream.len());
        }
        for chunk in [1, 3, 7, 64, 4096, stream.len()] {
            let mut cursor = FrameCursor::default();
            let mut read = 0;
            for piece in stream.chunks(chunk) {
                cursor.advance(piece);
                read += piece.len();
                assert_eq!(
                    cursor.at_frame_start(),
                    ends.contains(&read),
                    "chunks of {chunk}, after {read} bytes"
                );
            }
        }
    }

    #[test]
    fn the_cursor_notices_a_length_with_its_top_bit_set() {
        let mut cursor = FrameCursor::default();
        cursor.advance(&frame(0x82, 70_000));
        assert!(!cursor.invalid_length);
        let mut header = vec![0x82, 0x80 | 127];
        header.extend_from_slice(&(1u64 << 63).to_be_bytes());
        header.extend_from_slice(&[0; 4]);
        cursor.advance(&header);
        assert!(cursor.invalid_length);
    }
}
