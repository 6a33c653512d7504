//! HTTP CONNECT handshakes: accepted forms, every refusal, chunking independence, early data.

#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(clippy::panic, clippy::indexing_slicing)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use allium::cell::{Hostname, TargetAddr};
use allium::client::socks::{
    reply, HttpConnectHandshake, ReplyCode, SocksAuth, SocksCommand, SocksError, SocksRequest,
    SocksVersion, Step, MAX_HTTP_HEADERS, MAX_HTTP_HEAD_LEN,
};

#[derive(Debug, PartialEq)]
enum Outcome {
    Done(SocksRequest, Vec<u8>),
    Failed(SocksError),
    Incomplete,
}

fn drive(input: &[u8], chunk: usize) -> Outcome {
    let mut hs = HttpConnectHandshake::new();
    let chunks: Vec<&[u8]> = input.chunks(chunk.max(1)).collect();
    for (i, c) in chunks.iter().enumerate() {
        match hs.feed(c) {
            Ok(Step::NeedMore) => assert!(!hs.is_finished()),
            Ok(Step::Reply { .. }) => panic!("HTTP CONNECT never replies mid-handshake"),
            Ok(Step::Done { request, consumed }) => {
                assert!(hs.is_finished());
                assert_eq!(hs.feed(b"x"), Err(SocksError::Finished));
                let mut early = c[consumed..].to_vec();
                for later in &chunks[i + 1..] {
                    early.extend_from_slice(later);
                }
                return Outcome::Done(request, early);
            }
            Err(e) => {
                assert!(hs.is_finished());
                return Outcome::Failed(e);
            }
        }
    }
    Outcome::Incomplete
}

fn run(input: &[u8]) -> Outcome {
    let whole = drive(input, input.len().max(1));
    for chunk in [1, 2, 3, 4, 5, 13, 100] {
        assert_eq!(drive(input, chunk), whole, "chunk size {chunk}");
    }
    whole
}

fn done(input: &str) -> (SocksRequest, Vec<u8>) {
    match run(input.as_bytes()) {
        Outcome::Done(r, e) => (r, e),
        other => panic!("{input:?}: expected Done, got {other:?}"),
    }
}

fn failed(input: &[u8]) -> SocksError {
    match run(input) {
        Outcome::Failed(e) => e,
        other => panic!(
            "{:?}: expected Failed, got {other:?}",
            String::from_utf8_lossy(input)
        ),
    }
}

fn host(name: &str) -> TargetAddr {
    TargetAddr::Hostname(Hostname::new(name).unwrap())
}

#[test]
fn minimal_connect() {
    let (req, early) = done("CONNECT example.com:443 HTTP/1.1\r\n\r\n");
    assert_eq!(
        req,
        SocksRequest {
            version: SocksVersion::HttpConnect,
            command: SocksCommand::Connect,
            target: host("example.com"),
            port: 443,
            auth: SocksAuth::None,
        }
    );
    assert!(early.is_empty());
}

#[test]
fn typical_curl_request_with_early_data() {
    let (req, early) = done(
        "CONNECT www.example.org:443 HTTP/1.1\r\nHost: www.example.org:443\r\n\
         User-Agent: curl/8.5.0\r\nProxy-Connection: Keep-Alive\r\n\r\n\x16\x03\x01rest",
    );
    assert_eq!(req.target, host("www.example.org"));
    assert_eq!(early, b"\x16\x03\x01rest");
}

#[test]
fn address_forms() {
    let (req, _) = done("CONNECT 192.0.2.1:80 HTTP/1.0\r\n\r\n");
    assert_eq!(
        req.target,
        TargetAddr::Ip(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)))
    );
    let (req, _) = done("CONNECT [2001:db8::1]:8443 HTTP/1.1\r\n\r\n");
    assert_eq!(
        req.target,
        TargetAddr::Ip(IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)))
    );
    assert_eq!(req.port, 8443);
    let (req, _) = done("CONNECT [::ffff:1.2.3.4]:1 HTTP/1.1\r\n\r\n");
    assert_eq!(
        req.target,
        TargetAddr::Ip("::ffff:1.2.3.4".parse().unwrap())
    );
    let (req, _) = done("CONNECT abcdefghij234567.onion:65535 HTTP/1.1\r\n\r\n");
    assert_eq!(req.target, host("abcdefghij234567.onion"));
    assert_eq!(req.port, 65535);
}

#[test]
fn proxy_authorization_basic() {
    // "alice:s3cr:et" — the password may contain ':'.
    let (req, _) = done(
        "CONNECT a.b:1 HTTP/1.1\r\nproxy-AUTHORIZATION:   basic YWxpY2U6czNjcjpldA==  \r\n\r\n",
    );
    let key = SocksAuth::Username {
        user: b"alice".to_vec(),
        pass: b"s3cr:et".to_vec(),
    };
    assert_eq!(req.auth, key);
    assert_eq!(req.isolation_key(), &key);
    // ":" alone: empty user and password.
    let (req, _) = done("CONNECT a.b:1 HTTP/1.1\r\nProxy-Authorization: Basic Og==\r\n\r\n");
    assert_eq!(
        req.auth,
        SocksAuth::Username {
            user: vec![],
            pass: vec![]
        }
    );
}

#[test]
fn harmless_headers_accepted() {
    let (req, _) = done(
        "CONNECT a.b:1 HTTP/1.1\r\nContent-Length: 0\r\nX-Empty:\r\nX-Tab:\tv\tw\r\nX-8bit: \u{e9}\r\n\r\n",
    );
    assert_eq!(req.port, 1);
}

#[test]
fn limits_are_exact() {
    let mut ok = String::from("CONNECT a.b:1 HTTP/1.1\r\n");
    for i in 0..MAX_HTTP_HEADERS {
        ok.push_str(&format!("X-{i}: v\r\n"));
    }
    let too_many = format!("{ok}X-last: v\r\n\r\n");
    ok.push_str("\r\n");
    done(&ok);
    assert_eq!(
        failed(too_many.as_bytes()),
        SocksError::HttpTooManyHeaders(MAX_HTTP_HEADERS)
    );

    // A head of exactly the maximum size is accepted; one byte more is refused.
    let prefix = "CONNECT a.b:1 HTTP/1.1\r\nX: ";
    let pad = MAX_HTTP_HEAD_LEN - prefix.len() - 4;
    let exact = format!("{prefix}{}\r\n\r\nearly", "v".repeat(pad));
    let (_, early) = done(&exact);
    assert_eq!(early, b"early");
    let over = format!("{prefix}{}\r\n\r\n", "v".repeat(pad + 1));
    assert!(matches!(
        failed(over.as_bytes()),
        SocksError::TooLarge {
            version: SocksVersion::HttpConnect,
            ..
        }
    ));
}

#[test]
fn other_methods_get_405() {
    for m in [
        "GET / HTTP/1.1",
        "POST http://x/ HTTP/1.1",
        "connect a.b:1 HTTP/1.1",
        "PRI * HTTP/2.0",
    ] {
        let input = format!("{m}\r\nHost: x\r\n\r\n");
        let e = failed(input.as_bytes());
        assert_eq!(e, SocksError::HttpMethodNotAllowed, "{m}");
        let r = String::from_utf8(e.reply().unwrap()).unwrap();
        assert!(r.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"), "{r}");
        assert!(r.contains("\r\nAllow: CONNECT\r\n"));
        // Refused as soon as the request line ends, before the headers.
        let mut hs = HttpConnectHandshake::new();
        assert_eq!(
            hs.feed(format!("{m}\r\n").as_bytes()),
            Err(SocksError::HttpMethodNotAllowed)
        );
    }
}

#[test]
fn malformed_requests_get_400() {
    let bad: &[&[u8]] = &[
        b"\r\nCONNECT a.b:1 HTTP/1.1\r\n\r\n",
        b"CONNECT a.b:1 HTTP/1.1\n\n",
        b"CONNECT a.b:1 HTTP/1.1\r\n\n",
        b"CONNECT a.b:1 HTTP/1.1\rX\r\n\r\n",
        b"CONNECT  a.b:1 HTTP/1.1\r\n\r\n",
        b"CONNECT a.b:1  HTTP/1.1\r\n\r\n",
        b"CONNECT a.b:1 HTTP/1.1 \r\n\r\n",
        b"CONNECT a.b:1\r\n\r\n",
        b"CONNECT a.b:1 HTTP/2\r\n\r\n",
        b"CONNECT a.b:1 http/1.1\r\n\r\n",
        b"CON(NECT a.b:1 HTTP/1.1\r\n\r\n",
        b"CONNECT a.b HTTP/1.1\r\n\r\n",
        b"CONNECT a.b: HTTP/1.1\r\n\r\n",
        b"CONNECT a.b:+1 HTTP/1.1\r\n\r\n",
        b"CONNECT a.b:65536 HTTP/1.1\r\n\r\n",
        b"CONNECT a.b:000080 HTTP/1.1\r\n\r\n",
        b"CONNECT ::1:80 HTTP/1.1\r\n\r\n",
        b"CONNECT [::1:80 HTTP/1.1\r\n\r\n",
        b"CONNECT [::1]80 HTTP/1.1\r\n\r\n",
        b"CONNECT [1.2.3.4]:80 HTTP/1.1\r\n\r\n",
        b"CONNECT [fe80::1%eth0]:80 HTTP/1.1\r\n\r\n",
        b"CONNECT http://a.b:1/ HTTP/1.1\r\n\r\n",
        b"CONNECT a.b:1 HTTP/1.1\r\n folded: x\r\n\r\n",
        b"CONNECT a.b:1 HTTP/1.1\r\nNoColon\r\n\r\n",
        b"CONNECT a.b:1 HTTP/1.1\r\nBad Name: x\r\n\r\n",
        b"CONNECT a.b:1 HTTP/1.1\r\nName : x\r\n\r\n",
        b"CONNECT a.b:1 HTTP/1.1\r\n: x\r\n\r\n",
        b"CONNECT a.b:1 HTTP/1.1\r\nX: a\x00b\r\n\r\n",
        b"CONNECT a.b:1 HTTP/1.1\r\nX: a\x7fb\r\n\r\n",
        b"CONNECT a.b:1 HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
        b"CONNECT a.b:1 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"CONNECT a.b:1 HTTP/1.1\r\nProxy-Authorization: Bearer abc\r\n\r\n",
        b"CONNECT a.b:1 HTTP/1.1\r\nProxy-Authorization: Basic\r\n\r\n",
        b"CONNECT a.b:1 HTTP/1.1\r\nProxy-Authorization: Basic !!!!\r\n\r\n",
        b"CONNECT a.b:1 HTTP/1.1\r\nProxy-Authorization: Basic YWxpY2U=\r\n\r\n",
        b"CONNECT a.b:1 HTTP/1.1\r\nProxy-Authorization: Basic Og==\r\nProxy-Authorization: Basic Og==\r\n\r\n",
    ];
    for input in bad {
        let e = failed(input);
        assert!(
            matches!(e, SocksError::HttpMalformed(_)),
            "{e:?} for {:?}",
            String::from_utf8_lossy(input)
        );
        let r = e.reply().unwrap();
        assert!(r.starts_with(b"HTTP/1.1 400 Bad Request\r\n"));
    }
}

#[test]
fn invalid_destinations() {
    let http = SocksVersion::HttpConnect;
    for input in [
        "CONNECT bad_host!:1 HTTP/1.1\r\n\r\n",
        "CONNECT :1 HTTP/1.1\r\n\r\n",
        "CONNECT user@a.b:1 HTTP/1.1\r\n\r\n",
    ] {
        assert_eq!(
            failed(input.as_bytes()),
            SocksError::InvalidHostname { version: http },
            "{input}"
        );
    }
    let e = failed(b"CONNECT a.b:0 HTTP/1.1\r\n\r\n");
    assert_eq!(e, SocksError::ZeroPort { version: http });
    assert!(e.reply().unwrap().starts_with(b"HTTP/1.1 400 "));
}

#[test]
fn incomplete_head_needs_more() {
    let full = b"CONNECT a.b:1 HTTP/1.1\r\nHost: a.b\r\n\r\n";
    for n in 0..full.len() {
        assert_eq!(run(&full[..n]), Outcome::Incomplete, "prefix {n}");
    }
}

#[test]
fn success_and_error_replies() {
    assert_eq!(
        reply(SocksVersion::HttpConnect, ReplyCode::Succeeded, None),
        b"HTTP/1.1 200 Connection established\r\n\r\n"
    );
    let r = reply(SocksVersion::HttpConnect, ReplyCode::TtlExpired, None);
    assert!(r.starts_with(b"HTTP/1.1 504 Gateway Timeout\r\n"));
    let r = reply(SocksVersion::HttpConnect, ReplyCode::NotAllowed, None);
    assert!(r.starts_with(b"HTTP/1.1 403 Forbidden\r\n"));
    let r = reply(SocksVersion::HttpConnect, ReplyCode::HostUnreachable, None);
    assert!(r.starts_with(b"HTTP/1.1 404 Not Found\r\n"));
    let r = reply(
        SocksVersion::HttpConnect,
        ReplyCode::ConnectionRefused,
        None,
    );
    assert!(r.starts_with(b"HTTP/1.1 502 Bad Gateway\r\n"));
}

#[test]
fn debug_output_is_redacted() {
    let mut hs = HttpConnectHandshake::new();
    let _ = hs
        .feed(b"CONNECT hidden.example:1 HTTP/1.1\r\nProxy-Authorization: Basic c2VjcmV0Og==\r\n");
    let dbg = format!("{hs:?}");
    assert!(!dbg.contains("hidden") && !dbg.contains("c2Vj"), "{dbg}");
}
