//! The exit's side of UDP flows: the UDP policy (separate from the TCP one; an exit with
//! none refuses every flow) and opening the connected socket a flow sends from.
//!
//! The socket is connected to the one destination address the policy allowed, so the
//! kernel drops datagrams from anyone else: a flow's port at the exit is no open relay
//! for strangers who guess it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use tokio::net::UdpSocket;
use tokio::sync::OwnedSemaphorePermit;

use crate::cell::{EndReason, TargetAddr};

use super::exit::ExitConfig;

/// A flow's socket, ready: connected to `addr`, holding its share of the flow limit.
#[derive(Debug)]
pub struct OpenedFlow {
    /// Connected to the destination.
    pub socket: UdpSocket,
    /// The destination address the policy allowed.
    pub addr: SocketAddr,
    /// The flow's share of the relay's `udp_flows` limit.
    pub permit: OwnedSemaphorePermit,
}

impl ExitConfig {
    /// Resolves `target`, checks the UDP policy on the result, and opens a socket
    /// connected to the first allowed address.
    pub async fn open_udp(
        &self,
        target: &TargetAddr,
        port: u16,
    ) -> Result<(UdpSocket, SocketAddr), EndReason> {
        let addrs = self.allowed_udp_addrs(target, port).await?;
        let mut last = EndReason::NoRoute;
        for addr in addrs {
            let local: SocketAddr = match addr.ip() {
                IpAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
                IpAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
            };
            let socket = match UdpSocket::bind(local).await {
                Ok(s) => s,
                Err(_) => {
                    last = EndReason::ResourceLimit;
                    continue;
                }
            };
            match socket.connect(addr).await {
                Ok(()) if super::exit::is_own_address(socket.local_addr().ok(), addr) => {
                    last = EndReason::ExitPolicy;
                }
                Ok(()) => return Ok((socket, addr)),
                Err(_) => last = EndReason::NoRoute,
            }
        }
        Err(last)
    }
}
