//! What keeps the proxy's clients apart: the key that decides which streams may share a
//! circuit.

use crate::client::socks::SocksAuth;

/// What separates streams that must not share a circuit.
///
/// Two requests may share a circuit only if their keys are equal: they arrived on the same
/// listener and presented the same credentials (or none). `Debug` output redacts the
/// credentials.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct IsolationKey {
    /// Index of the listener the request arrived on (the `listener_index` given to
    /// [`serve_socks`](super::serve_socks) or
    /// [`serve_http_connect`](super::serve_http_connect)).
    pub listener: u16,
    /// The credentials in the request
    /// ([`SocksRequest::isolation_key`](crate::client::socks::SocksRequest::isolation_key)).
    pub auth: SocksAuth,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn isolation_keys_differ_by_listener_and_auth() {
        let a = IsolationKey {
            listener: 0,
            auth: SocksAuth::None,
        };
        let b = IsolationKey {
            listener: 1,
            auth: SocksAuth::None,
        };
        let c = IsolationKey {
            listener: 0,
            auth: SocksAuth::Username {
                user: b"u".to_vec(),
                pass: Vec::new(),
            },
        };
        assert_ne!(a, b);
        assert_ne!(a, c);
        assert_eq!(a, a.clone());
        assert!(!format!("{c:?}").contains("\"u\""));
    }
}
