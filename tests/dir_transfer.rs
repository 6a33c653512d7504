//! Directory transfer at scale, attacked (`docs/protocol.md` §6.18): a decompression bomb
//! is refused with bounded memory; a directory cache serving a diff that rebuilds another
//! document than the authorities signed is refused, and the client recovers with a full
//! fetch. Real TCP on 127.0.0.1, relays in-process.

#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(clippy::panic, clippy::indexing_slicing)]

mod common;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use allium::clock::Clock;
use allium::dir::compress::{compress, decompress, DecompressError};
use allium::dir::consensus::MAX_CONSENSUS_LEN;
use allium::dir::diff::{body_digest, ConsensusDiff};
use allium::dir::request::{DirRequest, DirResponse, DirStatus};
use allium::dir::{AuthorityInfo, Consensus, RelayFlags};
use allium::proto::dir_fetch::{fetch_consensus_from, Fetched};
use allium::proto::dirclient::one_shot;
use allium::relay::dircache::DirCache;
use allium::relay::dirserve::{DirContext, DirService};
use allium::relay::{RelayHandle, RelayLimits};
use common::dir::*;
use common::NO_HANG;

/// Peak resident memory of this process (VmHWM), bytes.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap();
    kb * 1024
}

/// 1 GiB of zeros compressed to about a megabyte is refused at the consensus bound: the
/// output buffer never grows past the bound and the process's peak memory does not move
/// by more than a few bound-sized buffers.
#[test]
fn a_decompression_bomb_is_refused_with_bounded_memory() {
    use flate2::{Compress, Compression, FlushCompress};
    // Deflates `input` completely with `flush`, returning what came out.
    let deflate = |c: &mut Compress, input: &[u8], flush: FlushCompress| {
        let mut out = Vec::with_capacity(64 << 10);
        let start = c.total_in();
        loop {
            out.reserve(64 << 10);
            let off = (c.total_in() - start) as usize;
            let status = c.compress_vec(&input[off..], &mut out, flush).unwrap();
            let done = (c.total_in() - start) as usize == input.len();
            if status == flate2::Status::StreamEnd
                || (done && out.capacity() > out.len() && flush != FlushCompress::Finish)
            {
                return out;
            }
        }
    };
    // A full flush makes each 1 MiB segment independent of what came before, so one
    // segment repeated 1,023 times after the first inflates to 1 GiB of zeros: the bomb is
    // built in milliseconds and the 1 GiB is never held.
    let mib = vec![0u8; 1 << 20];
    let mut c = Compress::new(Compression::best(), true);
    let head = deflate(&mut c, &mib, FlushCompress::Full);
    let segment = deflate(&mut c, &mib, FlushCompress::Full);
    let tail = deflate(&mut c, &[], FlushCompress::Finish);
    // The two-segment stream is valid as compressed (Adler-32 of 2 MiB).
    let small = [head.clone(), segment.clone(), tail.clone()].concat();
    assert_eq!(decompress(&small, 2 << 20).unwrap(), vec![0u8; 2 << 20]);
    // The bomb: 1,024 segments, the Adler-32 of 1 GiB of zeros (a = 1, b = n mod 65521).
    let mut bomb = head;
    for _ in 1..1024 {
        bomb.extend_from_slice(&segment);
    }
    bomb.extend_from_slice(&tail[..tail.len() - 4]);
    let b = ((1u64 << 30) % 65521) as u32;
    bomb.extend_from_slice(&((b << 16) | 1).to_be_bytes());
    eprintln!("bomb: 1 GiB of zeros in {} compressed bytes", bomb.len());
    assert!(bomb.len() < 2 << 20);

    // Reset the peak (Linux: writing 5 to clear_refs), then decompress.
    std::fs::write("/proc/self/clear_refs", "5").unwrap();
    let before = peak_rss();
    let refused = decompress(&bomb, MAX_CONSENSUS_LEN);
    let after = peak_rss();
    match refused {
        Err(DecompressError::TooLarge {
            bound,
            buffer_capacity,
        }) => {
            assert_eq!(bound, MAX_CONSENSUS_LEN);
            assert!(buffer_capacity <= bound);
        }
        other => panic!("a bomb must be refused as too large, got {other:?}"),
    }
    eprintln!(
        "peak RSS {} MiB before, {} MiB after refusing the bomb (bound {} MiB)",
        before >> 20,
        after >> 20,
        MAX_CONSENSUS_LEN >> 20
    );
    assert!(
        after < before + 3 * MAX_CONSENSUS_LEN as u64,
        "peak RSS grew from {before} to {after}"
    );
}

/// How the tampering cache lies about diffs.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Lie {
    /// Serve the diff honestly.
    None,
    /// Flip a relay's flag in the diff, keeping the announced result digest.
    FlipFlag,
    /// Flip a relay's flag and announce the digest of the document that produces (which
    /// the authorities never signed).
    FlipFlagAndDigest,
    /// Name a base entry past the base's last one (removing it).
    IndexOutOfRange,
    /// Add (again, changed) a relay the base lists and the diff neither removes nor modifies.
    AddListed,
}

/// A directory cache run by the attacker: it holds the real consensuses (it is a relay
/// with its own keys, fed the authorities' documents) and rewrites the diffs it serves.
#[derive(Debug)]
struct TamperingCache {
    inner: Arc<DirCache>,
    /// The consensus the client has (the attacker can know it: it is public).
    base: Consensus,
    /// The consensus the honest diff leads to.
    next: Consensus,
    lie: Lie,
    diffs: AtomicUsize,
    fulls: AtomicUsize,
}

impl TamperingCache {
    /// The digest of `next`'s body with `relays` instead of its relays.
    fn digest_with(&self, relays: Vec<allium::dir::consensus::ListedRelay>) -> [u8; 32] {
        let mut body = self.next.body().clone();
        body.relays = relays;
        body.relays.sort_by_key(|r| r.identity);
        body_digest(body.to_signed().unwrap().body())
    }

    /// The honest diff rewritten as `self.lie` says.
    fn forge(&self, diff: &mut ConsensusDiff) {
        match self.lie {
            Lie::None => {}
            Lie::FlipFlag | Lie::FlipFlagAndDigest => {
                let m = &mut diff.modified[0];
                let flags = m
                    .flags
                    .get_or_insert(self.base.body().relays[m.index as usize].flags);
                let bad = flags.contains(RelayFlags::BAD_EXIT);
                flags.set(RelayFlags::BAD_EXIT, !bad);
                if self.lie == Lie::FlipFlagAndDigest {
                    // The attacker knows both documents: announce the forged body's digest.
                    let id = self.base.body().relays[m.index as usize].identity;
                    let mut relays = self.next.body().relays.clone();
                    let e = relays.iter_mut().find(|r| r.identity == id).unwrap();
                    e.flags.set(RelayFlags::BAD_EXIT, !bad);
                    diff.result = self.digest_with(relays);
                }
            }
            Lie::IndexOutOfRange => {
                diff.removed.push(self.base.body().relays.len() as u32);
            }
            Lie::AddListed => {
                let kept = (0..self.base.body().relays.len() as u32)
                    .find(|i| {
                        !diff.removed.contains(i) && !diff.modified.iter().any(|m| m.index == *i)
                    })
                    .unwrap();
                let mut dup = self.base.body().relays[kept as usize].clone();
                dup.bandwidth += 1;
                diff.added.push(dup);
                diff.added.sort_by_key(|r| r.identity);
            }
        }
    }
}

impl DirService for TamperingCache {
    fn handle(
        &self,
        req: DirRequest,
        ctx: DirContext,
    ) -> Pin<Box<dyn Future<Output = DirResponse> + Send + '_>> {
        Box::pin(async move {
            let resp = self.inner.handle(req.clone(), ctx).await;
            match req {
                DirRequest::GetConsensusDiff { .. } if resp.status == DirStatus::Ok => {
                    self.diffs.fetch_add(1, Ordering::SeqCst);
                    if self.lie == Lie::None {
                        return resp;
                    }
                    let bytes = decompress(&resp.body, MAX_CONSENSUS_LEN).unwrap();
                    let mut diff = ConsensusDiff::parse(&bytes).unwrap();
                    self.forge(&mut diff);
                    DirResponse::ok(compress(&diff.to_bytes()).unwrap())
                }
                DirRequest::GetConsensusCompressed => {
                    self.fulls.fetch_add(1, Ordering::SeqCst);
                    resp
                }
                _ => resp,
            }
        })
    }
}

/// A relay serving `lie`, whose cache (on a clock at the fixtures' time) has been fed
/// period 1 and then period 2 by the authorities.
async fn relay_with_cache(
    lie: Lie,
    a: &Consensus,
    b: &Consensus,
) -> (RelayHandle, Arc<TamperingCache>) {
    let relay = common::start_relay_with(RelayLimits::default(), None).await;
    let unused = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let clock = Clock::simulated(SystemTime::UNIX_EPOCH + Duration::from_secs(NOW));
    let auths = authorities(3);
    let cache = DirCache::start(
        auths
            .iter()
            .map(|k| AuthorityInfo {
                identity: k.public(),
                addr: unused,
            })
            .collect(),
        clock,
    );
    cache
        .offer_consensus(a.signed().to_bytes().unwrap(), &a.microdescs())
        .unwrap();
    cache
        .offer_consensus(b.signed().to_bytes().unwrap(), &b.microdescs())
        .unwrap();
    let service = Arc::new(TamperingCache {
        inner: cache,
        base: a.clone(),
        next: b.clone(),
        lie,
        diffs: AtomicUsize::new(0),
        fulls: AtomicUsize::new(0),
    });
    relay.set_dir_service(service.clone());
    (relay, service)
}

/// The client's fetch (the code `DirMgr` runs against a guard or an authority) from
/// `relay`, having `current`, verifying at the fixtures' time.
async fn fetch(
    relay: &RelayHandle,
    current: Option<&Consensus>,
) -> Fetched<allium::dir::VerifiedConsensus> {
    let (addr, id) = (relay.local_addr(), relay.identity());
    let trusted = publics(&authorities(3));
    fetch_consensus_from(
        current,
        |req| async move {
            one_shot(addr, &id, &req, NO_HANG, &Clock::system())
                .await
                .ok()
        },
        |u| u.verify(&trusted, NOW + 60),
    )
    .await
    .unwrap()
}

fn two_periods() -> (Consensus, Consensus) {
    let (a, auths) = synthetic_consensus(30);
    let b = next_period(&a, &auths, &[3, 17], &[0, 5, 9], &[1_000_000_001]);
    (a, b)
}

/// An honest cache: the client follows by diff, and a client whose consensus the cache
/// does not keep gets NOT_FOUND for its diff and fetches the full compressed document.
#[tokio::test]
async fn an_honest_cache_serves_diffs_and_full_documents() {
    let (a, b) = two_periods();
    let (relay, cache) = relay_with_cache(Lie::None, &a, &b).await;
    let got = fetch(&relay, Some(&a)).await;
    assert!(got.via_diff);
    assert_eq!(got.consensus.signed(), b.signed());
    eprintln!(
        "diff: {} bytes transferred for a {}-byte consensus",
        got.bytes,
        b.signed().to_bytes().unwrap().len()
    );

    let (unknown, auths) = synthetic_consensus(12);
    let unknown = next_period(&unknown, &auths, &[], &[], &[]);
    let got = fetch(&relay, Some(&unknown)).await;
    assert!(!got.via_diff);
    assert!(got.refused_diff.is_none());
    assert_eq!(got.consensus.signed(), b.signed());
    let got = fetch(&relay, None).await;
    assert_eq!(got.consensus.signed(), b.signed());
    assert_eq!(cache.diffs.load(Ordering::SeqCst), 1);
    assert_eq!(cache.fulls.load(Ordering::SeqCst), 2);
    tokio::time::timeout(Duration::from_secs(10), relay.shutdown())
        .await
        .unwrap();
}

/// Attacker test: the cache rewrites the diff so it rebuilds a document with a relay's
/// flag flipped, either keeping the real result digest or announcing the forged
/// document's, or so it names a base entry past the base's end, or adds a relay the base
/// already lists. All are refused (wrong result; signatures not over that body; index out
/// of range; already listed) and the client ends with the authorities' real consensus
/// from a full fetch.
#[tokio::test]
async fn a_cache_serving_a_forged_diff_is_refused_and_the_client_recovers() {
    let (a, b) = two_periods();
    for lie in [
        Lie::FlipFlag,
        Lie::FlipFlagAndDigest,
        Lie::IndexOutOfRange,
        Lie::AddListed,
    ] {
        let (relay, cache) = relay_with_cache(lie, &a, &b).await;
        let got = fetch(&relay, Some(&a)).await;
        let why = got
            .refused_diff
            .clone()
            .expect("the forged diff must be refused");
        eprintln!("{lie:?}: refused: {why}");
        let expected = match lie {
            Lie::IndexOutOfRange => "names base entry",
            Lie::AddListed => "already lists",
            // The real digest announced: the forged body does not hash to it.
            Lie::FlipFlag => "does not produce the announced document",
            // The forged body's digest announced: the authorities never signed that body.
            Lie::FlipFlagAndDigest => "valid signatures from",
            Lie::None => unreachable!("an honest diff is not among the lies"),
        };
        assert!(
            why.contains(expected),
            "{lie:?} refused for another reason: {why}"
        );
        assert!(!got.via_diff);
        assert_eq!(got.consensus.signed(), b.signed());
        assert_eq!(
            body_digest(got.consensus.signed().body()),
            body_digest(b.signed().body())
        );
        assert_eq!(cache.diffs.load(Ordering::SeqCst), 1);
        assert_eq!(cache.fulls.load(Ordering::SeqCst), 1);
        tokio::time::timeout(Duration::from_secs(10), relay.shutdown())
            .await
            .unwrap();
    }
}

/// Attacker test: a directory (a cache run by the attacker, or a lagging authority) holding
/// only an older consensus, validly signed and still in its time window, serves it to a
/// client that has a newer one: refused (the client asks the next directory), whether it
/// comes whole or as a diff. And a cache offered an older consensus than the one it serves
/// keeps the newer one (its microdescriptors and hash ring are not rolled back).
#[tokio::test]
async fn an_older_consensus_is_refused_and_a_cache_is_not_rolled_back() {
    let (a, b) = two_periods();
    // Offered `a` twice: the cache knows nothing newer.
    let (relay, cache) = relay_with_cache(Lie::None, &a, &a).await;
    let (addr, id) = (relay.local_addr(), relay.identity());
    let trusted = publics(&authorities(3));
    let refused = fetch_consensus_from(
        Some(&b),
        |req| async move {
            one_shot(addr, &id, &req, NO_HANG, &Clock::system())
                .await
                .ok()
        },
        |u| u.verify(&trusted, NOW + 60),
    )
    .await
    .expect_err("an older consensus must be refused");
    eprintln!("refused: {refused}");
    assert!(refused.contains("older"), "{refused}");
    assert_eq!(cache.fulls.load(Ordering::SeqCst), 1);

    // The diff path: a diff from `b` whose result is `a` (the attacker can build one: both
    // documents are public) is refused before the signatures are checked.
    let (a_body, b_body) = (a.body().clone(), b.body().clone());
    let back = ConsensusDiff::between(b.signed(), &b_body, a.signed(), &a_body).unwrap();
    let z = compress(&back.to_bytes()).unwrap();
    let applied = allium::dir::diff::apply_compressed(&z, b.signed().body(), b.body())
        .unwrap()
        .claimed_valid_after();
    assert!(
        applied < b.valid_after(),
        "the diff does rebuild the older body"
    );
    let lying = fetch_consensus_from(
        Some(&b),
        |req| {
            let z = z.clone();
            async move {
                match req {
                    DirRequest::GetConsensusDiff { .. } => Some(DirResponse::ok(z)),
                    _ => Some(DirResponse::error(DirStatus::NotFound, "none")),
                }
            }
        },
        |u| u.verify(&trusted, NOW + 60),
    )
    .await
    .expect_err("nothing newer was served");
    eprintln!("diff to an older consensus: {lying}");

    // A cache offered `b`, then `a` (a lagging authority): keeps serving `b`.
    let served = cache
        .inner
        .offer_consensus(b.signed().to_bytes().unwrap(), &b.microdescs())
        .unwrap();
    assert_eq!(served.valid_after(), b.valid_after());
    let after = cache
        .inner
        .offer_consensus(a.signed().to_bytes().unwrap(), &a.microdescs())
        .unwrap();
    assert_eq!(after.valid_after(), b.valid_after());
    tokio::time::timeout(Duration::from_secs(10), relay.shutdown())
        .await
        .unwrap();
}
