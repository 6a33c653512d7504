//! How clients and relays name a directory authority: its identity and address (the
//! `[[authority]]` entries of every config file).

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::crypto::IdentityPublic;

/// A directory authority as clients and relays know it: identity and address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthorityInfo {
    /// The authority's identity key (hex).
    #[serde(with = "identity_hex")]
    pub identity: IdentityPublic,
    /// Its link address.
    pub addr: SocketAddr,
}

mod identity_hex {
    use crate::crypto::IdentityPublic;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(id: &IdentityPublic, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(id)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<IdentityPublic, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}
