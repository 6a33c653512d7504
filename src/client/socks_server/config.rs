//! The limits of a proxy listener.

use std::time::Duration;

/// Limits of a proxy listener.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyConfig {
    /// Connections served at once; more are closed on accept. Default 1024.
    pub max_connections: usize,
    /// Time allowed for the whole handshake, from accept to a complete request. Default
    /// 10 s.
    pub handshake_timeout: Duration,
    /// Time allowed for the connector to open the stream. Default 60 s.
    pub connect_timeout: Duration,
    /// An open stream on which no byte moves in either direction for this long is reset
    /// (a circuit can stall without closing, e.g. behind a hung relay); `None`: never.
    /// Default 300 s, the exits' own idle limit.
    pub idle_timeout: Option<Duration>,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            max_connections: 1024,
            handshake_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(60),
            idle_timeout: Some(Duration::from_secs(300)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config() {
        let c = ProxyConfig::default();
        assert_eq!(c.max_connections, 1024);
        assert_eq!(c.handshake_timeout, Duration::from_secs(10));
        assert_eq!(c.connect_timeout, Duration::from_secs(60));
        assert_eq!(c.idle_timeout, Some(Duration::from_secs(300)));
    }
}
