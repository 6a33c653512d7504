//! The authority as a directory service: what BEGIN_DIR streams to an authority reach.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::codec;
use crate::dir::request::{DirRequest, DirResponse, DirStatus};
use crate::sync::lock;

use super::Authority;
use crate::relay::dirserve::DirService;

/// The authority as a directory service (what BEGIN_DIR streams reach).
#[derive(Debug)]
pub(crate) struct AuthorityService(pub Arc<Authority>);

impl DirService for AuthorityService {
    fn handle(
        &self,
        req: DirRequest,
        _ctx: crate::relay::dirserve::DirContext,
    ) -> Pin<Box<dyn Future<Output = DirResponse> + Send + '_>> {
        let auth = &self.0;
        Box::pin(async move {
            match req {
                DirRequest::GetConsensus => match &lock(&auth.state).published {
                    Some((until, bytes)) if *until > auth.now() => DirResponse::ok(bytes.clone()),
                    _ => DirResponse::error(DirStatus::NotFound, "no consensus yet"),
                },
                DirRequest::GetConsensusCompressed | DirRequest::GetConsensusDiff { .. } => {
                    auth.store.answer(&req, auth.now())
                }
                DirRequest::GetVote { valid_after } => {
                    match lock(&auth.state).votes.get(&valid_after) {
                        Some(v) => DirResponse::ok(v.clone()),
                        None => DirResponse::error(DirStatus::NotFound, "no vote for that period"),
                    }
                }
                DirRequest::GetSignature { valid_after } => {
                    let me = *auth.relay.keys.identity().as_bytes();
                    let state = lock(&auth.state);
                    let sig = state
                        .computed
                        .get(&valid_after)
                        .and_then(|s| s.signatures().iter().find(|s| s.identity == me).copied());
                    match sig.map(|s| codec::encode(&s)) {
                        Some(Ok(bytes)) => DirResponse::ok(bytes),
                        _ => {
                            DirResponse::error(DirStatus::NotFound, "no signature for that period")
                        }
                    }
                }
                DirRequest::PostDescriptor(bytes) => auth.on_descriptor(&bytes),
                DirRequest::GetMeasurement { token, len } => auth.measure_tokens.serve(&token, len),
                DirRequest::GetMicrodescs { digests } => auth.answer_microdescs(&digests),
                // Authorities are not onion-service directories (they carry no HSDir role).
                DirRequest::PutOnionDescriptor(_) | DirRequest::GetOnionDescriptor { .. } => {
                    DirResponse::error(DirStatus::Refused, "not an onion-service directory")
                }
            }
        })
    }
}
