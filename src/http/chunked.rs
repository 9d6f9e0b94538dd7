//! The chunked transfer coding (RFC 9112 §7.1), decoded incrementally as bytes
//! arrive: each byte is looked at once, however the client splits its writes, and the
//! decoded body never grows past the route's limit.

use super::refusal::Refusal;

/// Longest chunk-size line, extensions included.
const MAX_SIZE_LINE: usize = 1024;
/// Longest trailer section; trailers are read and dropped.
const MAX_TRAILERS: usize = 16 * 1024;

#[derive(Debug)]
enum State {
    /// Reading a chunk-size line; holds what is read of it.
    Size(Vec<u8>),
    /// Inside a chunk; bytes left of it.
    Data(u64),
    /// After a chunk's data: expecting CR (`false`) or LF (`true`).
    DataEnd(bool),
    /// In the trailer section: the length of the current line and of all of it, and
    /// whether the last byte was CR.
    Trailers {
        line: usize,
        total: usize,
        cr: bool,
    },
    Done,
}

#[derive(Debug)]
pub struct Chunked {
    state: State,
    body: Vec<u8>,
    limit: usize,
}

impl Chunked {
    pub fn new(limit: usize) -> Chunked {
        Chunked {
            state: State::Size(Vec::new()),
            body: Vec::new(),
            limit,
        }
    }

    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// Takes the decoded body, once `is_done`.
    pub fn take_body(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.body)
    }

    /// Decodes from `input`; returns how many bytes it consumed (all of them, unless
    /// the body ended inside `input`: what follows is the next request).
    pub fn feed(&mut self, input: &[u8]) -> Result<usize, Refusal> {
        let mut at = 0;
        while at < input.len() && !self.is_done() {
            at += self.step(&input[at..])?;
        }
        Ok(at)
    }

    /// Consumes a prefix of `input` (at least one byte) in the current state.
    fn step(&mut self, input: &[u8]) -> Result<usize, Refusal> {
        match &mut self.state {
            State::Size(line) => {
                let byte = input[0];
                if byte != b'\n' {
                    line.push(byte);
                    if line.len() > MAX_SIZE_LINE {
                        return Err(bad("chunk-size line too long"));
                    }
                    return Ok(1);
                }
                let size = chunk_size(line)?;
                let left = (self.limit - self.body.len()) as u64;
                if size > left {
                    return Err(Refusal::body_too_large(self.limit));
                }
                self.state = match size {
                    0 => State::Trailers {
                        line: 0,
                        total: 0,
                        cr: false,
                    },
                    n => State::Data(n),
                };
                Ok(1)
            }
            State::Data(left) => {
                let take = (*left).min(input.len() as u64) as usize;
                self.body.extend_from_slice(&input[..take]);
                *left -= take as u64;
                if *left == 0 {
                    self.state = State::DataEnd(false);
                }
                Ok(take)
            }
            State::DataEnd(seen_cr) => {
                match (*seen_cr, input[0]) {
                    (false, b'\r') => self.state = State::DataEnd(true),
                    (true, b'\n') => self.state = State::Size(Vec::new()),
                    _ => return Err(bad("chunk data not followed by CRLF")),
                }
                Ok(1)
            }
            State::Trailers { line, total, cr } => {
                *total += 1;
                if *total > MAX_TRAILERS {
                    return Err(bad("trailer section too long"));
                }
                match (input[0], *cr) {
                    (b'\n', true) if *line == 0 => self.state = State::Done,
                    (b'\n', true) => (*line, *cr) = (0, false),
                    (b'\r', false) => *cr = true,
                    (b'\n' | b'\r', _) | (_, true) => {
                        return Err(bad("trailer lines must end in CRLF"))
                    }
                    _ => *line += 1,
                }
                Ok(1)
            }
            State::Done => Ok(0),
        }
    }
}

/// The size of a chunk-size line (`1a;ext=1\r`, the LF already taken off): hex
/// digits, then optionally spaces or tabs and `;` extensions, then CR. Leading zeros
/// are allowed however many.
fn chunk_size(line: &[u8]) -> Result<u64, Refusal> {
    let line = line
        .strip_suffix(b"\r")
        .ok_or_else(|| bad("chunk-size line must end in CRLF"))?;
    if line.contains(&b'\r') {
        return Err(bad("a bare CR in a chunk-size line"));
    }
    let digits_end = line
        .iter()
        .position(|b| !b.is_ascii_hexdigit())
        .unwrap_or(line.len());
    let (digits, rest) = line.split_at(digits_end);
    let rest = rest
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t'))
        .map_or(&[][..], |at| &rest[at..]);
    let significant = digits
        .iter()
        .position(|&b| b != b'0')
        .map_or(&[][..], |at| &digits[at..]);
    if digits.is_empty() || significant.len() > 15 || !(rest.is_empty() || rest[0] == b';') {
        return Err(bad("malformed chunk size"));
    }
    let text = std::str::from_utf8(significant).map_err(|_| bad("malformed chunk size"))?;
    if text.is_empty() {
        return Ok(0);
    }
    u64::from_str_radix(text, 16).map_err(|_| bad("malformed chunk size"))
}

fn bad(message: &str) -> Refusal {
    Refusal::bad_request(format!("chunked body: {message}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(input: &[u8], limit: usize) -> Result<(Vec<u8>, usize), u16> {
        let mut decoder = Chunked::new(limit);
        // One byte at a time: the state machine must not care how input is split.
        let mut used = 0;
        for byte in input.chunks(1) {
            used += decoder.feed(byte).map_err(|r| r.status)?;
            if decoder.is_done() {
                break;
            }
        }
        assert!(decoder.is_done(), "not done");
        Ok((decoder.take_body(), used))
    }

    #[test]
    fn decodes_with_extensions_and_trailers() {
        let input = b"5;x=1\r\nhello\r\n1\r\n!\r\n0\r\nX-T: 1\r\n\r\nNEXT";
        let (body, used) = decode(input, 100).expect("valid");
        assert_eq!(body, b"hello!");
        assert_eq!(&input[used..], b"NEXT");
        let mut whole = Chunked::new(100);
        assert_eq!(whole.feed(input).expect("valid"), used);
        assert_eq!(whole.take_body(), b"hello!");
    }

    #[test]
    fn refuses_bad_sizes_and_framing() {
        for bad in [
            &b"zz\r\n"[..],
            b"-1\r\n",
            b"\r\n",
            b"5 x\r\nhello\r\n0\r\n\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"5\r\nhelloXX0\r\n\r\n",
            b"ffffffffffffffffff\r\n",
            b"2\r\r\nab\r\n0\r\n\r\n",
            b"2\x0c\r\nab\r\n0\r\n\r\n",
            b"2;a\rb\r\nab\r\n0\r\n\r\n",
            b"0\r\nX: 1\n\r\n",
            b"0\r\n\n",
        ] {
            assert_eq!(decode(bad, 100).err(), Some(400), "{bad:?}");
        }
        assert_eq!(decode(b"65\r\n", 100).err(), Some(413));
        let zeros = b"00000000000000000002\t;x\r\nab\r\n0\r\n\r\n";
        assert_eq!(decode(zeros, 100).expect("leading zeros").0, b"ab");
        assert_eq!(decode(b"3\r\nabc\r\n62\r\n", 100).err(), Some(413));
    }
}
