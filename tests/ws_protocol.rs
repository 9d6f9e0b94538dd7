//! Client frames that break RFC 6455 get a close frame before the connection ends
//! (contract §3): 1002, or 1007 for text that is not UTF-8 (in a text message or a
//! close reason). Each kind is sent by a raw-frame client to the real server, on a
//! connection of its own, and the server's close code is checked.
//!
//! Control frames are sent both right after the upgrade and after a round trip, when
//! the connection thread most likely sleeps with its socket lent to the poller
//! thread, whose pong pre-parser must leave anything malformed to the normal path.

mod common;

use std::io::Write;

use common::raw_ws::{RawClient, BINARY, CLOSE, CONTINUATION, FIN, PING, PONG, TEXT};
use common::{new_user, user_token, TestServer};

const PROTOCOL: u16 = 1002;
const INVALID_DATA: u16 = 1007;
const RSV1: u8 = 0x40;
const RSV2: u8 = 0x20;
const RSV3: u8 = 0x10;

/// One malformed input: what it is, its bytes, the close code it must get.
struct Case {
    what: String,
    bytes: Vec<u8>,
    code: u16,
}

fn case(what: impl Into<String>, bytes: Vec<u8>, code: u16) -> Case {
    Case {
        what: what.into(),
        bytes,
        code,
    }
}

fn masked(first: u8, payload: &[u8]) -> Vec<u8> {
    RawClient::frame_with(first, payload, true)
}

fn close_with(code: u16, reason: &[u8]) -> Vec<u8> {
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(reason);
    RawClient::frame(CLOSE, &payload)
}

fn frame_header_kinds() -> Vec<Case> {
    let mut cases = vec![
        case("RSV1 set", masked(FIN | RSV1 | TEXT, b"hi"), PROTOCOL),
        case("RSV2 set", masked(FIN | RSV2 | TEXT, b"hi"), PROTOCOL),
        case("RSV3 set", masked(FIN | RSV3 | BINARY, b"hi"), PROTOCOL),
        case(
            "unmasked text frame",
            RawClient::frame_with(FIN | TEXT, b"ping", false),
            PROTOCOL,
        ),
    ];
    for opcode in [3, 7] {
        let what = format!("unknown data opcode {opcode}");
        cases.push(case(what, masked(FIN | opcode, b"x"), PROTOCOL));
    }
    for opcode in [11, 15] {
        let what = format!("unknown control opcode {opcode}");
        cases.push(case(what, masked(FIN | opcode, b""), PROTOCOL));
    }
    // A 64-bit length whose most significant bit is set (RFC 6455 §5.2).
    let mut top_bit = vec![FIN | BINARY, 0x80 | 127];
    top_bit.extend_from_slice(&(1u64 << 63 | 4).to_be_bytes());
    top_bit.extend_from_slice(&[0; 8]);
    cases.push(case(
        "64-bit length with the top bit set",
        top_bit,
        PROTOCOL,
    ));
    cases
}

fn control_kinds() -> Vec<Case> {
    vec![
        case(
            "ping over 125 bytes",
            masked(FIN | PING, &[b'p'; 126]),
            PROTOCOL,
        ),
        case("fragmented ping", masked(PING, b"p"), PROTOCOL),
        case(
            "pong over 125 bytes",
            masked(FIN | PONG, &[b'p'; 126]),
            PROTOCOL,
        ),
        case("fragmented pong", masked(PONG, b""), PROTOCOL),
        case(
            "pong with RSV1 set",
            masked(FIN | RSV1 | PONG, b""),
            PROTOCOL,
        ),
        case(
            "unmasked pong",
            RawClient::frame_with(FIN | PONG, b"", false),
            PROTOCOL,
        ),
        case(
            "close with a 1-byte payload",
            masked(FIN | CLOSE, &[3]),
            PROTOCOL,
        ),
        case(
            "close reason not UTF-8",
            close_with(1000, &[b'o', 0xFF, b'k']),
            INVALID_DATA,
        ),
    ]
}

fn close_code_kinds() -> Vec<Case> {
    [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535]
        .into_iter()
        .map(|code| {
            case(
                format!("close code {code}"),
                close_with(code, b""),
                PROTOCOL,
            )
        })
        .collect()
}

fn message_kinds() -> Vec<Case> {
    let mut interleaved = masked(TEXT, b"a");
    interleaved.extend(masked(FIN | TEXT, b"b"));
    let mut split_utf8 = masked(TEXT, &[0xCE]);
    split_utf8.extend(masked(FIN | CONTINUATION, &[0x28]));
    vec![
        case(
            "continuation without a started message",
            masked(FIN | CONTINUATION, b"x"),
            PROTOCOL,
        ),
        case(
            "new data frame inside a fragmented message",
            interleaved,
            PROTOCOL,
        ),
        case(
            "text not UTF-8",
            masked(FIN | TEXT, &[0xFF, 0xFE]),
            INVALID_DATA,
        ),
        case("text not UTF-8 across fragments", split_utf8, INVALID_DATA),
    ]
}

/// Sends `case` on a fresh connection (after a `ping`/`pong` round trip when
/// `after_round_trip`); returns a failure description, if any.
fn check(server: &TestServer, case: &Case, after_round_trip: bool) -> Option<String> {
    let token = user_token(&new_user("proto"), &["acme"]);
    let mut client = RawClient::connect(server, &token);
    if after_round_trip {
        client
            .tcp
            .write_all(&RawClient::frame(TEXT, b"ping"))
            .expect("text ping");
        let (opcode, payload) = client.read_frame();
        assert_eq!((opcode, payload.as_slice()), (TEXT, &b"pong"[..]));
    }
    // The server may close before it has read everything sent.
    let _ = client.tcp.write_all(&case.bytes);
    let when = if after_round_trip { ", idle" } else { "" };
    match client.close_code() {
        Ok(code) if code == case.code => None,
        Ok(code) => Some(format!("{}{when}: {code}, not {}", case.what, case.code)),
        Err(why) => Some(format!("{}{when}: {why}", case.what)),
    }
}

fn check_all(cases: &[Case], after_round_trip: &[bool]) {
    let server = TestServer::start();
    let failures: Vec<String> = cases
        .iter()
        .flat_map(|case| after_round_trip.iter().map(move |idle| (case, *idle)))
        .filter_map(|(case, idle)| check(&server, case, idle))
        .collect();
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn frames_with_a_bad_header_get_1002() {
    check_all(&frame_header_kinds(), &[false]);
}

#[test]
fn bad_control_frames_get_1002_or_1007_busy_or_idle() {
    check_all(&control_kinds(), &[false, true]);
}

#[test]
fn close_codes_no_client_may_send_get_1002() {
    check_all(&close_code_kinds(), &[false]);
}

#[test]
fn broken_messages_get_1002_or_1007() {
    check_all(&message_kinds(), &[false]);
}

#[test]
fn a_well_formed_close_is_still_echoed() {
    let server = TestServer::start();
    let token = user_token(&new_user("proto"), &["acme"]);
    let mut client = RawClient::connect(&server, &token);
    client
        .tcp
        .write_all(&close_with(4321, "fine ✓".as_bytes()))
        .expect("close");
    assert_eq!(client.close_code(), Ok(4321));
}
