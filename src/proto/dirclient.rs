//! Directory requests over BEGIN_DIR streams: fetch the consensus and microdescriptors,
//! upload a descriptor, exchange votes between authorities.

use std::future::Future;
use std::time::Duration;

use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::clock::Clock;
use crate::crypto::IdentityPublic;
use crate::dir::microdesc::{
    check_response, MicrodescDigest, MicrodescError, MicrodescIndex, MAX_MICRODESCS_PER_REQUEST,
};
use crate::dir::request::{
    parse_header, DirProtoError, DirRequest, DirResponse, DirStatus, DIR_HEADER_LEN,
};
use crate::dir::{Consensus, ConsensusError};

use super::reactor::CircuitHandle;
use super::stream::StreamOpenError;

/// Why a directory request failed.
#[derive(Debug, Error)]
pub enum DirFetchError {
    /// The directory stream could not be opened (the relay serves no directory, or the
    /// circuit failed).
    #[error("cannot open a directory stream: {0}")]
    Open(#[from] StreamOpenError),
    /// The stream failed mid-way.
    #[error("directory stream failed: {0}")]
    Io(#[from] std::io::Error),
    /// The answer was malformed.
    #[error("malformed directory response: {0}")]
    Malformed(#[from] DirProtoError),
    /// No complete answer in time.
    #[error("directory request timed out")]
    Timeout,
    /// The directory server could not be reached (connection, link handshake or circuit).
    #[error("cannot reach the directory server: {0}")]
    Connect(String),
    /// The server answered with a failure status.
    #[error("directory server answered: {0}")]
    Status(String),
    /// The server sent a microdescriptor that does not match what was asked for.
    #[error("bad microdescriptors: {0}")]
    Microdesc(#[from] MicrodescError),
    /// The served consensus does not verify.
    #[error("bad consensus: {0}")]
    Consensus(#[from] ConsensusError),
}

/// Fetches the microdescriptors `wanted` in batches of at most
/// [`MAX_MICRODESCS_PER_REQUEST`] with `ask` (one request → one response), checks each
/// against its digest and adds it to `into`. Stops at the first failure or lying answer
/// (the microdescriptors already checked are kept); digests a server did not have are
/// simply absent from `into`.
pub async fn fetch_microdescs<F, Fut>(
    mut ask: F,
    wanted: &[MicrodescDigest],
    into: &mut MicrodescIndex,
) -> Result<(), DirFetchError>
where
    F: FnMut(DirRequest) -> Fut,
    Fut: Future<Output = Result<DirResponse, DirFetchError>>,
{
    for batch in wanted.chunks(MAX_MICRODESCS_PER_REQUEST) {
        let resp = ask(DirRequest::GetMicrodescs {
            digests: batch.to_vec(),
        })
        .await?;
        if resp.status != DirStatus::Ok {
            return Err(DirFetchError::Status(resp.reason()));
        }
        for (_, md) in check_response(&resp.body, batch)? {
            into.insert(md)?;
        }
    }
    Ok(())
}

/// A one-hop directory circuit to a relay (an authority or a cache) for several requests.
pub struct DirSession {
    chan: std::sync::Arc<super::channel::ClientChannel>,
    handle: CircuitHandle,
    timeout: Duration,
}

impl DirSession {
    /// Connects to the relay at `addr` proving `identity` and builds a one-hop
    /// `allium-fast-1` circuit, each step within `timeout`.
    pub async fn open(
        addr: std::net::SocketAddr,
        identity: &IdentityPublic,
        timeout: Duration,
        clock: &Clock,
    ) -> Result<Self, DirFetchError> {
        let work = async {
            let cfg = crate::link::LinkConfig {
                handshake_timeout: timeout,
                clock: clock.clone(),
                ..crate::link::LinkConfig::default()
            };
            let chan = super::channel::ClientChannel::connect_to(addr, identity, &cfg)
                .await
                .map_err(|e| DirFetchError::Connect(e.to_string()))?;
            match super::circuit::ClientCircuit::create_fast(&chan, *identity, timeout).await {
                Ok(circ) => Ok(DirSession {
                    chan,
                    handle: circ.into_handle(),
                    timeout,
                }),
                Err(e) => {
                    chan.sender.close();
                    Err(DirFetchError::Connect(e.to_string()))
                }
            }
        };
        tokio::time::timeout(timeout, work)
            .await
            .map_err(|_| DirFetchError::Timeout)?
    }

    /// The relay's clock from its NETINFO (Unix seconds).
    pub fn peer_time(&self) -> u64 {
        self.chan.peer_timestamp
    }

    /// One request on a new stream of the circuit.
    pub async fn request(&self, req: &DirRequest) -> Result<DirResponse, DirFetchError> {
        dir_request(&self.handle, req, self.timeout).await
    }

    async fn request_owned(&self, req: DirRequest) -> Result<DirResponse, DirFetchError> {
        self.request(&req).await
    }

    /// Closes the circuit and the channel.
    pub async fn close(self) {
        self.handle.close().await;
        self.chan.sender.close();
    }
}

/// Fetches, verifies (against `trusted` at `clock`'s time) and assembles the consensus a
/// directory relay serves, fetching every microdescriptor not in `have` from it too; the
/// relays whose microdescriptors it did not serve (or served wrong) are left out of the
/// assembled view ([`Consensus::missing_microdescs`]).
/// Returns the consensus and its signed bytes. For caches, tests and the test network;
/// clients use [`crate::client`]'s manager, which also spreads fetches over several caches.
pub async fn fetch_consensus(
    addr: std::net::SocketAddr,
    identity: &IdentityPublic,
    trusted: &[IdentityPublic],
    have: &MicrodescIndex,
    current: Option<&Consensus>,
    timeout: Duration,
    clock: &Clock,
) -> Result<(Consensus, Vec<u8>), DirFetchError> {
    let session = DirSession::open(addr, identity, timeout, clock).await?;
    let result = async {
        // A diff from `current` if the server has one, else the compressed document.
        let fetched = super::dir_fetch::fetch_consensus_from(
            current,
            |r| {
                let session = &session;
                async move { session.request(&r).await.ok() }
            },
            |u| u.verify(trusted, clock.now_unix()),
        )
        .await
        .map_err(DirFetchError::Status)?;
        if let Some(why) = &fetched.refused_diff {
            tracing::warn!("a directory server sent a consensus diff that was refused: {why}");
        }
        let verified = fetched.consensus;
        let bytes = verified.signed().to_bytes().map_err(ConsensusError::from)?;
        let missing = verified.missing(|d| have.contains(d));
        let mut fetched = MicrodescIndex::new();
        if let Err(e) = fetch_microdescs(|r| session.request_owned(r), &missing, &mut fetched).await
        {
            // The consensus is still good: the relays whose microdescriptors did not come
            // are left out (the caller may ask another server for them).
            tracing::debug!("microdescriptor fetch stopped: {e}");
        }
        let consensus = verified.assemble(&[have, &fetched]);
        Ok((consensus, bytes))
    }
    .await;
    session.close().await;
    result
}

/// One directory request to the relay at `addr` proving `identity`, over a fresh channel
/// and a one-hop `allium-fast-1` circuit; everything is closed afterwards. Used to talk to
/// directory authorities (their onion keys are not needed). `clock`: the node's (the link
/// handshake checks certificates against its wall time).
pub async fn one_shot(
    addr: std::net::SocketAddr,
    identity: &crate::crypto::IdentityPublic,
    req: &DirRequest,
    timeout: Duration,
    clock: &crate::clock::Clock,
) -> Result<DirResponse, DirFetchError> {
    one_shot_timed(addr, identity, req, timeout, clock)
        .await
        .map(|(resp, _)| resp)
}

/// [`one_shot`], also returning the server's clock from its NETINFO (Unix seconds), for
/// a client's clock-skew estimate.
pub async fn one_shot_timed(
    addr: std::net::SocketAddr,
    identity: &crate::crypto::IdentityPublic,
    req: &DirRequest,
    timeout: Duration,
    clock: &crate::clock::Clock,
) -> Result<(DirResponse, u64), DirFetchError> {
    let work = async {
        let session = DirSession::open(addr, identity, timeout, clock).await?;
        let resp = session.request(req).await;
        let peer_time = session.peer_time();
        session.close().await;
        resp.map(|r| (r, peer_time))
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| DirFetchError::Timeout)?
}

/// Sends `req` on a new BEGIN_DIR stream of `circ` (to its last hop) and returns the
/// answer. The body is bounded by the protocol's limit and grows only as bytes arrive.
pub async fn dir_request(
    circ: &CircuitHandle,
    req: &DirRequest,
    timeout: Duration,
) -> Result<DirResponse, DirFetchError> {
    let work = async {
        let mut stream = circ.open_dir_stream(timeout).await?;
        // A server may answer (a refusal) before reading the whole request and close its
        // side: read the answer even if our write was cut short.
        let written = async {
            stream.write_all(&req.encode()).await?;
            stream.flush().await
        }
        .await;
        let mut header = [0u8; DIR_HEADER_LEN];
        if let Err(e) = stream.read_exact(&mut header).await {
            return Err(written.err().unwrap_or(e).into());
        }
        let (_, len) = parse_header(&header)?;
        // The body grows as its bytes arrive: a server announcing the largest length and
        // then stalling costs us what it sent, not the length it announced.
        let mut msg = header.to_vec();
        let announced = u64::try_from(len).unwrap_or(u64::MAX);
        (&mut stream).take(announced).read_to_end(&mut msg).await?;
        if msg.len() != DIR_HEADER_LEN + len {
            return Err(DirFetchError::Malformed(DirProtoError::Truncated));
        }
        Ok::<_, DirFetchError>(DirResponse::parse(&msg)?)
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| DirFetchError::Timeout)?
}
