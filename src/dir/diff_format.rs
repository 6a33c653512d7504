//! The consensus diff's wire format, version 2 (`docs/protocol.md` §6.18): the new
//! consensus's header and signatures, then the relay changes *by position in the base*.
//!
//! The base's entries are in canonical order (strictly ascending by identity, checked when
//! the base was verified), so a base entry is named by its index: removals and
//! modifications are delta-coded varint indexes, a modification carries a field mask and
//! only the fields that changed, and only relays the base does not list come whole. The
//! 32-byte identities and digests of every changed relay, which made up most of a
//! version-1 diff and do not compress, are gone from all but new relays.
//!
//! Parsing is strict and total: every count and index is bounded before anything is
//! allocated on its account, varints are minimal, indexes are strictly ascending by
//! construction, a mask has known bits only and at least one, added relays are strictly
//! ascending, no byte is left over; so a diff has one encoding
//! ([`ConsensusDiff::to_bytes`] reproduces the parsed bytes). What needs the base (indexes
//! in range, fields really changed, added relays new) is checked when applying
//! ([`crate::dir::diff`]).

use std::net::{IpAddr, SocketAddr, SocketAddrV6};

use crate::bytes::{self, Reader};
use crate::crypto::{IdentityPublic, KeyError, RelayId};
use crate::dir::consensus::{AuthoritySignature, ListedRelay, MAX_AUTHORITIES, MAX_RELAYS};
use crate::dir::descriptor::{MAX_ADDRS, MAX_BANDWIDTH};
use crate::dir::flags::BadFlags;
use crate::dir::microdesc::MicrodescDigest;
use crate::dir::weights::BandwidthWeights;
use crate::dir::RelayFlags;

/// The diff format this code produces and accepts. Version 1 (whole entries of changed
/// relays, removals by identity) is no longer accepted: a client holding a version-1
/// server's diff fetches the full consensus instead.
pub const DIFF_VERSION: u32 = 2;

/// Most bytes an encoded diff may have: no more than the document it rebuilds.
pub const MAX_DIFF_LEN: usize = crate::dir::consensus::MAX_CONSENSUS_LEN;

/// Field-mask bit: the microdescriptor digest changed (32 bytes follow).
pub const FIELD_MD_DIGEST: u8 = 0x01;
/// Field-mask bit: the address list changed (a `list<SocketAddr>` follows).
pub const FIELD_ADDRS: u8 = 0x02;
/// Field-mask bit: the flags changed (one flag byte follows).
pub const FIELD_FLAGS: u8 = 0x04;
/// Field-mask bit: the bandwidth changed (a varint follows).
pub const FIELD_BANDWIDTH: u8 = 0x08;
/// Field-mask bit: `measured` is the base's negated (nothing follows).
pub const FIELD_MEASURED: u8 = 0x10;
/// Every defined field-mask bit.
pub const FIELD_ALL: u8 =
    FIELD_MD_DIGEST | FIELD_ADDRS | FIELD_FLAGS | FIELD_BANDWIDTH | FIELD_MEASURED;

/// Why diff bytes were refused before being applied.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// Truncated, trailing bytes, or a count over its bound.
    #[error("malformed consensus diff: {0}")]
    Bytes(#[from] bytes::Error),
    /// Longer than [`MAX_DIFF_LEN`].
    #[error("consensus diff of {0} bytes is over the limit")]
    TooLarge(usize),
    /// A diff format this code does not know.
    #[error("consensus diff version {0} is not supported (expected {DIFF_VERSION})")]
    BadVersion(u32),
    /// A varint is longer than needed or overflows 64 bits.
    #[error("consensus diff has a non-minimal or overlong varint ({0})")]
    BadVarint(&'static str),
    /// A base index at or past [`MAX_RELAYS`].
    #[error("consensus diff names base entry {0}, past the largest consensus")]
    IndexOutOfRange(u64),
    /// A modification's field mask has no bit, or an undefined one.
    #[error("consensus diff field mask {0:#04x} is empty or has undefined bits")]
    BadMask(u8),
    /// A base entry is both removed and modified.
    #[error("consensus diff removes and modifies base entry {0}")]
    RemovedAndModified(u32),
    /// Added relays are not strictly ascending by identity.
    #[error("consensus diff's added relays are not sorted strictly by identity")]
    NotSorted,
    /// An identity that is not a valid key.
    #[error("consensus diff carries an invalid identity: {0}")]
    Identity(#[from] KeyError),
    /// A flag byte with undefined bits.
    #[error("consensus diff: {0}")]
    Flags(#[from] BadFlags),
    /// A `bool` byte other than 0 or 1.
    #[error("consensus diff has a bool byte {0:#04x}")]
    BadBool(u8),
    /// An address family other than 0 (IPv4) or 1 (IPv6).
    #[error("consensus diff has address family {0}")]
    BadAddressFamily(u32),
    /// A modified bandwidth above [`MAX_BANDWIDTH`].
    #[error("consensus diff sets bandwidth {0}, above the maximum")]
    BandwidthTooHigh(u64),
}

/// The changes to one base entry: the fields that differ from the base's, each `None`
/// when unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Modified {
    /// Position of the entry in the base consensus.
    pub index: u32,
    /// The new microdescriptor digest.
    pub md_digest: Option<MicrodescDigest>,
    /// The new address list.
    pub addrs: Option<Vec<SocketAddr>>,
    /// The new flags.
    pub flags: Option<RelayFlags>,
    /// The new bandwidth (at most [`MAX_BANDWIDTH`]).
    pub bandwidth: Option<u64>,
    /// Whether `measured` is the base's negated.
    pub toggle_measured: bool,
}

impl Modified {
    /// The field mask this modification is encoded with.
    pub fn mask(&self) -> u8 {
        let mut m = 0;
        let bits = [
            (self.md_digest.is_some(), FIELD_MD_DIGEST),
            (self.addrs.is_some(), FIELD_ADDRS),
            (self.flags.is_some(), FIELD_FLAGS),
            (self.bandwidth.is_some(), FIELD_BANDWIDTH),
            (self.toggle_measured, FIELD_MEASURED),
        ];
        for (set, bit) in bits {
            if set {
                m |= bit;
            }
        }
        m
    }
}

/// A diff as transmitted (§6.18; fields in wire order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsensusDiff {
    /// [`DIFF_VERSION`].
    pub diff_version: u32,
    /// [`crate::dir::diff::body_digest`] of the base consensus.
    pub base: [u8; 32],
    /// [`crate::dir::diff::body_digest`] of the consensus the diff produces.
    pub result: [u8; 32],
    /// The new body's `version`.
    pub version: u32,
    /// The new body's `valid_after`.
    pub valid_after: u64,
    /// The new body's `fresh_until`.
    pub fresh_until: u64,
    /// The new body's `valid_until`.
    pub valid_until: u64,
    /// The new body's authority list (at most [`MAX_AUTHORITIES`]).
    pub authorities: Vec<IdentityPublic>,
    /// The new body's weights.
    pub weights: BandwidthWeights,
    /// The new consensus's signatures (at most [`MAX_AUTHORITIES`]).
    pub signatures: Vec<AuthoritySignature>,
    /// Indexes of the base entries the new body does not list, strictly ascending.
    pub removed: Vec<u32>,
    /// Base entries the new body lists with changes, strictly ascending by index, none
    /// also removed.
    pub modified: Vec<Modified>,
    /// Entries of the new body the base does not list, strictly ascending by identity.
    pub added: Vec<ListedRelay>,
}

/// Appends `v` as an unsigned LEB128 varint (7 bits a byte, least significant first,
/// high bit set on every byte but the last).
fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads a minimal unsigned LEB128 varint of at most 10 bytes that fits 64 bits.
fn varint(r: &mut Reader<'_>, field: &'static str) -> Result<u64, FormatError> {
    let mut v = 0u64;
    for i in 0..10u32 {
        let b = r.u8(field)?;
        let bits = u64::from(b & 0x7f);
        let shift = 7 * i;
        if shift == 63 && bits > 1 {
            return Err(FormatError::BadVarint(field));
        }
        v |= bits << shift;
        if b & 0x80 == 0 {
            // The last byte of a longer varint must add bits, else it was not minimal.
            if i > 0 && b == 0 {
                return Err(FormatError::BadVarint(field));
            }
            return Ok(v);
        }
    }
    Err(FormatError::BadVarint(field))
}

/// Reads a varint count of at most `max` items, each taking at least `min_item` bytes, so
/// the count can be no more than the bytes left can hold.
fn count(
    r: &mut Reader<'_>,
    max: usize,
    min_item: usize,
    field: &'static str,
) -> Result<usize, FormatError> {
    let n = varint(r, field)?;
    let bound = max.min(r.remaining() / min_item.max(1));
    match usize::try_from(n) {
        Ok(n) if n <= bound => Ok(n),
        _ => Err(bytes::Error::LengthOutOfBounds {
            field,
            len: usize::try_from(n).unwrap_or(usize::MAX),
            max: bound,
        }
        .into()),
    }
}

/// Reads a §6.1 `list` count (`u64`) of at most `max`.
fn list_count(r: &mut Reader<'_>, max: usize, field: &'static str) -> Result<usize, FormatError> {
    let n = r.u64(field)?;
    match usize::try_from(n) {
        Ok(n) if n <= max => Ok(n),
        _ => Err(bytes::Error::LengthOutOfBounds {
            field,
            len: usize::try_from(n).unwrap_or(usize::MAX),
            max,
        }
        .into()),
    }
}

/// Reads `count` strictly ascending indexes below [`MAX_RELAYS`], each as the gap to the
/// previous one plus one (the first: the index itself), calling `each` on every index.
fn indexes(
    r: &mut Reader<'_>,
    count: usize,
    field: &'static str,
    mut each: impl FnMut(&mut Reader<'_>, u32) -> Result<(), FormatError>,
) -> Result<(), FormatError> {
    let mut next = 0u64;
    for _ in 0..count {
        let i = next.saturating_add(varint(r, field)?);
        let index = u32::try_from(i)
            .ok()
            .filter(|&i| (i as usize) < MAX_RELAYS)
            .ok_or(FormatError::IndexOutOfRange(i))?;
        each(r, index)?;
        next = i + 1;
    }
    Ok(())
}

fn put_indexes(out: &mut Vec<u8>, indexes: impl Iterator<Item = u32>) {
    let mut next = 0u64;
    for i in indexes {
        put_varint(out, u64::from(i).saturating_sub(next));
        next = u64::from(i) + 1;
    }
}

fn identity(r: &mut Reader<'_>, field: &'static str) -> Result<IdentityPublic, FormatError> {
    Ok(IdentityPublic::from_bytes(&r.array(field)?)?)
}

/// A §6.1 `list<SocketAddr>` of at most [`MAX_ADDRS`].
fn addrs(r: &mut Reader<'_>) -> Result<Vec<SocketAddr>, FormatError> {
    let n = list_count(r, MAX_ADDRS, "address count")?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let ip = match r.u32("address family")? {
            0 => IpAddr::from(r.array::<4>("IPv4 address")?),
            1 => IpAddr::from(r.array::<16>("IPv6 address")?),
            f => return Err(FormatError::BadAddressFamily(f)),
        };
        let port = r.u16("port")?;
        out.push(match ip {
            IpAddr::V4(_) => SocketAddr::new(ip, port),
            IpAddr::V6(v6) => SocketAddr::V6(SocketAddrV6::new(v6, port, 0, 0)),
        });
    }
    Ok(out)
}

fn put_addrs(out: &mut Vec<u8>, addrs: &[SocketAddr]) {
    out.extend_from_slice(&(addrs.len() as u64).to_be_bytes());
    for a in addrs {
        match a.ip() {
            IpAddr::V4(ip) => {
                out.extend_from_slice(&0u32.to_be_bytes());
                out.extend_from_slice(&ip.octets());
            }
            IpAddr::V6(ip) => {
                out.extend_from_slice(&1u32.to_be_bytes());
                out.extend_from_slice(&ip.octets());
            }
        }
        out.extend_from_slice(&a.port().to_be_bytes());
    }
}

fn flags(r: &mut Reader<'_>) -> Result<RelayFlags, FormatError> {
    Ok(RelayFlags::try_from(r.u8("flags")?)?)
}

/// A [`ListedRelay`] in its §6.8 encoding.
fn listed_relay(r: &mut Reader<'_>) -> Result<ListedRelay, FormatError> {
    Ok(ListedRelay {
        identity: RelayId::from_bytes(r.array("added identity")?),
        md_digest: r.array("added md_digest")?,
        addrs: addrs(r)?,
        flags: flags(r)?,
        bandwidth: r.u64("added bandwidth")?,
        measured: match r.u8("added measured")? {
            0 => false,
            1 => true,
            b => return Err(FormatError::BadBool(b)),
        },
    })
}

fn put_listed_relay(out: &mut Vec<u8>, e: &ListedRelay) {
    out.extend_from_slice(e.identity.as_bytes());
    out.extend_from_slice(&e.md_digest);
    put_addrs(out, &e.addrs);
    out.push(e.flags.bits());
    out.extend_from_slice(&e.bandwidth.to_be_bytes());
    out.push(u8::from(e.measured));
}

fn modification(r: &mut Reader<'_>, index: u32) -> Result<Modified, FormatError> {
    let mask = r.u8("field mask")?;
    if mask == 0 || mask & !FIELD_ALL != 0 {
        return Err(FormatError::BadMask(mask));
    }
    let has = |bit: u8| mask & bit != 0;
    let md_digest = has(FIELD_MD_DIGEST)
        .then(|| r.array("md_digest"))
        .transpose()?;
    let addrs = has(FIELD_ADDRS).then(|| addrs(r)).transpose()?;
    let flags = has(FIELD_FLAGS).then(|| flags(r)).transpose()?;
    let bandwidth = match has(FIELD_BANDWIDTH) {
        false => None,
        true => match varint(r, "bandwidth")? {
            b if b > MAX_BANDWIDTH => return Err(FormatError::BandwidthTooHigh(b)),
            b => Some(b),
        },
    };
    Ok(Modified {
        index,
        md_digest,
        addrs,
        flags,
        bandwidth,
        toggle_measured: has(FIELD_MEASURED),
    })
}

fn put_modification(out: &mut Vec<u8>, m: &Modified) {
    out.push(m.mask());
    if let Some(d) = &m.md_digest {
        out.extend_from_slice(d);
    }
    if let Some(a) = &m.addrs {
        put_addrs(out, a);
    }
    if let Some(f) = m.flags {
        out.push(f.bits());
    }
    if let Some(b) = m.bandwidth {
        put_varint(out, b);
    }
}

/// Smallest encodings, bounding counts by the bytes left: an index varint; an index and
/// a mask; an added relay with no address.
const MIN_REMOVED: usize = 1;
const MIN_MODIFIED: usize = 2;
const MIN_ADDED: usize = 32 + 32 + 8 + 1 + 8 + 1;

impl ConsensusDiff {
    /// Parses a diff strictly (see the module comment): the one encoding
    /// [`Self::to_bytes`] gives, bounded, with every structural rule that does not need the
    /// base.
    pub fn parse(bytes: &[u8]) -> Result<Self, FormatError> {
        if bytes.len() > MAX_DIFF_LEN {
            return Err(FormatError::TooLarge(bytes.len()));
        }
        let mut reader = Reader::new(bytes);
        let r = &mut reader;
        let diff_version = r.u32("diff_version")?;
        if diff_version != DIFF_VERSION {
            return Err(FormatError::BadVersion(diff_version));
        }
        let base = r.array("base")?;
        let result = r.array("result")?;
        let version = r.u32("version")?;
        let valid_after = r.u64("valid_after")?;
        let fresh_until = r.u64("fresh_until")?;
        let valid_until = r.u64("valid_until")?;
        let n = list_count(r, MAX_AUTHORITIES, "authority count")?;
        let authorities = (0..n)
            .map(|_| identity(r, "authority"))
            .collect::<Result<Vec<_>, _>>()?;
        let weights = BandwidthWeights {
            wgg: r.u32("wgg")?,
            wgd: r.u32("wgd")?,
            wmg: r.u32("wmg")?,
            wmm: r.u32("wmm")?,
            wme: r.u32("wme")?,
            wmd: r.u32("wmd")?,
            wee: r.u32("wee")?,
            wed: r.u32("wed")?,
        };
        let n = list_count(r, MAX_AUTHORITIES, "signature count")?;
        let signatures = (0..n)
            .map(|_| {
                Ok(AuthoritySignature {
                    identity: r.array("signer")?,
                    signature: r.array("signature")?,
                })
            })
            .collect::<Result<Vec<_>, FormatError>>()?;

        let n = count(r, MAX_RELAYS, MIN_REMOVED, "removed count")?;
        let mut removed = Vec::with_capacity(n);
        indexes(r, n, "removed index", |_, i| {
            removed.push(i);
            Ok(())
        })?;
        let n = count(r, MAX_RELAYS, MIN_MODIFIED, "modified count")?;
        let mut modified = Vec::with_capacity(n);
        let mut gone = removed.iter().peekable();
        indexes(r, n, "modified index", |r, i| {
            while gone.next_if(|&&g| g < i).is_some() {}
            if gone.peek() == Some(&&i) {
                return Err(FormatError::RemovedAndModified(i));
            }
            modified.push(modification(r, i)?);
            Ok(())
        })?;
        let n = count(r, MAX_RELAYS, MIN_ADDED, "added count")?;
        let mut added: Vec<ListedRelay> = Vec::with_capacity(n);
        for _ in 0..n {
            let e = listed_relay(r)?;
            if added.last().is_some_and(|p| p.identity >= e.identity) {
                return Err(FormatError::NotSorted);
            }
            added.push(e);
        }
        reader.finish()?;
        Ok(ConsensusDiff {
            diff_version,
            base,
            result,
            version,
            valid_after,
            fresh_until,
            valid_until,
            authorities,
            weights,
            signatures,
            removed,
            modified,
            added,
        })
    }

    /// The encoding (§6.18). Parses back to `self` when `self` keeps the format's rules
    /// (as every diff [`crate::dir::diff::DiffBase::diff_to`] computes does).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            256 + 4 * self.removed.len() + 8 * self.modified.len() + 110 * self.added.len(),
        );
        out.extend_from_slice(&self.diff_version.to_be_bytes());
        out.extend_from_slice(&self.base);
        out.extend_from_slice(&self.result);
        out.extend_from_slice(&self.version.to_be_bytes());
        for t in [self.valid_after, self.fresh_until, self.valid_until] {
            out.extend_from_slice(&t.to_be_bytes());
        }
        out.extend_from_slice(&(self.authorities.len() as u64).to_be_bytes());
        for a in &self.authorities {
            out.extend_from_slice(a.as_bytes());
        }
        let w = &self.weights;
        for v in [w.wgg, w.wgd, w.wmg, w.wmm, w.wme, w.wmd, w.wee, w.wed] {
            out.extend_from_slice(&v.to_be_bytes());
        }
        out.extend_from_slice(&(self.signatures.len() as u64).to_be_bytes());
        for s in &self.signatures {
            out.extend_from_slice(&s.identity);
            out.extend_from_slice(&s.signature);
        }
        put_varint(&mut out, self.removed.len() as u64);
        put_indexes(&mut out, self.removed.iter().copied());
        put_varint(&mut out, self.modified.len() as u64);
        let mut next = 0u64;
        for m in &self.modified {
            put_varint(&mut out, u64::from(m.index).saturating_sub(next));
            next = u64::from(m.index) + 1;
            put_modification(&mut out, m);
        }
        put_varint(&mut out, self.added.len() as u64);
        for e in &self.added {
            put_listed_relay(&mut out, e);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(bytes: &[u8]) -> Result<u64, FormatError> {
        let mut r = Reader::new(bytes);
        let v = varint(&mut r, "test")?;
        r.finish()?;
        Ok(v)
    }

    #[test]
    fn varints_are_minimal_and_bounded() {
        for v in [0, 1, 127, 128, 300, 16_383, 16_384, 1 << 40, u64::MAX] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert_eq!(read(&out).unwrap(), v, "{v}");
        }
        let mut max = Vec::new();
        put_varint(&mut max, u64::MAX);
        assert_eq!(max.len(), 10);
        // Non-minimal: a trailing zero group.
        assert!(matches!(
            read(&[0x80, 0x00]),
            Err(FormatError::BadVarint(_))
        ));
        assert!(matches!(
            read(&[0x81, 0x00]),
            Err(FormatError::BadVarint(_))
        ));
        // Over 64 bits, or longer than 10 bytes.
        let mut over = vec![0xff; 9];
        over.push(0x02);
        assert!(matches!(read(&over), Err(FormatError::BadVarint(_))));
        assert!(matches!(read(&[0x80; 11]), Err(FormatError::BadVarint(_))));
        assert!(matches!(read(&[0x80]), Err(FormatError::Bytes(_))));
    }

    #[test]
    fn masks_must_name_known_fields() {
        for mask in [0u8, 0x20, 0x80, 0xff] {
            let bytes = [mask, 0, 0, 0];
            let mut r = Reader::new(&bytes);
            assert!(
                matches!(modification(&mut r, 0), Err(FormatError::BadMask(m)) if m == mask),
                "{mask:#x}"
            );
        }
        let mut r = Reader::new(&[FIELD_MEASURED]);
        let m = modification(&mut r, 7).unwrap();
        assert!(m.toggle_measured && m.mask() == FIELD_MEASURED);
        // A bandwidth over the maximum.
        let mut bytes = vec![FIELD_BANDWIDTH];
        put_varint(&mut bytes, MAX_BANDWIDTH + 1);
        assert!(matches!(
            modification(&mut Reader::new(&bytes), 0),
            Err(FormatError::BandwidthTooHigh(_))
        ));
    }

    fn empty() -> ConsensusDiff {
        ConsensusDiff {
            diff_version: DIFF_VERSION,
            base: [1; 32],
            result: [2; 32],
            version: 3,
            valid_after: 10,
            fresh_until: 20,
            valid_until: 30,
            authorities: Vec::new(),
            weights: BandwidthWeights::default(),
            signatures: Vec::new(),
            removed: Vec::new(),
            modified: Vec::new(),
            added: Vec::new(),
        }
    }

    fn toggle(index: u32) -> Modified {
        Modified {
            index,
            md_digest: None,
            addrs: None,
            flags: None,
            bandwidth: None,
            toggle_measured: true,
        }
    }

    /// The structural refusals that need no base, each on an otherwise valid diff.
    #[test]
    fn structural_refusals() {
        let d = ConsensusDiff {
            removed: vec![0, 5, 19_999],
            modified: vec![toggle(1), toggle(6)],
            ..empty()
        };
        let bytes = d.to_bytes();
        assert_eq!(ConsensusDiff::parse(&bytes).unwrap(), d);
        // The relay changes: removed 3 [0, gap 4, gap 19993], modified 2 [1 mask, 4 mask],
        // added 0.
        let tail = [3, 0, 4, 0x99, 0x9c, 0x01, 2, 1, 0x10, 4, 0x10, 0];
        assert!(bytes.ends_with(&tail));
        let head = &bytes[..bytes.len() - tail.len()];
        let with = |t: &[u8]| [head, t].concat();

        let mut v1 = bytes.clone();
        v1[..4].copy_from_slice(&1u32.to_be_bytes());
        assert!(matches!(
            ConsensusDiff::parse(&v1),
            Err(FormatError::BadVersion(1))
        ));
        // An index at MAX_RELAYS.
        assert!(matches!(
            ConsensusDiff::parse(&with(&[1, 0xa0, 0x9c, 0x01, 0, 0])),
            Err(FormatError::IndexOutOfRange(20_000))
        ));
        // Removed and modified.
        assert!(matches!(
            ConsensusDiff::parse(&with(&[1, 5, 1, 5, 0x10, 0])),
            Err(FormatError::RemovedAndModified(5))
        ));
        // A count the remaining bytes cannot hold.
        assert!(matches!(
            ConsensusDiff::parse(&with(&[5, 0, 0, 0])),
            Err(FormatError::Bytes(bytes::Error::LengthOutOfBounds { .. }))
        ));
        // Trailing bytes.
        assert!(matches!(
            ConsensusDiff::parse(&with(&[0, 0, 0, 0])),
            Err(FormatError::Bytes(bytes::Error::TrailingBytes(1)))
        ));
        // Added relays out of order.
        let relay = |n: u8| ListedRelay {
            identity: crate::crypto::IdentityKeypair::from_secret_bytes(&[n; 32])
                .public()
                .into(),
            md_digest: [n; 32],
            addrs: vec![SocketAddr::from(([10, 0, 0, n], 9001))],
            flags: RelayFlags::RUNNING,
            bandwidth: 1,
            measured: false,
        };
        let mut added = vec![relay(1), relay(2)];
        added.sort_by_key(|r| r.identity);
        added.reverse();
        let unsorted = ConsensusDiff { added, ..empty() }.to_bytes();
        assert!(matches!(
            ConsensusDiff::parse(&unsorted),
            Err(FormatError::NotSorted)
        ));
    }
}
