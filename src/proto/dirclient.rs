//! Directory requests over BEGIN_DIR streams: fetch the consensus, upload a descriptor,
//! exchange votes between authorities.

use std::time::Duration;

use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::dir::request::{parse_header, DirProtoError, DirRequest, DirResponse, DIR_HEADER_LEN};

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
        let cfg = crate::link::LinkConfig {
            handshake_timeout: timeout,
            clock: clock.clone(),
            ..crate::link::LinkConfig::default()
        };
        let chan = super::channel::ClientChannel::connect_to(addr, identity, &cfg)
            .await
            .map_err(|e| DirFetchError::Connect(e.to_string()))?;
        let result = async {
            let circ = super::circuit::ClientCircuit::create_fast(&chan, *identity, timeout)
                .await
                .map_err(|e| DirFetchError::Connect(e.to_string()))?;
            let handle = circ.into_handle();
            let resp = dir_request(&handle, req, timeout).await;
            handle.close().await;
            resp
        }
        .await;
        chan.sender.close();
        result.map(|resp| (resp, chan.peer_timestamp))
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| DirFetchError::Timeout)?
}

/// Sends `req` on a new BEGIN_DIR stream of `circ` (to its last hop) and returns the
/// answer. The response body is bounded by the protocol's limit before it is allocated.
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
        let mut msg = header.to_vec();
        msg.resize(DIR_HEADER_LEN + len, 0);
        if let Some(body) = msg.get_mut(DIR_HEADER_LEN..) {
            stream.read_exact(body).await?;
        }
        Ok::<_, DirFetchError>(DirResponse::parse(&msg)?)
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| DirFetchError::Timeout)?
}
