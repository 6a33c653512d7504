//! The proxy's side of the circuit manager: the [`Connector`] it opens streams through,
//! and how a failure to open one becomes a reply code.

use std::future::Future;
use std::pin::Pin;

use crate::cell::{EndReason, TargetAddr};
use crate::client::socks::ReplyCode;
use crate::proto::{DataStream, StreamOpenError, UdpFlow};

use super::IsolationKey;

/// Opens streams through the overlay for the proxy; implemented by the circuit manager.
pub trait Connector: Send + Sync + 'static {
    /// Opens a stream to `target:port` on a circuit suitable for `isolation`: streams with
    /// different keys must never share a circuit. `target` may be a hostname; it must be
    /// resolved by the exit, never locally.
    ///
    /// The proxy bounds the returned future by
    /// [`ProxyConfig::connect_timeout`](super::ProxyConfig::connect_timeout) and drops it
    /// when that expires.
    fn connect(
        &self,
        target: TargetAddr,
        port: u16,
        isolation: IsolationKey,
    ) -> Pin<Box<dyn Future<Output = Result<DataStream, StreamOpenError>> + Send + '_>>;

    /// Opens a UDP flow to `target:port` (SOCKS5 UDP ASSOCIATE), under the same isolation
    /// rule as streams; `target` is resolved by the exit.
    fn open_udp(
        &self,
        target: TargetAddr,
        port: u16,
        isolation: IsolationKey,
    ) -> Pin<Box<dyn Future<Output = Result<UdpFlow, StreamOpenError>> + Send + '_>>;
}

/// The reply code reporting a failure to open a stream.
///
/// Exit policy → not allowed by ruleset; name resolution failure or no route → host
/// unreachable; connection refused → connection refused; a timeout at the exit or in the
/// client → TTL expired; no usable consensus → network unreachable; an onion service's
/// client authorisation missing or refused → Tor's extended codes 0xF4 and 0xF5;
/// anything else → general failure.
pub fn reply_code_for(err: &StreamOpenError) -> ReplyCode {
    match err {
        StreamOpenError::Refused(EndReason::ExitPolicy) => ReplyCode::NotAllowed,
        StreamOpenError::Refused(EndReason::ResolveFailed | EndReason::NoRoute) => {
            ReplyCode::HostUnreachable
        }
        StreamOpenError::Refused(EndReason::ConnectRefused) => ReplyCode::ConnectionRefused,
        StreamOpenError::Refused(EndReason::Timeout) | StreamOpenError::Timeout => {
            ReplyCode::TtlExpired
        }
        // The whole network is out of reach until a live consensus is fetched.
        StreamOpenError::NoConsensus => ReplyCode::NetworkUnreachable,
        StreamOpenError::OnionAuthMissing => ReplyCode::OnionAuthMissing,
        StreamOpenError::OnionAuthRejected => ReplyCode::OnionAuthRejected,
        StreamOpenError::Refused(_)
        | StreamOpenError::CircuitClosed
        | StreamOpenError::TooManyStreams => ReplyCode::GeneralFailure,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::socks::reply;

    #[test]
    fn reply_codes() {
        use EndReason as R;
        use StreamOpenError as E;
        let cases = [
            (E::Refused(R::ExitPolicy), ReplyCode::NotAllowed),
            (E::Refused(R::ResolveFailed), ReplyCode::HostUnreachable),
            (E::Refused(R::NoRoute), ReplyCode::HostUnreachable),
            (E::Refused(R::ConnectRefused), ReplyCode::ConnectionRefused),
            (E::Refused(R::Timeout), ReplyCode::TtlExpired),
            (E::Timeout, ReplyCode::TtlExpired),
            (E::Refused(R::Misc), ReplyCode::GeneralFailure),
            (E::Refused(R::Destroyed), ReplyCode::GeneralFailure),
            (E::Refused(R::Done), ReplyCode::GeneralFailure),
            (E::Refused(R::Internal), ReplyCode::GeneralFailure),
            (E::Refused(R::ResourceLimit), ReplyCode::GeneralFailure),
            (E::Refused(R::ConnectionReset), ReplyCode::GeneralFailure),
            (E::Refused(R::Protocol), ReplyCode::GeneralFailure),
            (E::Refused(R::NotDirectory), ReplyCode::GeneralFailure),
            (E::CircuitClosed, ReplyCode::GeneralFailure),
            (E::TooManyStreams, ReplyCode::GeneralFailure),
            (E::NoConsensus, ReplyCode::NetworkUnreachable),
            (E::OnionAuthMissing, ReplyCode::OnionAuthMissing),
            (E::OnionAuthRejected, ReplyCode::OnionAuthRejected),
        ];
        for (err, code) in cases {
            assert_eq!(reply_code_for(&err), code, "{err:?}");
        }
    }

    #[test]
    fn socks5_reply_bytes_for_failures() {
        let r = reply(
            crate::client::socks::SocksVersion::V5,
            reply_code_for(&StreamOpenError::Refused(EndReason::ExitPolicy)),
            None,
        );
        assert_eq!(r, [5, 2, 0, 1, 0, 0, 0, 0, 0, 0]);
        // Client authorisation: Tor's extended codes, which Tor Browser acts on.
        for (e, code) in [
            (StreamOpenError::OnionAuthMissing, 0xF4),
            (StreamOpenError::OnionAuthRejected, 0xF5),
        ] {
            let rc = reply_code_for(&e);
            assert_eq!(rc.socks5_code(), code);
            assert_eq!(ReplyCode::from_socks5_code(code), Some(rc));
            assert_eq!(rc.http_status().0, 403);
            assert_eq!(rc.socks4_code(), 0x5B);
        }
    }
}
