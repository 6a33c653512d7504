//! The directory request protocol spoken over BEGIN_DIR streams (parse/encode, no I/O).
//!
//! Directory traffic between nodes rides inside circuits like everything else, so it is
//! encrypted and padded to fixed-size cells on every link. On the stream, one request and
//! one response, each `kind/status u8 | length u32 | body[length]`, length at most
//! [`MAX_DIR_BODY`]. Anything else is refused.

use thiserror::Error;

use crate::bytes::{self, Reader};
use crate::dir::microdesc::{MAX_MICRODESCS_PER_REQUEST, MICRODESC_DIGEST_LEN};

/// Largest request or response body: the largest document, [`crate::codec::MAX_DOCUMENT_LEN`]
/// (16 MiB; a vote or an uncompressed consensus of 20,000 relays fits).
pub const MAX_DIR_BODY: usize = crate::codec::MAX_DOCUMENT_LEN;
/// Bytes before the body.
pub const DIR_HEADER_LEN: usize = 5;

/// What a directory client asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DirRequest {
    /// The current consensus (signed bytes).
    GetConsensus,
    /// Publish a signed relay descriptor (authorities only).
    PostDescriptor(Vec<u8>),
    /// The authority's signed vote for the period starting at `valid_after`.
    GetVote {
        /// Start of the period.
        valid_after: u64,
    },
    /// The authority's signature over its consensus for the period starting at
    /// `valid_after`.
    GetSignature {
        /// Start of the period.
        valid_after: u64,
    },
    /// Store a signed onion-service descriptor (at a relay of the descriptor's hash ring,
    /// `docs/protocol.md` §8.3); the body is 1 ..= `MAX_ONION_DESCRIPTOR_LEN` bytes.
    PutOnionDescriptor(Vec<u8>),
    /// The stored onion-service descriptor for a blinded key `A'` (§8.2).
    GetOnionDescriptor {
        /// The blinded public key.
        blinded_key: [u8; 32],
    },
    /// `len` bytes of filler for a bandwidth measurement the answering authority runs
    /// itself (`docs/protocol.md` §6.15.1); refused unless `token` is one it issued for a
    /// measurement in progress. `len` is 1 ..= [`MAX_MEASUREMENT_CHUNK`].
    GetMeasurement {
        /// The authority's own secret for this measurement.
        token: [u8; 16],
        /// Bytes asked for.
        len: u32,
    },
    /// Microdescriptors by digest (`docs/protocol.md` §6.17): 1 ..=
    /// [`MAX_MICRODESCS_PER_REQUEST`] distinct digests; the answer lists the ones found,
    /// in request order.
    GetMicrodescs {
        /// SHA-256 digests of the wanted microdescriptors.
        digests: Vec<[u8; 32]>,
    },
    /// The current consensus, compressed (`docs/protocol.md` §6.18).
    GetConsensusCompressed,
    /// A compressed diff from the consensus whose signed body has SHA-256 digest `from`
    /// to the current one (§6.18); NOT_FOUND if the server does not keep that base.
    GetConsensusDiff {
        /// [`crate::dir::diff::body_digest`] of the base consensus.
        from: [u8; 32],
    },
}

/// Largest body one GET_MEASUREMENT asks for; bigger transfers are several requests.
pub const MAX_MEASUREMENT_CHUNK: u32 = 1024 * 1024;
/// Length of a GET_MEASUREMENT body: `token[16] | len u32`.
pub const MEASUREMENT_REQUEST_LEN: usize = 20;

/// How a directory server answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirStatus {
    /// Success; the body is the document.
    Ok = 0,
    /// Nothing to serve (yet).
    NotFound = 1,
    /// The request was understood and refused; the body is a UTF-8 reason.
    Refused = 2,
    /// The request was malformed.
    BadRequest = 3,
    /// Rate limited or overloaded; try later.
    Busy = 4,
}

/// A directory response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirResponse {
    /// Outcome.
    pub status: DirStatus,
    /// The document, or a reason.
    pub body: Vec<u8>,
}

impl DirResponse {
    /// A success carrying `body`.
    pub fn ok(body: Vec<u8>) -> Self {
        DirResponse {
            status: DirStatus::Ok,
            body,
        }
    }

    /// A failure with a human-readable reason.
    pub fn error(status: DirStatus, reason: &str) -> Self {
        DirResponse {
            status,
            body: reason.as_bytes().to_vec(),
        }
    }

    /// The reason of a failure, for messages.
    pub fn reason(&self) -> String {
        // Control characters (newlines, terminal escapes) become '?': the text goes into
        // our logs, and a peer must not be able to forge log lines there.
        String::from_utf8_lossy(&self.body)
            .chars()
            .take(200)
            .map(|c| if c.is_control() { '?' } else { c })
            .collect()
    }
}

/// A malformed request or response.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DirProtoError {
    /// Fewer bytes than the header and length promise.
    #[error("truncated directory message")]
    Truncated,
    /// The length field exceeds [`MAX_DIR_BODY`].
    #[error("directory message of {0} bytes exceeds the limit")]
    TooLarge(usize),
    /// Unknown request kind or response status.
    #[error("unknown directory message kind {0}")]
    UnknownKind(u8),
    /// A request body of the wrong length for its kind.
    #[error("bad directory request body")]
    BadBody,
    /// Bytes after the message.
    #[error("trailing bytes after the directory message")]
    TrailingBytes,
}

const KIND_GET_CONSENSUS: u8 = 1;
const KIND_POST_DESCRIPTOR: u8 = 2;
const KIND_GET_VOTE: u8 = 3;
const KIND_GET_SIGNATURE: u8 = 4;
const KIND_PUT_ONION_DESCRIPTOR: u8 = 5;
const KIND_GET_ONION_DESCRIPTOR: u8 = 6;
const KIND_GET_MEASUREMENT: u8 = 7;
const KIND_GET_MICRODESCS: u8 = 10;

/// Largest GET_MICRODESCS request body.
pub const MICRODESC_REQUEST_MAX_LEN: usize = MAX_MICRODESCS_PER_REQUEST * MICRODESC_DIGEST_LEN;
const KIND_GET_CONSENSUS_COMPRESSED: u8 = 8;
const KIND_GET_CONSENSUS_DIFF: u8 = 9;

/// Reads the header: kind/status and body length (checked against the limit).
pub fn parse_header(header: &[u8; DIR_HEADER_LEN]) -> Result<(u8, usize), DirProtoError> {
    let mut r = Reader::new(header);
    let kind = r.u8("kind")?;
    let len = r.u32("length")?;
    let len = usize::try_from(len).map_err(|_| DirProtoError::TooLarge(usize::MAX))?;
    if len > MAX_DIR_BODY {
        return Err(DirProtoError::TooLarge(len));
    }
    Ok((kind, len))
}

/// Splits a whole message into its kind/status and its body of exactly the announced length.
fn split(bytes: &[u8]) -> Result<(u8, &[u8]), DirProtoError> {
    let mut r = Reader::new(bytes);
    let (kind, len) = parse_header(&r.array("header")?)?;
    let body = r.take(len, "body")?;
    r.finish()?;
    Ok((kind, body))
}

impl From<bytes::Error> for DirProtoError {
    fn from(e: bytes::Error) -> Self {
        match e {
            bytes::Error::TrailingBytes(_) => DirProtoError::TrailingBytes,
            bytes::Error::LengthOutOfBounds { len, .. } => DirProtoError::TooLarge(len),
            _ => DirProtoError::Truncated,
        }
    }
}

fn frame(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(DIR_HEADER_LEN + body.len());
    out.push(kind);
    // Callers never build bodies over MAX_DIR_BODY; saturate rather than wrap regardless.
    out.extend_from_slice(&u32::try_from(body.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// A body that is exactly one `N`-byte field.
fn exact<const N: usize>(body: &[u8]) -> Result<[u8; N], DirProtoError> {
    let mut r = Reader::new(body);
    let field = r.array("body").map_err(|_| DirProtoError::BadBody)?;
    r.finish().map_err(|_| DirProtoError::BadBody)?;
    Ok(field)
}

/// A GET_MEASUREMENT body: the token and a length in 1 ..= [`MAX_MEASUREMENT_CHUNK`].
fn measurement(body: &[u8]) -> Result<DirRequest, DirProtoError> {
    let mut r = Reader::new(body);
    let token = r.array("token").map_err(|_| DirProtoError::BadBody)?;
    let len = r.u32("length").map_err(|_| DirProtoError::BadBody)?;
    r.finish().map_err(|_| DirProtoError::BadBody)?;
    if !(1..=MAX_MEASUREMENT_CHUNK).contains(&len) {
        return Err(DirProtoError::BadBody);
    }
    Ok(DirRequest::GetMeasurement { token, len })
}

/// A GET_MICRODESCS body: 1 ..= [`MAX_MICRODESCS_PER_REQUEST`] distinct 32-byte digests.
fn microdescs(body: &[u8]) -> Result<DirRequest, DirProtoError> {
    if body.is_empty()
        || body.len() > MICRODESC_REQUEST_MAX_LEN
        || body.len() % MICRODESC_DIGEST_LEN != 0
    {
        return Err(DirProtoError::BadBody);
    }
    let mut r = Reader::new(body);
    let mut digests: Vec<[u8; 32]> = Vec::with_capacity(body.len() / MICRODESC_DIGEST_LEN);
    while r.remaining() > 0 {
        digests.push(r.array("digest").map_err(|_| DirProtoError::BadBody)?);
    }
    let mut sorted = digests.clone();
    sorted.sort_unstable();
    if sorted.windows(2).any(|w| matches!(w, [a, b] if a == b)) {
        return Err(DirProtoError::BadBody);
    }
    Ok(DirRequest::GetMicrodescs { digests })
}

/// A body that is one big-endian period start.
fn period(body: &[u8]) -> Result<u64, DirProtoError> {
    Ok(u64::from_be_bytes(exact(body)?))
}

impl DirRequest {
    /// Parses one whole request.
    pub fn parse(bytes: &[u8]) -> Result<Self, DirProtoError> {
        let (kind, body) = split(bytes)?;
        match kind {
            KIND_GET_CONSENSUS if body.is_empty() => Ok(DirRequest::GetConsensus),
            KIND_POST_DESCRIPTOR if !body.is_empty() => {
                Ok(DirRequest::PostDescriptor(body.to_vec()))
            }
            KIND_GET_VOTE => Ok(DirRequest::GetVote {
                valid_after: period(body)?,
            }),
            KIND_GET_SIGNATURE => Ok(DirRequest::GetSignature {
                valid_after: period(body)?,
            }),
            KIND_PUT_ONION_DESCRIPTOR
                if !body.is_empty()
                    && body.len() <= crate::onion::descriptor::MAX_ONION_DESCRIPTOR_LEN =>
            {
                Ok(DirRequest::PutOnionDescriptor(body.to_vec()))
            }
            KIND_GET_ONION_DESCRIPTOR => Ok(DirRequest::GetOnionDescriptor {
                blinded_key: exact(body)?,
            }),
            KIND_GET_MEASUREMENT => measurement(body),
            KIND_GET_MICRODESCS => microdescs(body),
            KIND_GET_CONSENSUS_COMPRESSED if body.is_empty() => {
                Ok(DirRequest::GetConsensusCompressed)
            }
            KIND_GET_CONSENSUS_DIFF => Ok(DirRequest::GetConsensusDiff { from: exact(body)? }),
            KIND_GET_CONSENSUS
            | KIND_POST_DESCRIPTOR
            | KIND_PUT_ONION_DESCRIPTOR
            | KIND_GET_CONSENSUS_COMPRESSED => Err(DirProtoError::BadBody),
            other => Err(DirProtoError::UnknownKind(other)),
        }
    }

    /// Encodes the request.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            DirRequest::GetConsensus => frame(KIND_GET_CONSENSUS, &[]),
            DirRequest::PostDescriptor(d) => frame(KIND_POST_DESCRIPTOR, d),
            DirRequest::GetVote { valid_after } => frame(KIND_GET_VOTE, &valid_after.to_be_bytes()),
            DirRequest::GetSignature { valid_after } => {
                frame(KIND_GET_SIGNATURE, &valid_after.to_be_bytes())
            }
            DirRequest::PutOnionDescriptor(d) => frame(KIND_PUT_ONION_DESCRIPTOR, d),
            DirRequest::GetOnionDescriptor { blinded_key } => {
                frame(KIND_GET_ONION_DESCRIPTOR, blinded_key)
            }
            DirRequest::GetMeasurement { token, len } => {
                let mut body = Vec::with_capacity(MEASUREMENT_REQUEST_LEN);
                body.extend_from_slice(token);
                body.extend_from_slice(&len.to_be_bytes());
                frame(KIND_GET_MEASUREMENT, &body)
            }
            DirRequest::GetMicrodescs { digests } => frame(KIND_GET_MICRODESCS, &digests.concat()),
            DirRequest::GetConsensusCompressed => frame(KIND_GET_CONSENSUS_COMPRESSED, &[]),
            DirRequest::GetConsensusDiff { from } => frame(KIND_GET_CONSENSUS_DIFF, from),
        }
    }
}

impl DirStatus {
    fn from_code(code: u8) -> Result<Self, DirProtoError> {
        Ok(match code {
            0 => DirStatus::Ok,
            1 => DirStatus::NotFound,
            2 => DirStatus::Refused,
            3 => DirStatus::BadRequest,
            4 => DirStatus::Busy,
            other => return Err(DirProtoError::UnknownKind(other)),
        })
    }
}

impl DirResponse {
    /// Parses one whole response.
    pub fn parse(bytes: &[u8]) -> Result<Self, DirProtoError> {
        let (status, body) = split(bytes)?;
        Ok(DirResponse {
            status: DirStatus::from_code(status)?,
            body: body.to_vec(),
        })
    }

    /// Encodes the response.
    pub fn encode(&self) -> Vec<u8> {
        frame(self.status as u8, &self.body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peers_reason_cannot_forge_log_lines() {
        let resp = DirResponse::error(
            DirStatus::Refused,
            "bad\nrelay: self-test: reachable\u{1b}[2J",
        );
        assert_eq!(resp.reason(), "bad?relay: self-test: reachable?[2J");
    }

    #[test]
    fn round_trips_and_strictness() {
        let reqs = [
            DirRequest::GetConsensus,
            DirRequest::PostDescriptor(vec![1, 2, 3]),
            DirRequest::GetVote { valid_after: 77 },
            DirRequest::GetSignature {
                valid_after: 1 << 40,
            },
            DirRequest::PutOnionDescriptor(vec![7; 100]),
            DirRequest::GetOnionDescriptor {
                blinded_key: [3; 32],
            },
            DirRequest::GetMeasurement {
                token: [9; 16],
                len: MAX_MEASUREMENT_CHUNK,
            },
            DirRequest::GetConsensusCompressed,
            DirRequest::GetConsensusDiff { from: [4; 32] },
        ];
        for r in reqs {
            let bytes = r.encode();
            assert_eq!(DirRequest::parse(&bytes).unwrap(), r);
            for cut in 0..bytes.len() {
                assert!(DirRequest::parse(&bytes[..cut]).is_err());
            }
            let mut long = bytes.clone();
            long.push(0);
            assert!(DirRequest::parse(&long).is_err());
        }
        let resp = DirResponse::error(DirStatus::Refused, "stale");
        assert_eq!(DirResponse::parse(&resp.encode()).unwrap(), resp);
        assert_eq!(
            DirRequest::parse(&[11, 0, 0, 0, 0]),
            Err(DirProtoError::UnknownKind(11))
        );
        assert_eq!(
            DirRequest::parse(&[1, 0xff, 0xff, 0xff, 0xff]),
            Err(DirProtoError::TooLarge(u32::MAX as usize))
        );
        assert_eq!(
            DirRequest::parse(&[1, 0, 0, 0, 1, 0]),
            Err(DirProtoError::BadBody)
        );
        // An onion descriptor over its own bound, or a blinded key of the wrong length.
        let mut big = vec![5];
        big.extend_from_slice(&8193u32.to_be_bytes());
        big.resize(5 + 8193, 1);
        assert_eq!(DirRequest::parse(&big), Err(DirProtoError::BadBody));
        assert_eq!(
            DirRequest::parse(&[6, 0, 0, 0, 1, 0]),
            Err(DirProtoError::BadBody)
        );
        assert_eq!(
            DirRequest::parse(&[5, 0, 0, 0, 0]),
            Err(DirProtoError::BadBody)
        );
    }

    #[test]
    fn measurement_requests_are_strict() {
        let at = |len: u32| {
            let mut b = vec![7, 0, 0, 0, 20];
            b.extend_from_slice(&[1; 16]);
            b.extend_from_slice(&len.to_be_bytes());
            DirRequest::parse(&b)
        };
        assert_eq!(
            at(1),
            Ok(DirRequest::GetMeasurement {
                token: [1; 16],
                len: 1
            })
        );
        assert!(at(MAX_MEASUREMENT_CHUNK).is_ok());
        assert_eq!(at(0), Err(DirProtoError::BadBody));
        assert_eq!(at(MAX_MEASUREMENT_CHUNK + 1), Err(DirProtoError::BadBody));
        assert_eq!(at(u32::MAX), Err(DirProtoError::BadBody));
        // A body of the wrong length.
        assert_eq!(
            DirRequest::parse(&[7, 0, 0, 0, 1, 0]),
            Err(DirProtoError::BadBody)
        );
        let mut long = vec![7, 0, 0, 0, 21];
        long.extend_from_slice(&[1; 21]);
        assert_eq!(DirRequest::parse(&long), Err(DirProtoError::BadBody));
    }
}
