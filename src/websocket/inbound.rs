//! The client's side of a live WebSocket's byte stream, as far as notifd must see it
//! outside tungstenite: where frames begin, and whether some bytes are nothing but
//! pongs.
//!
//! Both exist so that other threads can do a parked connection's routine socket work
//! without waking it (see `gate`): the readiness thread may take pongs off the socket,
//! but only between frames, which only the stream tungstenite reads from can tell.

use std::io::{self, Read, Write};
use std::net::TcpStream;

/// FIN + pong, the first byte of an unfragmented pong frame.
const PONG_START: u8 = 0x8A;
/// Bit set in the second byte of every client frame (clients must mask).
const MASKED: u8 = 0x80;
/// Longest payload of a control frame.
const MAX_CONTROL_PAYLOAD: usize = 125;
/// Longest length a frame header may declare: the 64-bit form's top bit must be 0.
const MAX_PAYLOAD_LENGTH: u64 = i64::MAX as u64;

/// The socket under a live `WebSocket`: passes everything through and follows the
/// frame boundaries of what it reads.
pub struct ClientStream {
    tcp: TcpStream,
    cursor: FrameCursor,
    /// Bytes that must go out before anything else: the rest of a frame another
    /// thread wrote only in part (`direct`).
    unsent: Vec<u8>,
}

impl ClientStream {
    pub fn new(tcp: TcpStream) -> ClientStream {
        ClientStream {
            tcp,
            cursor: FrameCursor::default(),
            unsent: Vec::new(),
        }
    }

    /// Queues bytes to go out before anything written from now on.
    pub fn push_unsent(&mut self, bytes: Vec<u8>) {
        self.unsent.extend_from_slice(&bytes);
    }

    pub fn has_unsent(&self) -> bool {
        !self.unsent.is_empty()
    }

    /// Sends the unsent bytes; `WouldBlock` while some remain, so that nothing
    /// written after them can overtake them.
    fn send_unsent(&mut self) -> io::Result<()> {
        while !self.unsent.is_empty() {
            match self.tcp.write(&self.unsent)? {
                0 => return Err(io::ErrorKind::WriteZero.into()),
                n => drop(self.unsent.drain(..n)),
            }
        }
        Ok(())
    }

    pub fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    /// True when everything read so far ends with a whole frame: tungstenite, having
    /// read until the socket would block, then holds no bytes of its own.
    pub fn at_frame_start(&self) -> bool {
        self.cursor.at_frame_start()
    }

    /// True once a frame header read declared a 64-bit length with its most
    /// significant bit set, which RFC 6455 §5.2 forbids (tungstenite takes it for a
    /// size).
    pub fn saw_invalid_length(&self) -> bool {
        self.cursor.invalid_length
    }
}

impl Read for ClientStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.tcp.read(buf)?;
        self.cursor.advance(&buf[..n]);
        Ok(n)
    }
}

impl Write for ClientStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.send_unsent()?;
        self.tcp.write(buf)
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        self.send_unsent()?;
        self.tcp.write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send_unsent()?;
        self.tcp.flush()
    }
}

/// Where the reader stands in the client's frames: inside a header (how many of its
/// bytes seen) or inside a payload (how many bytes left).
#[derive(Debug, Default)]
struct FrameCursor {
    header: [u8; 14],
    header_seen: usize,
    payload_left: u64,
    /// A header declared a length with the top bit set (the cursor then sees the rest
    /// of the stream as that frame's payload; the connection is failed anyway).
    invalid_length: bool,
}

impl FrameCursor {
    fn at_frame_start(&self) -> bool {
        self.header_seen == 0 && self.payload_left == 0
    }

    fn advance(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.payload_left > 0 {
                let skip = self.payload_left.min(bytes.len() as u64);
                self.payload_left -= skip;
                bytes = &bytes[skip as usize..];
                continue;
            }
            // Headers are at most 14 bytes: byte by byte is cheap enough.
            self.header[self.header_seen] = bytes[0];
            self.header_seen += 1;
            bytes = &bytes[1..];
            if let Some((header_len, payload_len)) = header_size(&self.header[..self.header_seen]) {
                if self.header_seen == header_len {
                    self.header_seen = 0;
                    self.payload_left = payload_len;
                    self.invalid_length |= payload_len > MAX_PAYLOAD_LENGTH;
                }
            }
        }
    }
}

/// A frame header's length and the payload length it declares, once enough of it is
/// known (RFC 6455 §5.2).
fn header_size(header: &[u8]) -> Option<(usize, u64)> {
    let second = *header.get(1)?;
    let mask = if second & MASKED != 0 { 4 } else { 0 };
    let (extended, payload) = match second & 0x7F {
        126 => {
            let bytes = header.get(2..4)?;
            (2, u64::from(u16::from_be_bytes([bytes[0], bytes[1]])))
        }
        127 => {
            let bytes: [u8; 8] = header.get(2..10)?.try_into().ok()?;
            (8, u64::from_be_bytes(bytes))
        }
        short => (0, u64::from(short)),
    };
    Some((2 + extended + mask, payload))
}

/// True when `bytes` are one or more whole client pongs and nothing else.
pub fn whole_pongs(bytes: &[u8]) -> bool {
    let mut rest = bytes;
    while !rest.is_empty() {
        let [first, second, ..] = *rest else {
            return false;
        };
        let payload = usize::from(second & 0x7F);
        let frame = 2 + 4 + payload;
        if first != PONG_START
            || second & MASKED == 0
            || payload > MAX_CONTROL_PAYLOAD
            || rest.len() < frame
        {
            return false;
        }
        rest = &rest[frame..];
    }
    !bytes.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A masked client frame (the mask is zeros: the cursor never unmasks).
    fn frame(first: u8, payload: usize) -> Vec<u8> {
        let mut bytes = vec![first];
        match payload {
            0..=125 => bytes.push(MASKED | payload as u8),
            126..=0xFFFF => {
                bytes.push(MASKED | 126);
                bytes.extend_from_slice(&(payload as u16).to_be_bytes());
            }
            _ => {
                bytes.push(MASKED | 127);
                bytes.extend_from_slice(&(payload as u64).to_be_bytes());
            }
        }
        bytes.extend_from_slice(&[0; 4]);
        bytes.extend(std::iter::repeat_n(0x8A, payload));
        bytes
    }

    #[test]
    fn the_cursor_finds_frame_starts_however_the_bytes_are_split() {
        let mut stream = frame(0x81, 5);
        stream.extend(frame(0x82, 300));
        stream.extend(frame(0x81, 70_000));
        stream.extend(frame(PONG_START, 0));
        let ends = {
            let mut ends = vec![];
            let mut at = 0;
            for len in [5, 300, 70_000, 0] {
                at += 2
                    + 4
                    + len
                    + if len > 0xFFFF {
                        8
                    } else if len > 125 {
                        2
                    } else {
                        0
                    };
                ends.push(at);
            }
            ends
        };
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
    fn only_whole_pongs_are_pongs() {
        let pong = frame(PONG_START, 0);
        let pong_with_payload = frame(PONG_START, 8);
        assert!(whole_pongs(&pong));
        assert!(whole_pongs(
            &[pong.clone(), pong_with_payload.clone()].concat()
        ));
        assert!(!whole_pongs(&[]));
        assert!(!whole_pongs(&pong[..5]), "a partial pong");
        assert!(
            !whole_pongs(&[pong.clone(), frame(0x81, 4)].concat()),
            "pong + text"
        );
        assert!(!whole_pongs(&frame(0x89, 0)), "a ping needs an answer");
        assert!(!whole_pongs(&frame(0x0A, 0)), "a pong without FIN");
        let mut unmasked = pong.clone();
        unmasked[1] &= !MASKED;
        assert!(!whole_pongs(&unmasked), "an unmasked pong");
        // Malformed pongs go to tungstenite, which fails the connection with 1002.
        assert!(!whole_pongs(&frame(0xCA, 0)), "a pong with RSV1 set");
        assert!(
            !whole_pongs(&frame(PONG_START, 126)),
            "a pong over 125 bytes"
        );
    }

    #[test]
    fn the_cursor_notices_a_length_with_its_top_bit_set() {
        let mut cursor = FrameCursor::default();
        cursor.advance(&frame(0x82, 70_000));
        assert!(!cursor.invalid_length);
        let mut header = vec![0x82, MASKED | 127];
        header.extend_from_slice(&(1u64 << 63).to_be_bytes());
        header.extend_from_slice(&[0; 4]);
        cursor.advance(&header);
        assert!(cursor.invalid_length);
    }
}
