//! Serving directory requests on BEGIN_DIR streams.
//!
//! A relay with a directory role (an authority, or a relay caching the consensus) answers
//! one [`DirRequest`] per stream. The stream is in-process: one end is pumped to the
//! circuit like an exit socket, the other is read here.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

use crate::crypto::IdentityPublic;
use crate::dir::request::{parse_header, DirRequest, DirResponse, DirStatus, DIR_HEADER_LEN};

use super::rate_limit::TokenBucket;

/// Time a client has to send its whole request (slow clients are cut off).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// State a directory service keeps per circuit: it lives as long as the circuit (and
/// its requests in flight), so it needs no table of its own and no eviction.
#[derive(Debug, Default)]
pub struct CircuitDirState {
    uploads: OnceLock<TokenBucket>,
}

impl CircuitDirState {
    /// The circuit's descriptor-upload budget, created on first use with `rate` per
    /// second and `burst` (later calls return the same bucket whatever they pass).
    pub fn upload_bucket(&self, rate: u32, burst: u32) -> &TokenBucket {
        self.uploads.get_or_init(|| TokenBucket::new(rate, burst))
    }
}

/// Who is answering and on which circuit the request came: what a service needs beyond
/// the request itself (the HSDir role checks the ring against this relay's identity and
/// charges uploads to the circuit).
#[derive(Debug, Clone)]
pub struct DirContext {
    /// This relay's identity.
    pub identity: IdentityPublic,
    /// The requesting circuit's state (shared by every BEGIN_DIR stream of the circuit).
    pub circuit: Arc<CircuitDirState>,
}

impl DirContext {
    /// A context for relay `identity` and a circuit of its own (tests; one-off calls).
    pub fn new(identity: IdentityPublic) -> Self {
        DirContext {
            identity,
            circuit: Arc::new(CircuitDirState::default()),
        }
    }
}

/// Something that answers directory requests.
pub trait DirService: Send + Sync + std::fmt::Debug + 'static {
    /// Answers one request that came on the circuit and relay described by `ctx`.
    fn handle(
        &self,
        req: DirRequest,
        ctx: DirContext,
    ) -> Pin<Box<dyn Future<Output = DirResponse> + Send + '_>>;
}

/// Reads one request from `io`, answers it with `service`, and closes the stream.
pub async fn serve(service: Arc<dyn DirService>, ctx: DirContext, mut io: DuplexStream) {
    let response = match tokio::time::timeout(REQUEST_TIMEOUT, read_request(&mut io)).await {
        Ok(Ok(req)) => service.handle(req, ctx).await,
        Ok(Err(reason)) => DirResponse::error(DirStatus::BadRequest, reason),
        Err(_) => DirResponse::error(DirStatus::BadRequest, "request timed out"),
    };
    let _ = io.write_all(&response.encode()).await;
    let _ = io.shutdown().await;
}

async fn read_request(io: &mut DuplexStream) -> Result<DirRequest, &'static str> {
    let mut header = [0u8; DIR_HEADER_LEN];
    io.read_exact(&mut header)
        .await
        .map_err(|_| "truncated request")?;
    let (kind, len) = parse_header(&header).map_err(|_| "request too large")?;
    // Bound by what the kind can legitimately carry, before allocating anything: only
    // descriptor uploads and microdescriptor requests have a real body.
    let max = match kind {
        2 => crate::dir::descriptor::MAX_DESCRIPTOR_LEN,
        5 => crate::onion::descriptor::MAX_ONION_DESCRIPTOR_LEN,
        6 => 32,
        7 => crate::dir::request::MEASUREMENT_REQUEST_LEN,
        10 => crate::dir::request::MICRODESC_REQUEST_MAX_LEN,
        9 => 32,
        _ => 8,
    };
    if len > max {
        return Err("request body too large for its kind");
    }
    // The bound was checked before this allocation.
    let mut msg = header.to_vec();
    msg.resize(DIR_HEADER_LEN + len, 0);
    let body = msg.get_mut(DIR_HEADER_LEN..).ok_or("truncated request")?;
    io.read_exact(body).await.map_err(|_| "truncated request")?;
    DirRequest::parse(&msg).map_err(|_| "malformed request")
}
