//! SOCKS4/4a/5 handshakes: every version, method, command and address path, every refusal,
//! chunking independence and early-data preservation.

#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(clippy::panic, clippy::indexing_slicing)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use allium::cell::{Hostname, TargetAddr};
use allium::client::socks::{
    reply, ReplyCode, SocksAuth, SocksCommand, SocksError, SocksHandshake, SocksRequest,
    SocksVersion, Step, MAX_MESSAGE_LEN,
};

/// What a client's byte stream produced.
#[derive(Debug, PartialEq)]
enum Outcome {
    /// Completed: replies written along the way, the request, the early data.
    Done(Vec<u8>, SocksRequest, Vec<u8>),
    /// Refused: replies written before the refusal, the error.
    Failed(Vec<u8>, SocksError),
    /// The input ended before the handshake did.
    Incomplete(Vec<u8>),
}

/// Feeds `input` in chunks of `chunk` bytes, following the `Step` protocol.
fn drive(input: &[u8], chunk: usize) -> Outcome {
    let mut hs = SocksHandshake::new();
    let mut replies = Vec::new();
    let chunks: Vec<&[u8]> = input.chunks(chunk.max(1)).collect();
    for (i, c) in chunks.iter().enumerate() {
        let mut rest: &[u8] = c;
        loop {
            match hs.feed(rest) {
                Ok(Step::NeedMore) => {
                    assert!(!hs.is_finished());
                    break;
                }
                Ok(Step::Reply { reply, consumed }) => {
                    assert!(consumed <= rest.len());
                    replies.extend(reply);
                    rest = &rest[consumed..];
                }
                Ok(Step::Done { request, consumed }) => {
                    assert!(hs.is_finished());
                    assert_eq!(hs.feed(b"x"), Err(SocksError::Finished));
                    let mut early = rest[consumed..].to_vec();
                    for later in &chunks[i + 1..] {
                        early.extend_from_slice(later);
                    }
                    return Outcome::Done(replies, request, early);
                }
                Err(e) => {
                    assert!(hs.is_finished());
                    assert_eq!(hs.feed(b""), Err(SocksError::Finished));
                    return Outcome::Failed(replies, e);
                }
            }
        }
    }
    Outcome::Incomplete(replies)
}

/// Drives `input` all at once, one byte at a time and in several chunk sizes, checks that
/// every way gives the same outcome, and returns it.
fn run(input: &[u8]) -> Outcome {
    let whole = drive(input, input.len().max(1));
    for chunk in [1, 2, 3, 5, 7, 64] {
        assert_eq!(drive(input, chunk), whole, "chunk size {chunk}");
    }
    whole
}

fn done(input: &[u8]) -> (Vec<u8>, SocksRequest, Vec<u8>) {
    match run(input) {
        Outcome::Done(r, q, e) => (r, q, e),
        other => panic!("expected Done, got {other:?}"),
    }
}

fn failed(input: &[u8]) -> (Vec<u8>, SocksError) {
    match run(input) {
        Outcome::Failed(r, e) => (r, e),
        other => panic!("expected Failed, got {other:?}"),
    }
}

fn host(name: &str) -> TargetAddr {
    TargetAddr::Hostname(Hostname::new(name).unwrap())
}

fn v4(a: u8, b: u8, c: u8, d: u8) -> TargetAddr {
    TargetAddr::Ip(IpAddr::V4(Ipv4Addr::new(a, b, c, d)))
}

fn socks5_domain_request(cmd: u8, name: &[u8], port: u16) -> Vec<u8> {
    let mut v = vec![5, cmd, 0, 3, name.len() as u8];
    v.extend_from_slice(name);
    v.extend_from_slice(&port.to_be_bytes());
    v
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

// ---------------------------------------------------------------- SOCKS5 success paths

#[test]
fn socks5_noauth_connect_ipv4() {
    let input = cat(&[&[5, 1, 0], &[5, 1, 0, 1, 10, 0, 0, 1, 0x01, 0xBB]]);
    let (replies, req, early) = done(&input);
    assert_eq!(replies, [5, 0]);
    assert_eq!(
        req,
        SocksRequest {
            version: SocksVersion::V5,
            command: SocksCommand::Connect,
            target: v4(10, 0, 0, 1),
            port: 443,
            auth: SocksAuth::None,
        }
    );
    assert_eq!(req.isolation_key(), &SocksAuth::None);
    assert!(early.is_empty());
}

#[test]
fn socks5_connect_ipv6() {
    let ip = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
    let input = cat(&[&[5, 1, 0], &[5, 1, 0, 4], &ip.octets(), &[0, 22]]);
    let (_, req, _) = done(&input);
    assert_eq!(req.target, TargetAddr::Ip(IpAddr::V6(ip)));
    assert_eq!(req.port, 22);
}

#[test]
fn socks5_connect_domain() {
    let input = cat(&[&[5, 1, 0], &socks5_domain_request(1, b"example.onion", 80)]);
    let (_, req, _) = done(&input);
    assert_eq!(req.target, host("example.onion"));
    assert_eq!(req.port, 80);
}

#[test]
fn socks5_domain_ip_literals_become_addresses() {
    for (name, ip) in [
        ("192.0.2.7", IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7))),
        ("::1", IpAddr::V6(Ipv6Addr::LOCALHOST)),
        ("2001:db8::5", "2001:db8::5".parse().unwrap()),
    ] {
        let input = cat(&[&[5, 1, 0], &socks5_domain_request(1, name.as_bytes(), 80)]);
        let (_, req, _) = done(&input);
        assert_eq!(req.target, TargetAddr::Ip(ip), "{name}");
    }
}

#[test]
fn socks5_max_length_domain() {
    let name = vec![b'a'; 255];
    let input = cat(&[&[5, 1, 0], &socks5_domain_request(1, &name, 80)]);
    let (_, req, _) = done(&input);
    assert_eq!(
        req.target,
        host(std::str::from_utf8(&name).unwrap()),
        "255-byte name"
    );
}

#[test]
fn socks5_userpass_selected_and_used_for_isolation() {
    // Offered both: username/password wins (isolation), whatever the order.
    for offer in [
        &[5u8, 2, 0, 2][..],
        &[5, 2, 2, 0],
        &[5, 1, 2],
        &[5, 3, 1, 2, 0],
    ] {
        let input = cat(&[
            offer,
            &[1, 5],
            b"alice",
            &[3],
            b"pw!",
            &[5, 1, 0, 1, 1, 2, 3, 4, 0, 80],
        ]);
        let (replies, req, _) = done(&input);
        assert_eq!(replies, [5, 2, 1, 0], "offer {offer:?}");
        let key = SocksAuth::Username {
            user: b"alice".to_vec(),
            pass: b"pw!".to_vec(),
        };
        assert_eq!(req.auth, key);
        assert_eq!(req.isolation_key(), &key);
    }
}

#[test]
fn socks5_empty_and_binary_credentials() {
    let input = cat(&[
        &[5, 1, 2],
        &[1, 0, 2, 0xFF, 0],
        &[5, 1, 0, 1, 1, 2, 3, 4, 0, 80],
    ]);
    let (_, req, _) = done(&input);
    assert_eq!(
        req.auth,
        SocksAuth::Username {
            user: vec![],
            pass: vec![0xFF, 0],
        }
    );
    // Longest credentials.
    let user = vec![b'u'; 255];
    let pass = vec![b'p'; 255];
    let input = cat(&[
        &[5, 1, 2],
        &[1, 255],
        &user,
        &[255],
        &pass,
        &[5, 1, 0, 1, 1, 2, 3, 4, 0, 80],
    ]);
    let (_, req, _) = done(&input);
    assert_eq!(req.auth, SocksAuth::Username { user, pass });
}

#[test]
fn socks5_other_methods_ignored_when_noauth_offered() {
    let input = cat(&[&[5, 3, 1, 0x80, 0], &[5, 1, 0, 1, 1, 2, 3, 4, 0, 80]]);
    let (replies, req, _) = done(&input);
    assert_eq!(replies, [5, 0]);
    assert_eq!(req.auth, SocksAuth::None);
}

#[test]
fn socks5_bind_udp_resolve_are_parsed() {
    for (cmd, kind) in [
        (2, SocksCommand::Bind),
        (3, SocksCommand::UdpAssociate),
        (0xF0, SocksCommand::Resolve),
    ] {
        // Port 0 is legal for everything but CONNECT (UDP ASSOCIATE 0.0.0.0:0, RESOLVE).
        let input = cat(&[&[5, 1, 0], &[5, cmd, 0, 1, 0, 0, 0, 0, 0, 0]]);
        let (_, req, _) = done(&input);
        assert_eq!(req.command, kind);
        assert_eq!(req.port, 0);
        assert_eq!(req.target, v4(0, 0, 0, 0));
    }
    let input = cat(&[&[5, 1, 0], &socks5_domain_request(0xF0, b"example.com", 0)]);
    let (_, req, _) = done(&input);
    assert_eq!(req.command, SocksCommand::Resolve);
    assert_eq!(req.target, host("example.com"));
}

#[test]
fn socks5_early_data_preserved() {
    let data = b"\x16\x03\x01 client hello and more";
    let input = cat(&[&[5, 1, 0], &socks5_domain_request(1, b"a.b", 443), data]);
    let (_, _, early) = done(&input);
    assert_eq!(early, data);
    // With authentication in the middle, too.
    let input = cat(&[
        &[5, 1, 2],
        &[1, 1, b'u', 1, b'p'],
        &[5, 1, 0, 1, 1, 2, 3, 4, 0, 80],
        data,
    ]);
    let (_, _, early) = done(&input);
    assert_eq!(early, data);
}

#[test]
fn pipelined_messages_stay_with_caller() {
    // One chunk holding the offer, the request and data: the first feed takes only the offer.
    let request = [5, 1, 0, 1, 1, 2, 3, 4, 0, 80];
    let input = cat(&[&[5, 1, 0], &request, b"xyz"]);
    let mut hs = SocksHandshake::new();
    assert_eq!(
        hs.feed(&input).unwrap(),
        Step::Reply {
            reply: vec![5, 0],
            consumed: 3
        }
    );
    match hs.feed(&input[3..]).unwrap() {
        Step::Done { consumed, .. } => assert_eq!(consumed, request.len()),
        other => panic!("{other:?}"),
    }
}

#[test]
fn empty_feeds_are_harmless() {
    let mut hs = SocksHandshake::new();
    assert_eq!(hs.feed(&[]).unwrap(), Step::NeedMore);
    assert_eq!(hs.feed(&[5]).unwrap(), Step::NeedMore);
    assert_eq!(hs.feed(&[]).unwrap(), Step::NeedMore);
    assert!(matches!(hs.feed(&[1, 0]).unwrap(), Step::Reply { .. }));
    assert_eq!(hs.feed(&[]).unwrap(), Step::NeedMore);
    assert!(!hs.is_finished());
}

// ---------------------------------------------------------------- SOCKS4 / SOCKS4a

#[test]
fn socks4_connect_with_user_id() {
    let input = cat(&[&[4, 1, 0, 80, 93, 184, 216, 34], b"bob", &[0], b"early"]);
    let (replies, req, early) = done(&input);
    assert!(replies.is_empty());
    assert_eq!(
        req,
        SocksRequest {
            version: SocksVersion::V4,
            command: SocksCommand::Connect,
            target: v4(93, 184, 216, 34),
            port: 80,
            auth: SocksAuth::Socks4UserId(b"bob".to_vec()),
        }
    );
    assert_eq!(
        req.isolation_key(),
        &SocksAuth::Socks4UserId(b"bob".to_vec())
    );
    assert_eq!(early, b"early");
}

#[test]
fn socks4_empty_user_id_is_no_auth() {
    let (_, req, _) = done(&[4, 1, 0, 80, 1, 2, 3, 4, 0]);
    assert_eq!(req.auth, SocksAuth::None);
}

#[test]
fn socks4_bind_is_parsed() {
    let (_, req, _) = done(&[4, 2, 0, 0, 1, 2, 3, 4, 0]);
    assert_eq!(req.command, SocksCommand::Bind);
}

#[test]
fn socks4a_hostname() {
    let input = cat(&[&[4, 1, 1, 0, 0, 0, 0, 9], b"id", &[0], b"example.com", &[0]]);
    let (_, req, early) = done(&input);
    assert_eq!(req.target, host("example.com"));
    assert_eq!(req.port, 256);
    assert_eq!(req.auth, SocksAuth::Socks4UserId(b"id".to_vec()));
    assert!(early.is_empty());
}

#[test]
fn socks4a_ip_literal_and_long_fields() {
    let input = cat(&[&[4, 1, 0, 80, 0, 0, 0, 1, 0], b"2001:db8::1", &[0]]);
    let (_, req, _) = done(&input);
    assert_eq!(req.target, TargetAddr::Ip("2001:db8::1".parse().unwrap()));
    let user = vec![b'u'; 255];
    let name = vec![b'n'; 255];
    let input = cat(&[&[4, 1, 0, 80, 0, 0, 0, 1], &user, &[0], &name, &[0], b"+"]);
    let (_, req, early) = done(&input);
    assert_eq!(req.auth, SocksAuth::Socks4UserId(user));
    assert_eq!(req.target, host(std::str::from_utf8(&name).unwrap()));
    assert_eq!(early, b"+");
}

// ---------------------------------------------------------------- refusals

fn socks5_failure_reply(code: u8) -> Vec<u8> {
    vec![5, code, 0, 1, 0, 0, 0, 0, 0, 0]
}

#[test]
fn unknown_version() {
    for first in [0u8, 1, 3, 6, b'C', b'G', 0x16, 0xFF] {
        let (replies, e) = failed(&[first, 1, 0]);
        assert!(replies.is_empty());
        assert_eq!(e, SocksError::UnknownVersion(first));
        assert_eq!(e.reply(), None);
    }
}

#[test]
fn socks5_method_refusals() {
    let (_, e) = failed(&[5, 0]);
    assert_eq!(e, SocksError::NoMethodsOffered);
    assert_eq!(e.reply().unwrap(), [5, 0xFF]);
    let (_, e) = failed(&[5, 3, 1, 3, 0x80]);
    assert_eq!(e, SocksError::NoAcceptableMethod);
    assert_eq!(e.reply().unwrap(), [5, 0xFF]);
}

#[test]
fn socks5_auth_version_refused() {
    let (replies, e) = failed(&[5, 1, 2, 5, 1, b'u', 1, b'p']);
    assert_eq!(replies, [5, 2]);
    assert_eq!(e, SocksError::UnknownAuthVersion(5));
    assert_eq!(e.reply().unwrap(), [1, 1]);
}

#[test]
fn socks5_request_refusals() {
    let cases: Vec<(Vec<u8>, SocksError, u8)> = vec![
        (
            vec![4, 1, 0, 1, 1, 2, 3, 4, 0, 80],
            SocksError::BadRequestVersion(4),
            1,
        ),
        (
            vec![5, 9, 0, 1, 1, 2, 3, 4, 0, 80],
            SocksError::UnknownCommand {
                version: SocksVersion::V5,
                command: 9,
            },
            7,
        ),
        (
            vec![5, 0xF1, 0, 1, 1, 2, 3, 4, 0, 80],
            SocksError::UnknownCommand {
                version: SocksVersion::V5,
                command: 0xF1,
            },
            7,
        ),
        (
            vec![5, 1, 1, 1, 1, 2, 3, 4, 0, 80],
            SocksError::NonZeroReserved(1),
            1,
        ),
        (
            vec![5, 1, 0, 2, 1, 2, 3, 4, 0, 80],
            SocksError::UnknownAddressType(2),
            8,
        ),
        (
            vec![5, 1, 0, 0xFF, 1, 2, 3, 4, 0, 80],
            SocksError::UnknownAddressType(0xFF),
            8,
        ),
        (
            vec![5, 1, 0, 1, 1, 2, 3, 4, 0, 0],
            SocksError::ZeroPort {
                version: SocksVersion::V5,
            },
            1,
        ),
        (
            vec![5, 1, 0, 3, 0, 0, 80],
            SocksError::InvalidHostname {
                version: SocksVersion::V5,
            },
            1,
        ),
        (
            socks5_domain_request(1, b"bad host", 80),
            SocksError::InvalidHostname {
                version: SocksVersion::V5,
            },
            1,
        ),
        (
            socks5_domain_request(1, b"a\0b", 80),
            SocksError::InvalidHostname {
                version: SocksVersion::V5,
            },
            1,
        ),
        (
            socks5_domain_request(1, b"[::1]", 80),
            SocksError::InvalidHostname {
                version: SocksVersion::V5,
            },
            1,
        ),
    ];
    for (request, err, code) in cases {
        let input = cat(&[&[5, 1, 0], &request]);
        let (replies, e) = failed(&input);
        assert_eq!(replies, [5, 0]);
        assert_eq!(e, err);
        assert_eq!(e.reply().unwrap(), socks5_failure_reply(code), "{err}");
    }
}

#[test]
fn socks5_refusal_is_immediate() {
    // The bad command is reported without waiting for the rest of the request.
    let mut hs = SocksHandshake::new();
    assert!(matches!(hs.feed(&[5, 1, 0]).unwrap(), Step::Reply { .. }));
    assert!(matches!(
        hs.feed(&[5, 7]),
        Err(SocksError::UnknownCommand { command: 7, .. })
    ));
}

#[test]
fn socks4_refusals() {
    let v4 = SocksVersion::V4;
    let long = vec![b'x'; 256];
    let cases: Vec<(Vec<u8>, SocksError)> = vec![
        (
            vec![4, 3, 0, 80, 1, 2, 3, 4, 0],
            SocksError::UnknownCommand {
                version: v4,
                command: 3,
            },
        ),
        (
            vec![4, 0xF0, 0, 80, 1, 2, 3, 4, 0],
            SocksError::UnknownCommand {
                version: v4,
                command: 0xF0,
            },
        ),
        (
            vec![4, 1, 0, 0, 1, 2, 3, 4, 0],
            SocksError::ZeroPort { version: v4 },
        ),
        (
            vec![4, 1, 0, 80, 0, 0, 0, 0, 0],
            SocksError::Socks4ZeroAddress,
        ),
        (
            cat(&[&[4, 1, 0, 80, 1, 2, 3, 4], &long, &[0]]),
            SocksError::FieldTooLong {
                field: "user id",
                max: 255,
            },
        ),
        (
            cat(&[&[4, 1, 0, 80, 0, 0, 0, 1, 0], &long, &[0]]),
            SocksError::FieldTooLong {
                field: "hostname",
                max: 255,
            },
        ),
        (
            vec![4, 1, 0, 80, 0, 0, 0, 1, 0, 0],
            SocksError::InvalidHostname { version: v4 },
        ),
        (
            cat(&[&[4, 1, 0, 80, 0, 0, 0, 1, 0], b"no spaces", &[0]]),
            SocksError::InvalidHostname { version: v4 },
        ),
    ];
    for (input, err) in cases {
        let (replies, e) = failed(&input);
        assert!(replies.is_empty());
        assert_eq!(e, err);
        assert_eq!(e.reply().unwrap(), [0, 0x5B, 0, 0, 0, 0, 0, 0], "{err}");
    }
}

#[test]
fn socks4_unterminated_field_is_refused_without_nul() {
    // No NUL ever arrives: the refusal comes once the field exceeds its bound.
    let input = cat(&[&[4, 1, 0, 80, 1, 2, 3, 4], &[b'x'; 300]]);
    let (_, e) = failed(&input);
    assert!(matches!(e, SocksError::FieldTooLong { .. }));
}

#[test]
fn incomplete_inputs_need_more() {
    let full = cat(&[
        &[5, 1, 2],
        &[1, 1, b'u', 1, b'p'],
        &socks5_domain_request(1, b"a.b", 1),
    ]);
    for n in 0..full.len() {
        assert!(
            matches!(run(&full[..n]), Outcome::Incomplete(_)),
            "prefix of {n} bytes"
        );
    }
    let full = cat(&[&[4, 1, 0, 80, 0, 0, 0, 1], b"u", &[0], b"h", &[0]]);
    for n in 0..full.len() {
        assert!(matches!(run(&full[..n]), Outcome::Incomplete(_)));
    }
}

#[test]
fn buffering_is_bounded() {
    // A huge chunk is fine: only the message is taken.
    let mut input = cat(&[&[5, 1, 0], &[5, 1, 0, 1, 1, 2, 3, 4, 0, 80]]);
    input.extend(std::iter::repeat_n(0xAA, 1 << 20));
    let (_, _, early) = done(&input);
    assert_eq!(early.len(), 1 << 20);
    const { assert!(MAX_MESSAGE_LEN >= 520) };
}

#[test]
fn final_replies_in_each_protocol() {
    let bound = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)), 9050);
    assert_eq!(
        reply(SocksVersion::V5, ReplyCode::Succeeded, Some(bound)),
        [5, 0, 0, 1, 127, 0, 0, 1, 0x23, 0x5A]
    );
    assert_eq!(
        reply(SocksVersion::V5, ReplyCode::CommandNotSupported, None),
        [5, 7, 0, 1, 0, 0, 0, 0, 0, 0]
    );
    assert_eq!(
        reply(SocksVersion::V4, ReplyCode::Succeeded, Some(bound)),
        [0, 0x5A, 0x23, 0x5A, 127, 0, 0, 1]
    );
    assert_eq!(
        reply(SocksVersion::V4, ReplyCode::NotAllowed, None),
        [0, 0x5B, 0, 0, 0, 0, 0, 0]
    );
}

#[test]
fn debug_output_is_redacted() {
    let input = cat(&[&[5, 1, 2], &[1, 6], b"secret", &[6], b"passwd"]);
    let mut hs = SocksHandshake::new();
    let _ = hs.feed(&input).unwrap();
    let _ = hs.feed(&input[3..]).unwrap();
    let _ = hs.feed(&socks5_domain_request(1, b"hidden.example", 80)[..8]);
    let dbg = format!("{hs:?}");
    assert!(!dbg.contains("secret") && !dbg.contains("hid"), "{dbg}");
    let req = SocksRequest {
        version: SocksVersion::V5,
        command: SocksCommand::Connect,
        target: host("hidden.example"),
        port: 1,
        auth: SocksAuth::Username {
            user: b"secret".to_vec(),
            pass: b"passwd".to_vec(),
        },
    };
    let dbg = format!("{req:?}");
    assert!(!dbg.contains("secret") && !dbg.contains("hidden") && !dbg.contains("passwd"));
}
