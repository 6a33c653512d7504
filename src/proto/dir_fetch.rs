//! How a client (or a relay caching the directory) gets the next consensus from one
//! directory server (a guard's cache or an authority): a compressed diff from the consensus it has, else, when the server keeps no
//! diff from it or the diff fails to apply or verify, the full compressed consensus
//! (`docs/protocol.md` §6.18). A server that predates compression (BAD_REQUEST) is asked
//! for the plain document.

use std::future::Future;

use crate::dir::compress::decompress;
use crate::dir::consensus::MAX_CONSENSUS_LEN;
use crate::dir::diff::{apply_compressed, body_digest, DiffError};
use crate::dir::request::{DirRequest, DirResponse, DirStatus};
use crate::dir::{Consensus, ConsensusError, UncheckedConsensus};

/// A consensus fetched and verified (`T`: what the caller's check makes of it), and how.
#[derive(Debug)]
pub struct Fetched<T> {
    /// The verified consensus.
    pub consensus: T,
    /// Whether it came as a diff.
    pub via_diff: bool,
    /// Why a diff the server sent was refused, if one was.
    pub refused_diff: Option<String>,
    /// Response bytes received (compressed sizes as transferred).
    pub bytes: usize,
}

/// Fetches the next consensus through `ask` (one request, one answer, `None` if the
/// server could not be asked) and checks it with `verify` (signatures, time, structure).
/// `current`: the verified consensus the client has and still uses, to ask for a diff
/// from; a consensus older than it (by `valid_after`) is refused, so a directory cannot
/// roll the client back to an earlier document the authorities signed (pass `None` when
/// the consensus held is no longer usable, e.g. after the clock jumped back).
pub async fn fetch_consensus_from<A, Fut, V, T>(
    current: Option<&Consensus>,
    mut ask: A,
    verify: V,
) -> Result<Fetched<T>, String>
where
    A: FnMut(DirRequest) -> Fut,
    Fut: Future<Output = Option<DirResponse>>,
    V: Fn(UncheckedConsensus) -> Result<T, ConsensusError>,
{
    let mut bytes = 0usize;
    let mut refused_diff = None;
    if let Some(cur) = current {
        let from = body_digest(cur.signed().body());
        if let Some(resp) = ask(DirRequest::GetConsensusDiff { from }).await {
            bytes = bytes.saturating_add(resp.body.len());
            if resp.status == DirStatus::Ok {
                let applied = apply_compressed(&resp.body, cur.signed().body(), cur.body())
                    .and_then(|u| {
                        if u.claimed_valid_after() < cur.valid_after() {
                            return Err(DiffError::Older);
                        }
                        verify(u).map_err(DiffError::from)
                    });
                match applied {
                    Ok(consensus) => {
                        return Ok(Fetched {
                            consensus,
                            via_diff: true,
                            refused_diff: None,
                            bytes,
                        })
                    }
                    Err(e) => refused_diff = Some(e.to_string()),
                }
            }
        }
    }
    let resp = ask(DirRequest::GetConsensusCompressed)
        .await
        .ok_or("directory server unreachable")?;
    bytes = bytes.saturating_add(resp.body.len());
    let document = match resp.status {
        DirStatus::Ok => decompress(&resp.body, MAX_CONSENSUS_LEN)
            .map_err(|e| format!("compressed consensus refused: {e}"))?,
        DirStatus::BadRequest => {
            let plain = ask(DirRequest::GetConsensus)
                .await
                .ok_or("directory server unreachable")?;
            bytes = bytes.saturating_add(plain.body.len());
            if plain.status != DirStatus::Ok {
                return Err(format!("directory server answered: {}", plain.reason()));
            }
            plain.body
        }
        _ => return Err(format!("directory server answered: {}", resp.reason())),
    };
    let unchecked =
        UncheckedConsensus::parse(&document).map_err(|e| format!("bad consensus: {e}"))?;
    if let Some(cur) = current {
        if unchecked.claimed_valid_after() < cur.valid_after() {
            return Err(format!(
                "the directory served an older consensus (valid after {}) than ours ({})",
                unchecked.claimed_valid_after(),
                cur.valid_after()
            ));
        }
    }
    let consensus = verify(unchecked).map_err(|e| format!("bad consensus: {e}"))?;
    Ok(Fetched {
        consensus,
        via_diff: false,
        refused_diff,
        bytes,
    })
}
