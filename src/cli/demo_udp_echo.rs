//! A UDP echo server for the test network, so UDP ASSOCIATE and onion-service UDP ports
//! have something to talk to: every datagram (up to 1,472 bytes) goes back to its sender.

use std::net::SocketAddr;

use tokio::net::UdpSocket;

/// Starts the echo server on `addr` (port 0: any); returns where it listens.
pub async fn start_on(addr: SocketAddr) -> std::io::Result<SocketAddr> {
    let sock = UdpSocket::bind(addr).await?;
    let local = sock.local_addr()?;
    tokio::spawn(async move {
        // One byte over the largest datagram a flow carries: a longer one is not echoed.
        let mut buf = vec![0u8; crate::cell::datagram::MAX_DATAGRAM_LEN + 1];
        loop {
            match sock.recv_from(&mut buf).await {
                Ok((n, from)) => {
                    if let Some(d) = buf.get(..n).filter(|_| n < buf.len()) {
                        let _ = sock.send_to(d, from).await;
                    }
                }
                // ICMP errors from earlier sends surface here; the server goes on.
                Err(_) => tokio::task::yield_now().await,
            }
        }
    });
    Ok(local)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn echoes_and_ignores_oversized() {
        let echo = start_on("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let c = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        c.send_to(&[9u8; 1473], echo).await.unwrap();
        c.send_to(b"ping", echo).await.unwrap();
        let mut b = [0u8; 2048];
        let (n, from) = c.recv_from(&mut b).await.unwrap();
        assert_eq!((&b[..n], from), (&b"ping"[..], echo));
    }
}
