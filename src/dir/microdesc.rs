//! Microdescriptors: what a client needs of a relay beyond its consensus entry.
//!
//! The signed consensus lists each relay compactly ([`crate::dir::ListedRelay`]) with the
//! SHA-256 digest of its microdescriptor: the onion-key certificate, exit policies (TCP and
//! UDP) and family
//! taken from the relay's own descriptor. Clients fetch the microdescriptors they lack by
//! digest from any directory cache and check each digest, so a microdescriptor needs no
//! signature of its own: the authorities' signatures on the consensus cover its digest.
//! Keeping these bytes out of the consensus makes it smaller and lets it change less when
//! an onion key rotates (only that relay's digest changes). Wire form: `docs/protocol.md`
//! §6.17.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::bytes::Reader;
use crate::codec::{self, CodecError};
use crate::crypto::{OnionKeyCert, RelayId};
use crate::dir::descriptor::{check_family, DescriptorError, MAX_DESCRIPTOR_LEN, MAX_FAMILY};
use crate::dir::policy::ExitPolicy;
use crate::dir::wire;

/// Largest encoded microdescriptor (it is a subset of a descriptor, so never larger).
pub const MAX_MICRODESC_LEN: usize = MAX_DESCRIPTOR_LEN;
/// Most digests one GET_MICRODESCS request may ask for (and so most microdescriptors one
/// response carries): 10,000 relays are 20 requests.
pub const MAX_MICRODESCS_PER_REQUEST: usize = 512;
/// Most microdescriptors a disk cache file may hold (one per listed relay).
/// (The consensus's `MAX_RELAYS`, written out: `consensus` builds on this module, not the
/// other way round; a test in `consensus` keeps the two equal.)
pub const MAX_CACHED_MICRODESCS: usize = 20_000;
/// Length of a microdescriptor digest (SHA-256).
pub const MICRODESC_DIGEST_LEN: usize = 32;

/// A microdescriptor digest: SHA-256 of the canonical encoding.
pub type MicrodescDigest = [u8; MICRODESC_DIGEST_LEN];

/// Why a microdescriptor (or a batch of them) was refused.
#[derive(Debug, thiserror::Error)]
pub enum MicrodescError {
    /// Not a canonical encoding, or over [`MAX_MICRODESC_LEN`].
    #[error("malformed microdescriptor: {0}")]
    Codec(#[from] CodecError),
    /// A field breaks a descriptor rule (family order or bound).
    #[error("invalid microdescriptor: {0}")]
    Invalid(#[from] DescriptorError),
    /// A response's framing is malformed (truncated, trailing bytes, too many entries).
    #[error("malformed microdescriptor response: {0}")]
    Framing(&'static str),
    /// A response carries a microdescriptor that was not asked for (or out of order): its
    /// bytes do not hash to a requested digest.
    #[error("a microdescriptor does not match any requested digest")]
    NotRequested,
}

/// A relay's microdescriptor. Wire form (codec, field order): onion-key certificate
/// `[136]`, exit policy, UDP exit policy, family (`u64` count ≤ [`MAX_FAMILY`], 32-byte keys strictly
/// ascending, not the relay itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Microdesc {
    /// The relay's onion-key certificate; it names the relay's identity.
    #[serde(with = "wire::cert")]
    pub onion_cert: OnionKeyCert,
    /// The relay's exit policy (TCP).
    pub exit_policy: ExitPolicy,
    /// The relay's UDP exit policy (reject all unless its operator opted in).
    pub udp_policy: ExitPolicy,
    /// Declared family, sorted ascending (as listed: not validated as keys).
    #[serde(
        serialize_with = "wire::relay_id_list::serialize",
        deserialize_with = "wire::relay_id_list::deserialize::<_, MAX_FAMILY>"
    )]
    pub family: Vec<RelayId>,
}

impl Microdesc {
    /// The relay this microdescriptor describes (the identity its certificate names, not
    /// yet validated).
    pub fn identity(&self) -> &RelayId {
        self.onion_cert.identity()
    }

    /// Checks the field rules a parse enforces.
    pub fn check(&self) -> Result<(), MicrodescError> {
        check_family(self.identity(), &self.family)?;
        Ok(())
    }

    /// Parses a microdescriptor: canonical, at most [`MAX_MICRODESC_LEN`] bytes, family
    /// canonical and bounded. The certificate is parsed, not verified (it is verified
    /// before each handshake, as a consensus entry's is).
    pub fn parse(bytes: &[u8]) -> Result<Self, MicrodescError> {
        let md: Microdesc = codec::decode(bytes, MAX_MICRODESC_LEN)?;
        md.check()?;
        Ok(md)
    }

    /// The canonical encoding.
    pub fn to_bytes(&self) -> Result<Vec<u8>, MicrodescError> {
        self.check()?;
        let bytes = codec::encode(self)?;
        if bytes.len() > MAX_MICRODESC_LEN {
            return Err(CodecError::TooLarge {
                len: bytes.len(),
                max: MAX_MICRODESC_LEN,
            }
            .into());
        }
        Ok(bytes)
    }

    /// The digest the consensus lists for this microdescriptor.
    pub fn digest(&self) -> Result<MicrodescDigest, MicrodescError> {
        Ok(digest_of(&self.to_bytes()?))
    }
}

/// SHA-256 of `bytes`: a microdescriptor's digest given its canonical encoding.
pub fn digest_of(bytes: &[u8]) -> MicrodescDigest {
    Sha256::digest(bytes).into()
}

/// Microdescriptors by digest, each with its encoding (what a directory serves).
#[derive(Debug, Clone, Default)]
pub struct MicrodescIndex {
    by_digest: HashMap<MicrodescDigest, (Microdesc, Vec<u8>)>,
}

impl MicrodescIndex {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `md` (keyed by its digest); returns the digest.
    pub fn insert(&mut self, md: Microdesc) -> Result<MicrodescDigest, MicrodescError> {
        let bytes = md.to_bytes()?;
        let digest = digest_of(&bytes);
        self.by_digest.insert(digest, (md, bytes));
        Ok(digest)
    }

    /// Parses `bytes` as a microdescriptor ([`Microdesc::parse`]) and adds it; returns its
    /// digest. A parse refuses any encoding but the canonical one, so the digest of `bytes`
    /// is the one [`Self::insert`] would compute, without encoding it again.
    pub fn insert_bytes(&mut self, bytes: &[u8]) -> Result<MicrodescDigest, MicrodescError> {
        let md = Microdesc::parse(bytes)?;
        let digest = digest_of(bytes);
        self.by_digest.insert(digest, (md, bytes.to_vec()));
        Ok(digest)
    }

    /// The microdescriptor with this digest, if held.
    pub fn get(&self, digest: &MicrodescDigest) -> Option<&Microdesc> {
        self.by_digest.get(digest).map(|(md, _)| md)
    }

    /// Its encoding, if held.
    pub fn bytes(&self, digest: &MicrodescDigest) -> Option<&[u8]> {
        self.by_digest.get(digest).map(|(_, b)| b.as_slice())
    }

    /// Whether a microdescriptor with this digest is held.
    pub fn contains(&self, digest: &MicrodescDigest) -> bool {
        self.by_digest.contains_key(digest)
    }

    /// Number held.
    pub fn len(&self) -> usize {
        self.by_digest.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.by_digest.is_empty()
    }

    /// Adds every microdescriptor of `other`.
    pub fn extend_from(&mut self, other: &MicrodescIndex) {
        for (d, v) in &other.by_digest {
            self.by_digest.entry(*d).or_insert_with(|| v.clone());
        }
    }

    /// Every microdescriptor held (in no particular order).
    pub fn iter(&self) -> impl Iterator<Item = &Microdesc> {
        self.by_digest.values().map(|(md, _)| md)
    }

    /// Keeps only the digests for which `keep` holds.
    pub fn retain(&mut self, mut keep: impl FnMut(&MicrodescDigest) -> bool) {
        self.by_digest.retain(|d, _| keep(d));
    }

    /// The disk-cache form: `(len u16 | microdesc[len])*`, in digest order.
    pub fn to_file_bytes(&self) -> Vec<u8> {
        let mut entries: Vec<(&MicrodescDigest, &Vec<u8>)> =
            self.by_digest.iter().map(|(d, (_, b))| (d, b)).collect();
        entries.sort_unstable_by_key(|(d, _)| *d);
        let mut out = Vec::new();
        for (_, b) in entries {
            out.extend_from_slice(&u16::try_from(b.len()).unwrap_or(0).to_be_bytes());
            out.extend_from_slice(b);
        }
        out
    }

    /// Parses [`Self::to_file_bytes`]: at most [`MAX_CACHED_MICRODESCS`] entries, each
    /// strictly parsed.
    pub fn from_file_bytes(bytes: &[u8]) -> Result<Self, MicrodescError> {
        let mut r = Reader::new(bytes);
        let mut index = MicrodescIndex::new();
        while r.remaining() > 0 {
            if index.len() == MAX_CACHED_MICRODESCS {
                return Err(MicrodescError::Framing("too many microdescriptors"));
            }
            let len = usize::from(
                r.u16("len")
                    .map_err(|_| MicrodescError::Framing("truncated"))?,
            );
            if len > MAX_MICRODESC_LEN {
                return Err(MicrodescError::Framing("microdescriptor too large"));
            }
            let md = r
                .take(len, "microdesc")
                .map_err(|_| MicrodescError::Framing("truncated"))?;
            index.insert_bytes(md)?;
        }
        Ok(index)
    }

    /// The response body to a GET_MICRODESCS for `digests`: the ones held, in request
    /// order, stopping before the body would exceed `max_body` bytes.
    pub fn answer(&self, digests: &[MicrodescDigest], max_body: usize) -> Vec<u8> {
        let found: Vec<&[u8]> = digests.iter().filter_map(|d| self.bytes(d)).collect();
        encode_response(&found, max_body)
    }
}

impl FromIterator<Microdesc> for MicrodescIndex {
    /// Collects microdescriptors (one that cannot be encoded is skipped: it could not be
    /// served nor match a digest).
    fn from_iter<I: IntoIterator<Item = Microdesc>>(iter: I) -> Self {
        let mut index = MicrodescIndex::new();
        for md in iter {
            let _ = index.insert(md);
        }
        index
    }
}

/// Encodes a GET_MICRODESCS response body: `count u16 | (len u16 | microdesc[len])*`, at
/// most [`MAX_MICRODESCS_PER_REQUEST`] entries, stopping before `max_body` bytes.
pub fn encode_response(mds: &[&[u8]], max_body: usize) -> Vec<u8> {
    let mut entries: Vec<&[u8]> = Vec::new();
    let mut len = 2usize;
    for md in mds.iter().take(MAX_MICRODESCS_PER_REQUEST) {
        if md.len() > MAX_MICRODESC_LEN || len + 2 + md.len() > max_body {
            break;
        }
        len += 2 + md.len();
        entries.push(md);
    }
    let mut out = Vec::with_capacity(len);
    // Both bounds (512 entries, 8 KiB each) fit in u16.
    out.extend_from_slice(&u16::try_from(entries.len()).unwrap_or(0).to_be_bytes());
    for md in entries {
        out.extend_from_slice(&u16::try_from(md.len()).unwrap_or(0).to_be_bytes());
        out.extend_from_slice(md);
    }
    out
}

/// Parses a GET_MICRODESCS response body into its entries' bytes (each bounded; count
/// bounded; no trailing bytes). Contents are not parsed here.
pub fn parse_response(body: &[u8]) -> Result<Vec<&[u8]>, MicrodescError> {
    let mut r = Reader::new(body);
    let count = usize::from(
        r.u16("count")
            .map_err(|_| MicrodescError::Framing("truncated"))?,
    );
    if count > MAX_MICRODESCS_PER_REQUEST {
        return Err(MicrodescError::Framing("too many microdescriptors"));
    }
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let len = usize::from(
            r.u16("len")
                .map_err(|_| MicrodescError::Framing("truncated"))?,
        );
        if len > MAX_MICRODESC_LEN {
            return Err(MicrodescError::Framing("microdescriptor too large"));
        }
        out.push(
            r.take(len, "microdesc")
                .map_err(|_| MicrodescError::Framing("truncated"))?,
        );
    }
    r.finish()
        .map_err(|_| MicrodescError::Framing("trailing bytes"))?;
    Ok(out)
}

/// Checks a response to a request for `requested` (in that order): every entry must hash to
/// a requested digest, in request order, and parse. One bad entry refuses the whole
/// response (the server lied or is broken; ask another). Returns the microdescriptors with
/// their digests; the requested ones absent were not found there.
pub fn check_response(
    body: &[u8],
    requested: &[MicrodescDigest],
) -> Result<Vec<(MicrodescDigest, Microdesc)>, MicrodescError> {
    let entries = parse_response(body)?;
    let mut rest = requested.iter();
    let mut out = Vec::with_capacity(entries.len());
    for bytes in entries {
        let digest = digest_of(bytes);
        // Advance through the request: an entry out of order or not asked for finds none.
        if !rest.any(|d| *d == digest) {
            return Err(MicrodescError::NotRequested);
        }
        out.push((digest, Microdesc::parse(bytes)?));
    }
    Ok(out)
}
