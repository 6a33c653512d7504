//! The control protocol's command grammar (docs/control.md): one line in, one
//! [`Command`] out. The bytes come from whoever connects, so the parser is strict and
//! total: printable ASCII only, bounded lengths and counts, every error typed.
//! [`Command::encode`] is its inverse (tests and fuzzing check encode → parse).

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use thiserror::Error;
use zeroize::Zeroizing;

/// Longest command line accepted, without its line ending.
pub const MAX_LINE: usize = 4096;
/// Most keys in one GETINFO, events in one SETEVENTS, ports in one ADD_ONION.
pub const MAX_ITEMS: usize = 32;
/// Longest GETINFO key.
const MAX_KEY: usize = 64;
/// The key type name of allium's service keys in ADD_ONION (Tor says `ED25519-V3`).
pub const KEY_TYPE: &str = "ALLIUM-ED25519";
/// Length of a service id (an address without `.allium`).
pub const SERVICE_ID_LEN: usize = 56;

/// A parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `PROTOCOLINFO [version]`: which authentication methods work (allowed before auth).
    ProtocolInfo,
    /// `AUTHENTICATE [hex | "quoted"]`: the cookie (hex) or the password (quoted).
    Authenticate(Credential),
    /// `QUIT`.
    Quit,
    /// `GETINFO key...`.
    GetInfo(Vec<String>),
    /// `SIGNAL name`.
    Signal(Signal),
    /// `SETEVENTS [EXTENDED] event...` (an empty list turns events off).
    SetEvents(Vec<EventKind>),
    /// `ADD_ONION key [Flags=...] Port=virt[,target]...`.
    AddOnion(AddOnion),
    /// `DEL_ONION service-id`.
    DelOnion(String),
}

/// What AUTHENTICATE carried. Wiped on drop; never printed.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// Nothing (only useful when no authentication is configured, which allium refuses).
    None,
    /// Hex digits, decoded (the cookie).
    Hex(Zeroizing<Vec<u8>>),
    /// A quoted string, unescaped (a password).
    Quoted(Zeroizing<Vec<u8>>),
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credential(..)")
    }
}

/// SIGNAL names understood.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Close every circuit; new streams use new ones.
    NewNym,
}

/// Event kinds SETEVENTS understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// Circuits built.
    Circ,
    /// Streams opened through the SOCKS port.
    Stream,
}

impl EventKind {
    /// The name on the wire.
    pub const fn name(self) -> &'static str {
        match self {
            EventKind::Circ => "CIRC",
            EventKind::Stream => "STREAM",
        }
    }
}

/// An ADD_ONION request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddOnion {
    /// A new key or a given one.
    pub key: KeySpec,
    /// Do not return the private key.
    pub discard_pk: bool,
    /// Keep the service when this control connection closes.
    pub detach: bool,
    /// Virtual port → target.
    pub ports: Vec<(u16, SocketAddr)>,
}

/// The service key of ADD_ONION.
#[derive(Clone, PartialEq, Eq)]
pub enum KeySpec {
    /// `NEW:BEST` or `NEW:ALLIUM-ED25519`.
    New,
    /// `ALLIUM-ED25519:<base64 of the 32-byte seed>`.
    Given(Zeroizing<[u8; 32]>),
}

impl std::fmt::Debug for KeySpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeySpec::New => f.write_str("New"),
            KeySpec::Given(_) => f.write_str("Given(..)"),
        }
    }
}

/// Why a line is not a command. Each maps to a Tor reply code ([`ParseError::code`]).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ParseError {
    /// Longer than [`MAX_LINE`].
    #[error("Line too long")]
    TooLong,
    /// A byte outside printable ASCII.
    #[error("Invalid character in command")]
    BadByte,
    /// An unknown keyword (echoed, it is printable and short).
    #[error("Unrecognized command \"{0}\"")]
    UnknownCommand(String),
    /// Malformed arguments.
    #[error("Syntax error: {0}")]
    Syntax(&'static str),
    /// An unknown GETINFO key, signal, event or flag.
    #[error("Unrecognized {0}")]
    Unrecognized(&'static str),
}

impl ParseError {
    /// The reply code Tor uses for this kind of error.
    pub const fn code(&self) -> u16 {
        match self {
            ParseError::TooLong | ParseError::BadByte | ParseError::Syntax(_) => 512,
            ParseError::UnknownCommand(_) => 510,
            ParseError::Unrecognized(_) => 552,
        }
    }
}

/// Parses one line (without its CRLF or LF).
pub fn parse_line(line: &[u8]) -> Result<Command, ParseError> {
    if line.len() > MAX_LINE {
        return Err(ParseError::TooLong);
    }
    if !line.iter().all(|b| (0x20..0x7f).contains(b)) {
        return Err(ParseError::BadByte);
    }
    // Printable ASCII is UTF-8.
    let line = std::str::from_utf8(line).map_err(|_| ParseError::BadByte)?;
    let (keyword, rest) = line.split_once(' ').unwrap_or((line, ""));
    let args = || rest.split(' ').filter(|a| !a.is_empty());
    match keyword.to_ascii_uppercase().as_str() {
        "PROTOCOLINFO" => {
            if args().any(|a| !a.bytes().all(|b| b.is_ascii_digit())) {
                return Err(ParseError::Syntax("PROTOCOLINFO takes version numbers"));
            }
            Ok(Command::ProtocolInfo)
        }
        "AUTHENTICATE" => parse_credential(rest.trim_matches(' ')).map(Command::Authenticate),
        "QUIT" => no_args(args()).map(|()| Command::Quit),
        "GETINFO" => {
            let keys: Vec<String> = args().map(str::to_string).collect();
            if keys.is_empty() || keys.len() > MAX_ITEMS {
                return Err(ParseError::Syntax("GETINFO takes 1 to 32 keys"));
            }
            if !keys.iter().all(|k| valid_key(k)) {
                return Err(ParseError::Syntax("bad GETINFO key"));
            }
            Ok(Command::GetInfo(keys))
        }
        "SIGNAL" => {
            let mut a = args();
            let (Some(name), None) = (a.next(), a.next()) else {
                return Err(ParseError::Syntax("SIGNAL takes one name"));
            };
            match name.to_ascii_uppercase().as_str() {
                "NEWNYM" => Ok(Command::Signal(Signal::NewNym)),
                _ => Err(ParseError::Unrecognized("signal")),
            }
        }
        "SETEVENTS" => {
            let mut out = Vec::new();
            for (i, a) in args().enumerate() {
                let upper = a.to_ascii_uppercase();
                if i == 0 && upper == "EXTENDED" {
                    continue; // Tor ignores it too: events are always extended.
                }
                let kind = match upper.as_str() {
                    "CIRC" => EventKind::Circ,
                    "STREAM" => EventKind::Stream,
                    _ => return Err(ParseError::Unrecognized("event")),
                };
                if out.len() >= MAX_ITEMS {
                    return Err(ParseError::Syntax("too many events"));
                }
                if !out.contains(&kind) {
                    out.push(kind);
                }
            }
            Ok(Command::SetEvents(out))
        }
        "ADD_ONION" => parse_add_onion(args()).map(Command::AddOnion),
        "DEL_ONION" => {
            let mut a = args();
            let (Some(id), None) = (a.next(), a.next()) else {
                return Err(ParseError::Syntax("DEL_ONION takes one service id"));
            };
            if !valid_service_id(id) {
                return Err(ParseError::Syntax("bad service id"));
            }
            Ok(Command::DelOnion(id.to_string()))
        }
        _ => Err(ParseError::UnknownCommand(
            keyword.chars().take(32).collect(),
        )),
    }
}

fn no_args<'a>(mut args: impl Iterator<Item = &'a str>) -> Result<(), ParseError> {
    match args.next() {
        None => Ok(()),
        Some(_) => Err(ParseError::Syntax("no arguments expected")),
    }
}

fn valid_key(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= MAX_KEY
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'-' | b'_' | b'.'))
}

/// 56 characters of lowercase base32 (the address's alphabet).
pub fn valid_service_id(id: &str) -> bool {
    id.len() == SERVICE_ID_LEN && id.bytes().all(|b| matches!(b, b'a'..=b'z' | b'2'..=b'7'))
}

fn parse_credential(arg: &str) -> Result<Credential, ParseError> {
    if arg.is_empty() {
        return Ok(Credential::None);
    }
    if let Some(inner) = arg.strip_prefix('"') {
        let inner = inner
            .strip_suffix('"')
            .ok_or(ParseError::Syntax("unterminated quoted string"))?;
        let mut out = Zeroizing::new(Vec::with_capacity(inner.len()));
        let mut bytes = inner.bytes();
        while let Some(b) = bytes.next() {
            match b {
                b'\\' => match bytes.next() {
                    Some(e @ (b'\\' | b'"')) => out.push(e),
                    _ => return Err(ParseError::Syntax("bad escape in quoted string")),
                },
                b'"' => return Err(ParseError::Syntax("unescaped quote")),
                b => out.push(b),
            }
        }
        return Ok(Credential::Quoted(out));
    }
    decode_hex(arg)
        .map(|v| Credential::Hex(Zeroizing::new(v)))
        .ok_or(ParseError::Syntax(
            "credential must be hex or a quoted string",
        ))
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16);
    s.as_bytes()
        .chunks_exact(2)
        .map(|p| match p {
            [a, b] => Some((digit(*a)? * 16 + digit(*b)?) as u8),
            _ => None,
        })
        .collect()
}

fn parse_add_onion<'a>(mut args: impl Iterator<Item = &'a str>) -> Result<AddOnion, ParseError> {
    let key = args
        .next()
        .ok_or(ParseError::Syntax("ADD_ONION needs a key"))?;
    let (ktype, blob) = key
        .split_once(':')
        .ok_or(ParseError::Syntax("key must be TYPE:BLOB"))?;
    let key = if ktype.eq_ignore_ascii_case("NEW") {
        if !(blob.eq_ignore_ascii_case("BEST") || blob.eq_ignore_ascii_case(KEY_TYPE)) {
            return Err(ParseError::Unrecognized("key type"));
        }
        KeySpec::New
    } else if ktype.eq_ignore_ascii_case(KEY_TYPE) {
        let bytes = crate::client::socks::base64::decode(blob.as_bytes())
            .map(Zeroizing::new)
            .ok_or(ParseError::Syntax("key blob is not base64"))?;
        let seed: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| ParseError::Syntax("key must be 32 bytes"))?;
        KeySpec::Given(Zeroizing::new(seed))
    } else {
        return Err(ParseError::Unrecognized("key type"));
    };
    let mut req = AddOnion {
        key,
        discard_pk: false,
        detach: false,
        ports: Vec::new(),
    };
    for arg in args {
        let (name, value) = arg
            .split_once('=')
            .ok_or(ParseError::Syntax("expected Name=value"))?;
        if name.eq_ignore_ascii_case("Flags") {
            for flag in value.split(',') {
                match flag.to_ascii_lowercase().as_str() {
                    "discardpk" => req.discard_pk = true,
                    "detach" => req.detach = true,
                    _ => return Err(ParseError::Unrecognized("flag")),
                }
            }
        } else if name.eq_ignore_ascii_case("Port") {
            if req.ports.len() >= MAX_ITEMS {
                return Err(ParseError::Syntax("too many ports"));
            }
            req.ports.push(parse_port(value)?);
        } else {
            return Err(ParseError::Unrecognized("argument"));
        }
    }
    if req.ports.is_empty() {
        return Err(ParseError::Syntax("ADD_ONION needs at least one Port="));
    }
    Ok(req)
}

/// `virt` (target 127.0.0.1:virt), `virt,port` (127.0.0.1:port) or `virt,ip:port`.
fn parse_port(value: &str) -> Result<(u16, SocketAddr), ParseError> {
    let bad = ParseError::Syntax("bad Port= value");
    let port = |s: &str| s.parse::<u16>().ok().filter(|p| *p != 0);
    let (virt, target) = match value.split_once(',') {
        None => {
            let v = port(value).ok_or(bad.clone())?;
            (v, SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), v))
        }
        Some((v, t)) => {
            let v = port(v).ok_or(bad.clone())?;
            let t = match port(t) {
                Some(p) => SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), p),
                None => t
                    .parse::<SocketAddr>()
                    .ok()
                    .filter(|a| a.port() != 0)
                    .ok_or(bad)?,
            };
            (v, t)
        }
    };
    Ok((virt, target))
}

impl Command {
    /// The line (without CRLF) that parses back to this command.
    pub fn encode(&self) -> String {
        match self {
            Command::ProtocolInfo => "PROTOCOLINFO 1".into(),
            Command::Authenticate(Credential::None) => "AUTHENTICATE".into(),
            Command::Authenticate(Credential::Hex(b)) => format!("AUTHENTICATE {}", hex(b)),
            Command::Authenticate(Credential::Quoted(b)) => {
                let mut s = String::from("AUTHENTICATE \"");
                for &c in b.iter() {
                    if matches!(c, b'\\' | b'"') {
                        s.push('\\');
                    }
                    s.push(char::from(c));
                }
                s.push('"');
                s
            }
            Command::Quit => "QUIT".into(),
            Command::GetInfo(keys) => format!("GETINFO {}", keys.join(" ")),
            Command::Signal(Signal::NewNym) => "SIGNAL NEWNYM".into(),
            Command::SetEvents(kinds) => {
                let mut s = String::from("SETEVENTS");
                for k in kinds {
                    s.push(' ');
                    s.push_str(k.name());
                }
                s
            }
            Command::AddOnion(a) => {
                let mut s = String::from("ADD_ONION ");
                match &a.key {
                    KeySpec::New => s.push_str("NEW:BEST"),
                    KeySpec::Given(seed) => {
                        let _ = write!(s, "{KEY_TYPE}:{}", base64_encode(seed.as_slice()));
                    }
                }
                let flags: Vec<&str> = [(a.discard_pk, "DiscardPK"), (a.detach, "Detach")]
                    .into_iter()
                    .filter_map(|(on, name)| on.then_some(name))
                    .collect();
                if !flags.is_empty() {
                    let _ = write!(s, " Flags={}", flags.join(","));
                }
                for (v, t) in &a.ports {
                    let _ = write!(s, " Port={v},{t}");
                }
                s
            }
            Command::DelOnion(id) => format!("DEL_ONION {id}"),
        }
    }
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Padded standard base64 (the inverse of the strict decoder ADD_ONION uses).
pub fn base64_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let sym = |v: u32| char::from(ALPHABET.get((v & 63) as usize).copied().unwrap_or(b'='));
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = |i: usize| u32::from(chunk.get(i).copied().unwrap_or(0));
        let n = (b(0) << 16) | (b(1) << 8) | b(2);
        out.push(sym(n >> 18));
        out.push(sym(n >> 12));
        out.push(if chunk.len() > 1 { sym(n >> 6) } else { '=' });
        out.push(if chunk.len() > 2 { sym(n) } else { '=' });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse() {
        let p = |s: &str| parse_line(s.as_bytes());
        assert_eq!(p("PROTOCOLINFO 1"), Ok(Command::ProtocolInfo));
        assert_eq!(p("protocolinfo"), Ok(Command::ProtocolInfo));
        assert_eq!(
            p("AUTHENTICATE 0aFF"),
            Ok(Command::Authenticate(Credential::Hex(Zeroizing::new(
                vec![10, 255]
            ))))
        );
        assert_eq!(
            p(r#"AUTHENTICATE "a \"b\" \\""#),
            Ok(Command::Authenticate(Credential::Quoted(Zeroizing::new(
                br#"a "b" \"#.to_vec()
            ))))
        );
        assert!(p(r#"AUTHENTICATE "a"b""#).is_err());
        assert!(p("AUTHENTICATE abc").is_err());
        assert_eq!(
            p("GETINFO status/bootstrap-phase version"),
            Ok(Command::GetInfo(vec![
                "status/bootstrap-phase".into(),
                "version".into()
            ]))
        );
        assert_eq!(p("SIGNAL NEWNYM"), Ok(Command::Signal(Signal::NewNym)));
        assert_eq!(p("SIGNAL HUP").unwrap_err().code(), 552);
        assert_eq!(
            p("SETEVENTS EXTENDED CIRC STREAM CIRC"),
            Ok(Command::SetEvents(vec![EventKind::Circ, EventKind::Stream]))
        );
        assert_eq!(p("SETEVENTS"), Ok(Command::SetEvents(vec![])));
        assert_eq!(p("SETEVENTS BW").unwrap_err().code(), 552);
        let Ok(Command::AddOnion(a)) =
            p("ADD_ONION NEW:BEST Flags=Detach Port=80 Port=81,8080 Port=82,[::1]:9")
        else {
            panic!("ADD_ONION did not parse");
        };
        assert!(a.detach && !a.discard_pk && a.key == KeySpec::New);
        assert_eq!(a.ports[0], (80, "127.0.0.1:80".parse().unwrap()));
        assert_eq!(a.ports[1], (81, "127.0.0.1:8080".parse().unwrap()));
        assert_eq!(a.ports[2], (82, "[::1]:9".parse().unwrap()));
        assert!(p("ADD_ONION NEW:BEST").is_err());
        assert!(p("ADD_ONION NEW:RSA1024 Port=80").is_err());
        assert!(p("ADD_ONION NEW:BEST Port=0").is_err());
        assert!(p("ADD_ONION NEW:BEST Port=80,example.com:80").is_err());
        assert!(p("ADD_ONION ALLIUM-ED25519:AAAA Port=80").is_err());
        assert_eq!(p("FOO").unwrap_err().code(), 510);
        assert_eq!(p("GETINFO a\tb").unwrap_err(), ParseError::BadByte);
        assert_eq!(
            p(&"A".repeat(MAX_LINE + 1)).unwrap_err(),
            ParseError::TooLong
        );
        assert!(p(&format!("DEL_ONION {}", "a".repeat(56))).is_ok());
        assert!(p(&format!("DEL_ONION {}", "a".repeat(55))).is_err());
        assert!(p(&format!("DEL_ONION {}", "1".repeat(56))).is_err());
    }

    #[test]
    fn base64_round_trips() {
        for len in 0..40 {
            let v: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            let e = base64_encode(&v);
            assert_eq!(crate::client::socks::base64::decode(e.as_bytes()), Some(v));
        }
        assert_eq!(base64_encode(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64_encode(b"fo"), "Zm8=");
    }
}
