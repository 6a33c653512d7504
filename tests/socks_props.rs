//! Property tests: any valid request, encoded by a test-only client encoder and fed in
//! arbitrary chunks, parses back to itself with its early data intact; arbitrary bytes
//! never panic either parser.

#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(clippy::panic, clippy::indexing_slicing)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use allium::cell::{Hostname, TargetAddr};
use allium::client::socks::{
    HttpConnectHandshake, SocksAuth, SocksCommand, SocksError, SocksHandshake, SocksRequest,
    SocksVersion, Step,
};
use proptest::prelude::*;

/// How a client chooses to encode a request (several wire forms decode to one request).
#[derive(Debug, Clone)]
struct Encoding {
    /// SOCKS5: extra method codes offered besides the needed one(s).
    extra_methods: Vec<u8>,
    /// SOCKS5 / SOCKS4a / HTTP: send an IP target as a name (IP literal string).
    ip_as_name: bool,
}

/// What a client sends for `req` (all messages, without waiting for replies), and the
/// replies the server must produce before the request completes.
fn encode(req: &SocksRequest, enc: &Encoding) -> (Vec<u8>, Vec<u8>) {
    let name_bytes = |t: &TargetAddr| -> Vec<u8> {
        match t {
            TargetAddr::Hostname(h) => h.as_str().as_bytes().to_vec(),
            TargetAddr::Ip(ip) => ip.to_string().into_bytes(),
        }
    };
    match req.version {
        SocksVersion::V5 => {
            let mut out = vec![5];
            let mut methods = enc.extra_methods.clone();
            let mut replies = vec![5];
            match &req.auth {
                SocksAuth::Username { .. } => {
                    methods.push(2);
                    replies.push(2);
                }
                _ => {
                    methods.push(0);
                    replies.push(0);
                }
            }
            out.push(methods.len() as u8);
            out.extend(methods);
            if let SocksAuth::Username { user, pass } = &req.auth {
                out.extend([1, user.len() as u8]);
                out.extend(user);
                out.push(pass.len() as u8);
                out.extend(pass);
                replies.extend([1, 0]);
            }
            let cmd = match req.command {
                SocksCommand::Connect => 1,
                SocksCommand::Bind => 2,
                SocksCommand::UdpAssociate => 3,
                SocksCommand::Resolve => 0xF0,
            };
            out.extend([5, cmd, 0]);
            match &req.target {
                TargetAddr::Ip(ip) if !enc.ip_as_name => match ip {
                    IpAddr::V4(v4) => {
                        out.push(1);
                        out.extend(v4.octets());
                    }
                    IpAddr::V6(v6) => {
                        out.push(4);
                        out.extend(v6.octets());
                    }
                },
                t => {
                    let name = name_bytes(t);
                    out.extend([3, name.len() as u8]);
                    out.extend(name);
                }
            }
            out.extend(req.port.to_be_bytes());
            (out, replies)
        }
        SocksVersion::V4 => {
            let cmd = match req.command {
                SocksCommand::Connect => 1,
                SocksCommand::Bind => 2,
                _ => unreachable!(),
            };
            let mut out = vec![4, cmd];
            out.extend(req.port.to_be_bytes());
            let name = match &req.target {
                TargetAddr::Ip(IpAddr::V4(v4)) if !enc.ip_as_name => {
                    out.extend(v4.octets());
                    None
                }
                t => {
                    out.extend([0, 0, 0, 1]);
                    Some(name_bytes(t))
                }
            };
            match &req.auth {
                SocksAuth::Socks4UserId(id) => out.extend(id),
                SocksAuth::None => {}
                SocksAuth::Username { .. } => unreachable!(),
            }
            out.push(0);
            if let Some(name) = name {
                out.extend(name);
                out.push(0);
            }
            (out, vec![])
        }
        SocksVersion::HttpConnect => {
            let host = match &req.target {
                TargetAddr::Hostname(h) => h.as_str().to_owned(),
                TargetAddr::Ip(IpAddr::V4(v4)) => v4.to_string(),
                TargetAddr::Ip(IpAddr::V6(v6)) => format!("[{v6}]"),
            };
            let mut head = format!("CONNECT {host}:{} HTTP/1.1\r\nHost: {host}\r\n", req.port);
            if let SocksAuth::Username { user, pass } = &req.auth {
                let mut creds = user.clone();
                creds.push(b':');
                creds.extend(pass);
                head.push_str(&format!("Proxy-Authorization: Basic {}\r\n", b64(&creds)));
            }
            head.push_str("\r\n");
            (head.into_bytes(), vec![])
        }
    }
}

/// Test-only base64 encoder (standard alphabet, padded).
fn b64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                s.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

/// Replies written, and the request with its early data or the refusal (`None`: the
/// input ended first).
type Outcome = (Vec<u8>, Option<Result<(SocksRequest, Vec<u8>), SocksError>>);

/// Feeds `input` cut at `cuts`, following the `Step` protocol.
/// Returns the replies, and the request with the early data, or the error.
fn drive<F>(mut feed: F, input: &[u8], cuts: &[usize]) -> Outcome
where
    F: FnMut(&[u8]) -> Result<Step, SocksError>,
{
    let mut bounds: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
    bounds.push(0);
    bounds.push(input.len());
    bounds.sort_unstable();
    let mut replies = Vec::new();
    for w in bounds.windows(2) {
        let mut rest = &input[w[0]..w[1]];
        loop {
            match feed(rest) {
                Ok(Step::NeedMore) => break,
                Ok(Step::Reply { reply, consumed }) => {
                    assert!(consumed <= rest.len());
                    replies.extend(reply);
                    rest = &rest[consumed..];
                }
                Ok(Step::Done { request, consumed }) => {
                    assert!(consumed <= rest.len());
                    let mut early = rest[consumed..].to_vec();
                    early.extend_from_slice(&input[w[1]..]);
                    return (replies, Some(Ok((request, early))));
                }
                Err(e) => return (replies, Some(Err(e))),
            }
        }
    }
    (replies, None)
}

fn hostname() -> impl Strategy<Value = Hostname> {
    prop_oneof![
        "[A-Za-z0-9._-]{1,40}",
        "[a-z0-9]{16,56}\\.onion",
        "[A-Za-z0-9._-]{200,255}",
    ]
    .prop_filter_map("not a hostname", |s| Hostname::new(&s).ok())
}

fn ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(|o| IpAddr::V4(Ipv4Addr::from(o))),
        any::<[u8; 16]>().prop_map(|o| IpAddr::V6(Ipv6Addr::from(o))),
    ]
}

fn target() -> impl Strategy<Value = TargetAddr> {
    prop_oneof![
        hostname().prop_map(TargetAddr::Hostname),
        ip().prop_map(TargetAddr::Ip),
    ]
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..=max)
}

fn socks5_request() -> impl Strategy<Value = SocksRequest> {
    let command = prop_oneof![
        Just(SocksCommand::Connect),
        Just(SocksCommand::Bind),
        Just(SocksCommand::UdpAssociate),
        Just(SocksCommand::Resolve),
    ];
    let auth = prop_oneof![
        Just(SocksAuth::None),
        (bytes(255), bytes(255)).prop_map(|(user, pass)| SocksAuth::Username { user, pass }),
    ];
    (command, target(), any::<u16>(), auth).prop_map(|(command, target, port, auth)| {
        let port = if command == SocksCommand::Connect {
            port.max(1)
        } else {
            port
        };
        SocksRequest {
            version: SocksVersion::V5,
            command,
            target,
            port,
            auth,
        }
    })
}

fn socks4_request() -> impl Strategy<Value = SocksRequest> {
    let command = prop_oneof![Just(SocksCommand::Connect), Just(SocksCommand::Bind)];
    // Plain SOCKS4 addresses must not look like SOCKS4a markers (0.0.0.x).
    let target = target().prop_map(|t| match t {
        TargetAddr::Ip(IpAddr::V4(v4)) if v4.octets()[..3] == [0, 0, 0] => {
            TargetAddr::Ip(IpAddr::V4(Ipv4Addr::new(1, 0, 0, v4.octets()[3])))
        }
        t => t,
    });
    let user_id = proptest::collection::vec(1u8..=255, 0..=255);
    (command, target, 1u16.., user_id).prop_map(|(command, target, port, id)| SocksRequest {
        version: SocksVersion::V4,
        command,
        target,
        port,
        auth: if id.is_empty() {
            SocksAuth::None
        } else {
            SocksAuth::Socks4UserId(id)
        },
    })
}

fn http_request() -> impl Strategy<Value = SocksRequest> {
    let auth = prop_oneof![
        Just(SocksAuth::None),
        (
            proptest::collection::vec(any::<u8>().prop_filter("no ':'", |b| *b != b':'), 0..64),
            bytes(64)
        )
            .prop_map(|(user, pass)| SocksAuth::Username { user, pass }),
    ];
    (target(), 1u16.., auth).prop_map(|(target, port, auth)| SocksRequest {
        version: SocksVersion::HttpConnect,
        command: SocksCommand::Connect,
        target,
        port,
        auth,
    })
}

fn encoding() -> impl Strategy<Value = Encoding> {
    (
        proptest::collection::vec(
            prop_oneof![Just(1u8), Just(3), Just(0x80), Just(0xFE)],
            0..4,
        ),
        any::<bool>(),
    )
        .prop_map(|(extra_methods, ip_as_name)| Encoding {
            extra_methods,
            ip_as_name,
        })
}

fn check_roundtrip(
    req: &SocksRequest,
    enc: &Encoding,
    early: &[u8],
    cuts: &[usize],
) -> Result<(), TestCaseError> {
    let (mut input, expected_replies) = encode(req, enc);
    input.extend_from_slice(early);
    let (replies, result) = if req.version == SocksVersion::HttpConnect {
        let mut hs = HttpConnectHandshake::new();
        drive(|b| hs.feed(b), &input, cuts)
    } else {
        let mut hs = SocksHandshake::new();
        drive(|b| hs.feed(b), &input, cuts)
    };
    prop_assert_eq!(replies, expected_replies);
    let (got, got_early) = result.expect("complete").expect("accepted");
    prop_assert_eq!(&got, req);
    prop_assert_eq!(got_early, early);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn socks5_roundtrip(req in socks5_request(), enc in encoding(), early in bytes(64),
                        cuts in proptest::collection::vec(any::<usize>(), 0..8)) {
        check_roundtrip(&req, &enc, &early, &cuts)?;
    }

    #[test]
    fn socks4_roundtrip(req in socks4_request(), enc in encoding(), early in bytes(64),
                        cuts in proptest::collection::vec(any::<usize>(), 0..8)) {
        check_roundtrip(&req, &enc, &early, &cuts)?;
    }

    #[test]
    fn http_roundtrip(req in http_request(), enc in encoding(), early in bytes(64),
                      cuts in proptest::collection::vec(any::<usize>(), 0..8)) {
        check_roundtrip(&req, &enc, &early, &cuts)?;
    }

    #[test]
    fn byte_at_a_time_equals_all_at_once(req in socks5_request(), enc in encoding(),
                                         early in bytes(16)) {
        let (mut input, _) = encode(&req, &enc);
        input.extend_from_slice(&early);
        let every: Vec<usize> = (0..input.len()).collect();
        let mut a = SocksHandshake::new();
        let mut b = SocksHandshake::new();
        prop_assert_eq!(drive(|x| a.feed(x), &input, &[]), drive(|x| b.feed(x), &input, &every));
    }

    #[test]
    fn random_bytes_never_panic(prefix in prop_oneof![
                                    Just(vec![]), Just(vec![4u8]), Just(vec![5u8]),
                                    Just(vec![5u8, 1, 0, 5]), Just(vec![5u8, 1, 2, 1]),
                                    Just(b"CONNECT ".to_vec()),
                                ],
                                rest in bytes(1200),
                                cuts in proptest::collection::vec(any::<usize>(), 0..8)) {
        let input = [prefix, rest].concat();
        let mut whole = SocksHandshake::new();
        let mut cut = SocksHandshake::new();
        let a = drive(|b| whole.feed(b), &input, &[]);
        let b = drive(|b| cut.feed(b), &input, &cuts);
        prop_assert_eq!(a, b);
        let mut whole = HttpConnectHandshake::new();
        let mut cut = HttpConnectHandshake::new();
        let a = drive(|b| whole.feed(b), &input, &[]);
        let b = drive(|b| cut.feed(b), &input, &cuts);
        prop_assert_eq!(a, b);
    }

    #[test]
    fn mutated_valid_requests_never_panic(req in socks5_request(), enc in encoding(),
                                          flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4),
                                          cuts in proptest::collection::vec(any::<usize>(), 0..8)) {
        let (mut input, _) = encode(&req, &enc);
        for (i, b) in flips {
            let n = input.len();
            input[i % n] = b;
        }
        let mut whole = SocksHandshake::new();
        let mut cut = SocksHandshake::new();
        let a = drive(|b| whole.feed(b), &input, &[]);
        prop_assert_eq!(&a, &drive(|b| cut.feed(b), &input, &cuts));
        if let (_, Some(Err(e))) = a {
            let _ = e.reply();
        }
    }

    #[test]
    fn mutated_http_never_panics(req in http_request(), enc in encoding(),
                                 flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4),
                                 cuts in proptest::collection::vec(any::<usize>(), 0..8)) {
        let (mut input, _) = encode(&req, &enc);
        for (i, b) in flips {
            let n = input.len();
            input[i % n] = b;
        }
        let mut whole = HttpConnectHandshake::new();
        let mut cut = HttpConnectHandshake::new();
        prop_assert_eq!(drive(|b| whole.feed(b), &input, &[]), drive(|b| cut.feed(b), &input, &cuts));
    }
}

proptest! {
    /// SOCKS5 UDP header (RFC 1928 §7): any datagram encodes and parses back to itself,
    /// every cut inside the header is refused as truncated, and mutated bytes never panic.
    #[test]
    fn udp_datagram_encode_parse_identity(
        target in target(),
        port in 1u16..,
        data in proptest::collection::vec(any::<u8>(), 0..=allium::client::socks::MAX_UDP_PAYLOAD),
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4),
    ) {
        use allium::client::socks::{encode_udp_datagram, parse_udp_datagram, UdpHeaderError};
        let bytes = encode_udp_datagram(&target, port, &data);
        let d = parse_udp_datagram(&bytes).unwrap();
        prop_assert_eq!(&d.target, &target);
        prop_assert_eq!(d.port, port);
        prop_assert_eq!(d.data, &data[..]);
        let header = bytes.len() - data.len();
        for cut in 0..header {
            prop_assert!(matches!(parse_udp_datagram(&bytes[..cut]), Err(UdpHeaderError::Truncated(_))));
        }
        let mut mutated = bytes.clone();
        for (i, b) in flips {
            let n = mutated.len();
            mutated[i % n] = b;
        }
        if let Ok(m) = parse_udp_datagram(&mutated) {
            let again = encode_udp_datagram(&m.target, m.port, m.data);
            prop_assert_eq!(parse_udp_datagram(&again).unwrap(), m);
        }
    }
}
