//! A WebSocket client that reads and writes frames itself, so a test decides how its
//! bytes are cut into TCP segments and may send frames no library would.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use super::TestServer;

pub const CONTINUATION: u8 = 0x0;
pub const TEXT: u8 = 0x1;
pub const BINARY: u8 = 0x2;
pub const CLOSE: u8 = 0x8;
pub const PING: u8 = 0x9;
pub const PONG: u8 = 0xA;
/// FIN: the last (or only) frame of a message.
pub const FIN: u8 = 0x80;
/// The mask of every client frame here.
pub const MASK: [u8; 4] = [0x37, 0xFA, 0x21, 0x3D];

pub struct RawClient {
    pub tcp: TcpStream,
}

impl RawClient {
    pub fn connect(server: &TestServer, token: &str) -> RawClient {
        let mut tcp = TcpStream::connect(server.ws_addr()).expect("connect");
        tcp.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        tcp.set_nodelay(true).expect("nodelay");
        let request = format!(
            "GET /?token={token}&workspaceSlug=acme HTTP/1.1\r\nHost: notifd\r\n\
             Upgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        tcp.write_all(request.as_bytes()).expect("send upgrade");
        // Byte by byte up to the blank line: nothing after the response is consumed.
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            tcp.read_exact(&mut byte).expect("upgrade response");
            head.push(byte[0]);
            assert!(head.len() < 4096, "upgrade response too long");
        }
        let head = String::from_utf8_lossy(&head);
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        RawClient { tcp }
    }

    /// A masked, final client frame of up to 125 bytes.
    pub fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
        assert!(payload.len() <= 125, "short frames only");
        Self::frame_with(FIN | opcode, payload, true)
    }

    /// A client frame with this first byte (FIN, RSV bits, opcode), any payload
    /// length (in its shortest encoding), masked or not.
    pub fn frame_with(first: u8, payload: &[u8], masked: bool) -> Vec<u8> {
        let mask_bit = if masked { 0x80 } else { 0 };
        let mut bytes = vec![first];
        match payload.len() {
            len @ 0..=125 => bytes.push(mask_bit | len as u8),
            len @ 126..=0xFFFF => {
                bytes.push(mask_bit | 126);
                bytes.extend_from_slice(&(len as u16).to_be_bytes());
            }
            len => {
                bytes.push(mask_bit | 127);
                bytes.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        if masked {
            bytes.extend_from_slice(&MASK);
            bytes.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
        } else {
            bytes.extend_from_slice(payload);
        }
        bytes
    }

    /// Writes `bytes` in two segments with a pause between.
    pub fn send_split(&mut self, bytes: &[u8], at: usize) {
        self.tcp.write_all(&bytes[..at]).expect("first half");
        std::thread::sleep(Duration::from_millis(30));
        self.tcp.write_all(&bytes[at..]).expect("second half");
    }

    /// The next server frame: (opcode, payload).
    pub fn read_frame(&mut self) -> (u8, Vec<u8>) {
        self.try_read_frame()
            .unwrap_or_else(|err| panic!("a frame before the deadline: {err}"))
    }

    /// The next server frame, or why there is none (the connection ended, a timeout).
    pub fn try_read_frame(&mut self) -> std::io::Result<(u8, Vec<u8>)> {
        let mut head = [0u8; 2];
        self.tcp.read_exact(&mut head)?;
        assert_eq!(head[1] & 0x80, 0, "server frames are not masked");
        let len = match head[1] & 0x7F {
            126 => {
                let mut ext = [0u8; 2];
                self.tcp.read_exact(&mut ext)?;
                usize::from(u16::from_be_bytes(ext))
            }
            127 => panic!("no frame here is that long"),
            short => usize::from(short),
        };
        let mut payload = vec![0u8; len];
        self.tcp.read_exact(&mut payload)?;
        Ok((head[0] & 0x0F, payload))
    }

    /// Answers a ping with a pong, every other one split after three bytes.
    pub fn answer(&mut self, ping: &[u8], pongs: &mut usize) {
        let pong = Self::frame(PONG, ping);
        if pongs.is_multiple_of(2) {
            self.send_split(&pong, 3);
        } else {
            self.tcp.write_all(&pong).expect("pong");
        }
        *pongs += 1;
    }

    /// Reads until a frame that is not a ping, answering pings on the way.
    pub fn next_non_ping(&mut self, pongs: &mut usize) -> (u8, Vec<u8>) {
        loop {
            let (opcode, payload) = self.read_frame();
            if opcode != PING {
                return (opcode, payload);
            }
            self.answer(&payload, pongs);
        }
    }

    /// The code of the server's close frame, skipping pings; `Err` when the
    /// connection ends (or the read deadline passes) without one, or another frame
    /// comes first.
    pub fn close_code(&mut self) -> Result<u16, String> {
        loop {
            match self.try_read_frame() {
                Ok((PING, _)) => continue,
                Ok((CLOSE, payload)) if payload.len() >= 2 => {
                    return Ok(u16::from_be_bytes([payload[0], payload[1]]))
                }
                Ok((opcode, payload)) => {
                    return Err(format!("frame {opcode:#x} {payload:?} instead of a close"))
                }
                Err(err) => return Err(format!("no close frame: {err}")),
            }
        }
    }
}
