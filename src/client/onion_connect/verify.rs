//! Checking a fetched descriptor on the client, with the client's authorisation key for
//! the service if it has one, and saying why it cannot be used.

use crate::onion::descriptor::{InnerDescriptor, OnionDescriptorError, UncheckedOnionDescriptor};
use crate::onion::{BlindedPublic, ClientAuthSecret, OnionAddress, PeriodParams};

use super::{OnionConnectError, DESCRIPTOR_SKEW};

/// Verifies descriptor bytes fetched for `address` (protocol.md §8.4, client side):
/// signature, times (with [`DESCRIPTOR_SKEW`]), revision ≥ `min_revision`, period, blinded
/// key of this address, decryption and the inner rules. Returns the contents, the blinded
/// key, the revision and the expiry time.
pub fn verify_descriptor(
    bytes: &[u8],
    address: &OnionAddress,
    periods: &PeriodParams,
    now: u64,
    min_revision: u64,
) -> Result<(InnerDescriptor, BlindedPublic, u64, u64), OnionConnectError> {
    verify_descriptor_with(bytes, address, None, periods, now, min_revision)
}

/// [`verify_descriptor`] decrypting with `key`, the client's authorisation key for this
/// service (protocol.md §8.4.1), if it has one.
pub fn verify_descriptor_with(
    bytes: &[u8],
    address: &OnionAddress,
    key: Option<&ClientAuthSecret>,
    periods: &PeriodParams,
    now: u64,
    min_revision: u64,
) -> Result<(InnerDescriptor, BlindedPublic, u64, u64), OnionConnectError> {
    let (verified, inner) = UncheckedOnionDescriptor::parse(bytes)
        .and_then(|d| {
            d.verify_for_client(address, key, periods, now, DESCRIPTOR_SKEW, min_revision)
        })
        .map_err(descriptor_error)?;
    let body = verified.body();
    Ok((inner, body.blinded_key, body.revision, body.expires()))
}

/// The user-facing error for a descriptor that cannot be used: client authorisation
/// failures are told apart (the user must act: configure or replace a key).
fn descriptor_error(e: OnionDescriptorError) -> OnionConnectError {
    match e {
        OnionDescriptorError::AuthRequired => OnionConnectError::ClientAuthMissing,
        OnionDescriptorError::AuthNotAccepted => OnionConnectError::ClientAuthRejected,
        e => OnionConnectError::NoDescriptor(e.to_string()),
    }
}
